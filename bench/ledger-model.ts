/**
 * A model of the command path, for model-based property tests (fast-check `commands`): random
 * interleavings of propose, revise, approve, reject, supersede, rollback, claim and release, each sent to
 * one of several real command-service instances (each with its own, possibly stale, cache) over one real
 * stream, keyed as the SDK keys every write. After every command its outcome (accepted with which
 * version / holder, or refused with which code) must be what the model predicts; a retry of the last
 * accepted command (same key, any instance) must be a replay of it, and its key reused for another
 * request a conflict naming the key; after every run the aggregates folded from the log by the deciders
 * must equal the model, with exactly one event per accepted command.
 *
 * The model is written from the rules as the README states them, not from the deciders: it is the
 * second opinion the deciders are checked against. Shared by test/ledger/model.int.spec.ts (CI) and
 * `npm run bench -- property` (many more runs).
 */
import { deepStrictEqual, strictEqual } from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { fold } from "../commands/decider.js";
import { claimDecider, claimIdOf } from "../commands/claim.js";
import { memoryDecider } from "../commands/memory.js";
import type { ClaimEvent, MemoryEvent } from "../schemas/events.js";
import { MemledgerError } from "../schemas/errors.js";
import type { CommandService } from "../services/command-service.js";

export type VersionStatus = "proposed" | "approved" | "rejected";

/** What the model knows about the one memory and the one task of a run. */
export interface LedgerModel {
  memory: { exists: boolean; versions: VersionStatus[]; active: number | null; superseded: boolean };
  task: { exists: boolean; holder: string | null; done: boolean };
}

/** The real system of one run: instances over one prefix, and the ids this run alone uses. */
export interface LedgerSystem {
  instances: readonly CommandService[];
  app: string;
  memoryId: string;
  task: string;
  /** Commands sent, refusals among them (for the report). */
  stats: { commands: number; refused: number };
  /** Commands of this run that were accepted, per aggregate: each must be exactly one event in the log. */
  accepted: { memory: number; task: number };
  /** The last accepted command, as sent (with its idempotency key), and what it answered. */
  last: SentCommand | null;
}

interface SentCommand {
  actor: string;
  verb: string;
  payload: Record<string, unknown> & { key: string };
  result: Record<string, unknown>;
}

const AGENTS = ["x", "y"] as const;
const REVIEWER = "rita";

type Outcome = { ok: true; result: Record<string, unknown> } | { ok: false; code: string; reason: unknown; details: Record<string, unknown> };
type Expected = { ok: true; fields: Record<string, unknown> } | { ok: false; code: "conflict" | "not_found" };

const subjectOf = (service: CommandService, app: string, actorKind: string, actorId: string, verb: string) =>
  service.names.command(app, actorKind as "agent", actorId, verb);

const encoder = new TextEncoder();

let keys = 0;

/** Sends one command to one instance, keyed as the SDK keys every write; remembers it if accepted. */
async function send(system: LedgerSystem, instance: number, actor: string, verb: string, fields: object, key = `k${keys++}`): Promise<Outcome> {
  const payload = { ...fields, key };
  const outcome = await sendRaw(system, instance, actor, verb, payload);
  if (outcome.ok) system.last = { actor, verb, payload, result: outcome.result };
  return outcome;
}

async function sendRaw(system: LedgerSystem, instance: number, actor: string, verb: string, payload: object): Promise<Outcome> {
  const service = system.instances[instance]!;
  const [kind, id] = actor.includes(":") ? actor.split(":", 2) as [string, string] : ["agent", actor];
  system.stats.commands++;
  try {
    const result = (await service.dispatch(subjectOf(service, system.app, kind, id, verb), encoder.encode(JSON.stringify(payload)))) as Record<string, unknown>;
    return { ok: true, result };
  } catch (err) {
    if (!(err instanceof MemledgerError)) throw err;
    system.stats.refused++;
    return { ok: false, code: err.code, reason: err.details.reason, details: err.details };
  }
}

function expectOutcome(label: string, actual: Outcome, expected: Expected, system: LedgerSystem, aggregate: "memory" | "task"): void {
  if (expected.ok) {
    if (actual.ok) system.accepted[aggregate]++;
    if (!actual.ok) throw new Error(`${label}: expected success, got ${actual.code} (${String(actual.reason)})`);
    for (const [field, value] of Object.entries(expected.fields)) strictEqual(actual.result[field], value, `${label}: ${field}`);
  } else {
    if (actual.ok) throw new Error(`${label}: expected ${expected.code}, got success ${JSON.stringify(actual.result)}`);
    strictEqual(actual.code, expected.code, `${label}: error code`);
  }
}

// ---- the rules, as the model states them ---------------------------------------------------------

const refused = (code: "conflict" | "not_found"): Expected => ({ ok: false, code });

/** The version an approve/reject acts on: the one named, or the newest pending. */
function decisionTarget(m: LedgerModel["memory"], version: number | undefined): Expected | number {
  if (!m.exists) return refused("not_found");
  if (m.superseded) return refused("conflict");
  if (version === undefined) {
    const newest = m.versions.lastIndexOf("proposed");
    return newest < 0 ? refused("conflict") : newest + 1;
  }
  if (version > m.versions.length) return refused("not_found");
  return m.versions[version - 1] === "proposed" ? version : refused("conflict");
}

// ---- commands ------------------------------------------------------------------------------------

abstract class LedgerCommand implements fc.AsyncCommand<LedgerModel, LedgerSystem> {
  constructor(readonly instance: number) {}
  check(): boolean {
    return true; // refusals are part of what is tested
  }
  abstract run(model: LedgerModel, system: LedgerSystem): Promise<void>;
  abstract toString(): string;
}

class Propose extends LedgerCommand {
  async run(model: LedgerModel, system: LedgerSystem) {
    // A new memory under an id the run chose: expectedSeq 0 says "it must not exist yet".
    const expected: Expected = model.memory.exists ? refused("conflict") : { ok: true, fields: { version: 1, type: "memory.proposed" } };
    const outcome = await send(system, this.instance, "author", "propose", { memoryId: system.memoryId, expectedSeq: 0, title: "Model", body: "v1" });
    expectOutcome(this.toString(), outcome, expected, system, "memory");
    if (expected.ok) model.memory = { exists: true, versions: ["proposed"], active: null, superseded: false };
  }
  toString = () => `propose@${this.instance}`;
}

class Revise extends LedgerCommand {
  async run(model: LedgerModel, system: LedgerSystem) {
    const m = model.memory;
    const next = m.versions.length + 1;
    const expected: Expected = !m.exists ? refused("not_found") : m.superseded ? refused("conflict") : { ok: true, fields: { version: next } };
    const outcome = await send(system, this.instance, "author", "propose", { memoryId: system.memoryId, title: "Model", body: `v${next}` });
    expectOutcome(this.toString(), outcome, expected, system, "memory");
    if (expected.ok) m.versions.push("proposed");
  }
  toString = () => `revise@${this.instance}`;
}

class Decide extends LedgerCommand {
  constructor(instance: number, readonly verb: "approve" | "reject", readonly version: number | undefined) {
    super(instance);
  }
  async run(model: LedgerModel, system: LedgerSystem) {
    const m = model.memory;
    const target = decisionTarget(m, this.version);
    const expected: Expected = typeof target === "number" ? { ok: true, fields: { version: target, type: this.verb === "approve" ? "memory.approved" : "memory.rejected" } } : target;
    const payload = { memoryId: system.memoryId, ...(this.version === undefined ? {} : { version: this.version }), ...(this.verb === "reject" ? { reason: "no" } : {}) };
    const outcome = await send(system, this.instance, `human:${REVIEWER}`, this.verb, payload);
    expectOutcome(this.toString(), outcome, expected, system, "memory");
    if (typeof target === "number") {
      m.versions[target - 1] = this.verb === "approve" ? "approved" : "rejected";
      if (this.verb === "approve") m.active = target;
    }
  }
  toString = () => `${this.verb}(${this.version ?? "pending"})@${this.instance}`;
}

class Supersede extends LedgerCommand {
  async run(model: LedgerModel, system: LedgerSystem) {
    const m = model.memory;
    const expected: Expected = !m.exists ? refused("not_found") : m.superseded ? refused("conflict") : { ok: true, fields: { type: "memory.superseded" } };
    const outcome = await send(system, this.instance, `human:${REVIEWER}`, "supersede", { memoryId: system.memoryId, reason: "outdated" });
    expectOutcome(this.toString(), outcome, expected, system, "memory");
    if (expected.ok) m.superseded = true;
  }
  toString = () => `supersede@${this.instance}`;
}

class Rollback extends LedgerCommand {
  constructor(instance: number, readonly toVersion: number) {
    super(instance);
  }
  async run(model: LedgerModel, system: LedgerSystem) {
    const m = model.memory;
    const to = this.toVersion;
    // Only an approved version other than the active one, of a live memory with an active version.
    const expected: Expected = !m.exists
      ? refused("not_found")
      : m.superseded
        ? refused("conflict")
        : to > m.versions.length
          ? refused("not_found")
          : m.active === null || m.versions[to - 1] !== "approved" || m.active === to
            ? refused("conflict")
            : { ok: true, fields: { version: to, type: "memory.rolled_back" } };
    const outcome = await send(system, this.instance, `human:${REVIEWER}`, "rollback", { memoryId: system.memoryId, toVersion: to });
    expectOutcome(this.toString(), outcome, expected, system, "memory");
    if (expected.ok) m.active = to;
  }
  toString = () => `rollback(${this.toVersion})@${this.instance}`;
}

class Claim extends LedgerCommand {
  constructor(instance: number, readonly agent: string) {
    super(instance);
  }
  async run(model: LedgerModel, system: LedgerSystem) {
    const t = model.task;
    // Leases are long (an hour): nobody's lapses during a run, so a held task is refused to everyone.
    const expected: Expected = t.done || t.holder !== null ? refused("conflict") : { ok: true, fields: { holder: this.agent, type: "claim.claimed" } };
    const outcome = await send(system, this.instance, this.agent, "claim", { name: system.task, ttlMs: 3_600_000 });
    expectOutcome(this.toString(), outcome, expected, system, "task");
    if (expected.ok) model.task = { exists: true, holder: this.agent, done: false };
  }
  toString = () => `claim(${this.agent})@${this.instance}`;
}

class Release extends LedgerCommand {
  constructor(instance: number, readonly agent: string, readonly done: boolean) {
    super(instance);
  }
  async run(model: LedgerModel, system: LedgerSystem) {
    const t = model.task;
    const expected: Expected = !t.exists
      ? refused("not_found")
      : t.done || t.holder !== this.agent
        ? refused("conflict")
        : { ok: true, fields: { holder: null, done: this.done, type: "claim.released" } };
    const outcome = await send(system, this.instance, this.agent, "release", { name: system.task, done: this.done });
    expectOutcome(this.toString(), outcome, expected, system, "task");
    if (expected.ok) model.task = { exists: true, holder: null, done: this.done };
  }
  toString = () => `release(${this.agent}${this.done ? ", done" : ""})@${this.instance}`;
}

/**
 * The last accepted command sent again, unchanged, to any instance: a retry after a lost reply. It must
 * be answered as the first one was (same sequence and event, `replayed`), and append nothing.
 */
class Retry extends LedgerCommand {
  async run(_model: LedgerModel, system: LedgerSystem) {
    const last = system.last;
    if (!last) return;
    const outcome = await sendRaw(system, this.instance, last.actor, last.verb, last.payload);
    if (!outcome.ok) throw new Error(`${this.toString()} of ${last.verb}: expected a replay, got ${outcome.code} (${String(outcome.reason)})`);
    for (const field of ["seq", "eventId", "type"]) strictEqual(outcome.result[field], last.result[field], `${this.toString()} of ${last.verb}: ${field}`);
    strictEqual(outcome.result.replayed, true, `${this.toString()} of ${last.verb}: replayed`);
  }
  toString = () => `retry-last@${this.instance}`;
}

/** The last accepted command's key with a different request: a conflict naming the key, nothing appended. */
class ReuseKey extends LedgerCommand {
  async run(_model: LedgerModel, system: LedgerSystem) {
    const last = system.last;
    if (!last) return;
    const p = last.payload;
    const changed: Record<string, Record<string, unknown>> = {
      propose: { body: `${String(p.body)} (changed)` },
      approve: { version: p.version === undefined ? 1 : undefined },
      reject: { reason: "another reason" },
      supersede: { reason: "another reason" },
      rollback: { toVersion: Number(p.toVersion) === 1 ? 2 : 1 },
      claim: { ttlMs: Number(p.ttlMs) + 1000 },
      release: { done: !p.done },
    };
    const outcome = await sendRaw(system, this.instance, last.actor, last.verb, { ...p, ...changed[last.verb] });
    if (outcome.ok) throw new Error(`${this.toString()} of ${last.verb}: key ${p.key} reused for another request was accepted: ${JSON.stringify(outcome.result)}`);
    strictEqual(outcome.code, "conflict", `${this.toString()} of ${last.verb}: code`);
    strictEqual(outcome.details.key, p.key, `${this.toString()} of ${last.verb}: details.key`);
  }
  toString = () => `reuse-key@${this.instance}`;
}

/** The command arbitraries, over `instances` command services (two or more: their caches go stale). */
export function ledgerCommands(instances: number): fc.Arbitrary<fc.AsyncCommand<LedgerModel, LedgerSystem>>[] {
  const instance = fc.integer({ min: 0, max: instances - 1 });
  // Half the decisions name no version (the newest pending), half name one that may not be pending.
  const version = fc.oneof(fc.constant(undefined), fc.integer({ min: 1, max: 4 }));
  const agent = fc.constantFrom(...AGENTS);
  const decide = (verb: "approve" | "reject") => fc.tuple(instance, version).map(([i, v]) => new Decide(i, verb, v));
  // Weighted so that about half the commands are accepted: a run of refusals tests little of the state.
  return [
    instance.map((i) => new Propose(i)),
    instance.map((i) => new Propose(i)),
    instance.map((i) => new Revise(i)),
    instance.map((i) => new Revise(i)),
    decide("approve"),
    decide("approve"),
    decide("reject"),
    instance.map((i) => new Supersede(i)),
    fc.tuple(instance, fc.integer({ min: 1, max: 4 })).map(([i, v]) => new Rollback(i, v)),
    fc.tuple(instance, agent).map(([i, a]) => new Claim(i, a)),
    fc.tuple(instance, agent).map(([i, a]) => new Claim(i, a)),
    // Done for good in one release of four, so most runs keep claiming.
    fc.tuple(instance, agent, fc.integer({ min: 0, max: 3 })).map(([i, a, n]) => new Release(i, a, n === 0)),
    fc.tuple(instance, agent).map(([i, a]) => new Release(i, a, false)),
    instance.map((i) => new Retry(i)),
    instance.map((i) => new ReuseKey(i)),
  ];
}

export const initialModel = (): LedgerModel => ({
  memory: { exists: false, versions: [], active: null, superseded: false },
  task: { exists: false, holder: null, done: false },
});

/** A fresh memory id and task name per run: runs share the stream, never an aggregate. */
export function newRunSystem(instances: readonly CommandService[], app: string, stats: LedgerSystem["stats"]): LedgerSystem {
  const run = randomBytes(8).toString("hex");
  return { instances, app, memoryId: `m-${run}`, task: `t-${run}`, stats, accepted: { memory: 0, task: 0 }, last: null };
}

/** The aggregates as the deciders fold them from the log must be what the model says. */
export async function checkLogAgainstModel(system: LedgerSystem, model: LedgerModel): Promise<void> {
  const service = system.instances[0]!;
  const stream = service.names.appStream(system.app);
  const memoryEvents: MemoryEvent[] = [];
  for await (const stored of service.store.readSubject(stream, service.names.aggregate(system.app, "memory", system.memoryId))) {
    memoryEvents.push(stored.event as MemoryEvent);
  }
  const memory = fold(memoryDecider, memoryEvents);
  deepStrictEqual(
    {
      exists: memory.id !== null,
      versions: memory.versions.map((v) => v.status),
      active: memory.activeVersion,
      superseded: memory.superseded !== null,
    },
    model.memory,
    "the memory folded from the log",
  );
  const claimEvents: ClaimEvent[] = [];
  const claimId = claimIdOf("task", system.task);
  for await (const stored of service.store.readSubject(stream, service.names.aggregate(system.app, "claim", claimId))) {
    claimEvents.push(stored.event as ClaimEvent);
  }
  const task = fold(claimDecider, claimEvents);
  deepStrictEqual({ exists: task.id !== null, holder: task.holder, done: task.done }, model.task, "the task folded from the log");
  // Exactly one event per accepted command, none for a refused one.
  strictEqual(memoryEvents.length, system.accepted.memory, "memory events in the log vs accepted memory commands");
  strictEqual(claimEvents.length, system.accepted.task, "task events in the log vs accepted claim commands");
}

export interface PropertyRunOptions {
  instances: readonly CommandService[];
  app: string;
  numRuns: number;
  maxCommands?: number;
  seed?: number;
}

export interface PropertyReport {
  runs: number;
  commands: number;
  refused: number;
  ms: number;
  seed: number | undefined;
}

/**
 * Runs the property: `numRuns` random command sequences through the instances, each checked step by step
 * against the model and at the end against the log. Throws fast-check's report (seed, shrunk
 * counterexample) on the first failure.
 */
export async function runLedgerProperty(options: PropertyRunOptions): Promise<PropertyReport> {
  const stats = { commands: 0, refused: 0 };
  const started = performance.now();
  await fc.assert(
    fc.asyncProperty(fc.commands(ledgerCommands(options.instances.length), { maxCommands: options.maxCommands ?? 12 }), async (commands) => {
      const system = newRunSystem(options.instances, options.app, stats);
      const model = initialModel();
      await fc.asyncModelRun(() => ({ model, real: system }), commands);
      await checkLogAgainstModel(system, model);
    }),
    { numRuns: options.numRuns, ...(options.seed === undefined ? {} : { seed: options.seed }) },
  );
  return { runs: options.numRuns, commands: stats.commands, refused: stats.refused, ms: performance.now() - started, seed: options.seed };
}
