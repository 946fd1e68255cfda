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

/** A command as sent: who, which verb, what, and which of the run's aggregates it acts on. */
interface Request {
  actor: string;
  verb: string;
  fields: object;
  aggregate: "memory" | "task";
}

/** What the model says a command does in a given state, and how the state changes if it is accepted. */
interface Prediction {
  expected: Expected;
  apply(): void;
}

const refusal = (code: "conflict" | "not_found"): Prediction => ({ expected: refused(code), apply: () => undefined });
const accepted = (fields: Record<string, unknown>, apply: () => void): Prediction => ({ expected: { ok: true, fields }, apply });

abstract class LedgerCommand implements fc.AsyncCommand<LedgerModel, LedgerSystem> {
  constructor(readonly instance: number) {}
  check(): boolean {
    return true; // refusals are part of what is tested
  }
  abstract run(model: LedgerModel, system: LedgerSystem): Promise<void>;
  abstract toString(): string;
}

/** One command whose outcome the model predicts from its state. */
abstract class ModelledCommand extends LedgerCommand {
  abstract request(system: LedgerSystem, model: LedgerModel): Request;
  /** Pure: reads `model`; only the returned `apply` changes it. */
  abstract predict(model: LedgerModel): Prediction;

  async run(model: LedgerModel, system: LedgerSystem): Promise<void> {
    const request = this.request(system, model);
    const prediction = this.predict(model);
    const outcome = await send(system, this.instance, request.actor, request.verb, request.fields);
    expectOutcome(this.toString(), outcome, prediction.expected, system, request.aggregate);
    if (prediction.expected.ok) prediction.apply();
  }
}

class Propose extends ModelledCommand {
  // A new memory under an id the run chose: expectedSeq 0 says "it must not exist yet".
  request = (system: LedgerSystem): Request => ({
    actor: "author",
    verb: "propose",
    fields: { memoryId: system.memoryId, expectedSeq: 0, title: "Model", body: "v1" },
    aggregate: "memory",
  });
  predict = (model: LedgerModel): Prediction =>
    model.memory.exists
      ? refusal("conflict")
      : accepted({ version: 1, type: "memory.proposed" }, () => {
          model.memory = { exists: true, versions: ["proposed"], active: null, superseded: false };
        });
  toString = () => `propose@${this.instance}`;
}

class Revise extends ModelledCommand {
  request = (system: LedgerSystem, model: LedgerModel): Request => ({
    actor: "author",
    verb: "propose",
    fields: { memoryId: system.memoryId, title: "Model", body: `v${model.memory.versions.length + 1}` },
    aggregate: "memory",
  });
  predict = (model: LedgerModel): Prediction => {
    const m = model.memory;
    if (!m.exists) return refusal("not_found");
    if (m.superseded) return refusal("conflict");
    return accepted({ version: m.versions.length + 1, type: "memory.proposed" }, () => void m.versions.push("proposed"));
  };
  toString = () => `revise@${this.instance}`;
}

class Decide extends ModelledCommand {
  constructor(instance: number, readonly verb: "approve" | "reject", readonly version: number | undefined) {
    super(instance);
  }
  request = (system: LedgerSystem): Request => ({
    actor: `human:${REVIEWER}`,
    verb: this.verb,
    fields: { memoryId: system.memoryId, ...(this.version === undefined ? {} : { version: this.version }), ...(this.verb === "reject" ? { reason: "no" } : {}) },
    aggregate: "memory",
  });
  predict = (model: LedgerModel): Prediction => {
    const m = model.memory;
    const target = decisionTarget(m, this.version);
    if (typeof target !== "number") return { expected: target, apply: () => undefined };
    return accepted({ version: target, type: this.verb === "approve" ? "memory.approved" : "memory.rejected" }, () => {
      m.versions[target - 1] = this.verb === "approve" ? "approved" : "rejected";
      if (this.verb === "approve") m.active = target;
    });
  };
  toString = () => `${this.verb}(${this.version ?? "pending"})@${this.instance}`;
}

class Supersede extends ModelledCommand {
  request = (system: LedgerSystem): Request => ({
    actor: `human:${REVIEWER}`,
    verb: "supersede",
    fields: { memoryId: system.memoryId, reason: "outdated" },
    aggregate: "memory",
  });
  predict = (model: LedgerModel): Prediction => {
    const m = model.memory;
    if (!m.exists) return refusal("not_found");
    if (m.superseded) return refusal("conflict");
    return accepted({ type: "memory.superseded" }, () => void (m.superseded = true));
  };
  toString = () => `supersede@${this.instance}`;
}

class Rollback extends ModelledCommand {
  constructor(instance: number, readonly toVersion: number) {
    super(instance);
  }
  request = (system: LedgerSystem): Request => ({
    actor: `human:${REVIEWER}`,
    verb: "rollback",
    fields: { memoryId: system.memoryId, toVersion: this.toVersion },
    aggregate: "memory",
  });
  predict = (model: LedgerModel): Prediction => {
    const m = model.memory;
    const to = this.toVersion;
    if (!m.exists) return refusal("not_found");
    if (m.superseded) return refusal("conflict");
    if (to > m.versions.length) return refusal("not_found");
    // Only an approved version other than the active one, of a memory with an active version.
    if (m.active === null || m.versions[to - 1] !== "approved" || m.active === to) return refusal("conflict");
    return accepted({ version: to, type: "memory.rolled_back" }, () => void (m.active = to));
  };
  toString = () => `rollback(${this.toVersion})@${this.instance}`;
}

class Claim extends ModelledCommand {
  constructor(instance: number, readonly agent: string) {
    super(instance);
  }
  request = (system: LedgerSystem): Request => ({ actor: this.agent, verb: "claim", fields: { name: system.task, ttlMs: 3_600_000 }, aggregate: "task" });
  predict = (model: LedgerModel): Prediction => {
    const t = model.task;
    // Leases are long (an hour): nobody's lapses during a run, so a held task is refused to everyone.
    if (t.done || t.holder !== null) return refusal("conflict");
    return accepted({ holder: this.agent, type: "claim.claimed" }, () => void (model.task = { exists: true, holder: this.agent, done: false }));
  };
  toString = () => `claim(${this.agent})@${this.instance}`;
}

class Release extends ModelledCommand {
  constructor(instance: number, readonly agent: string, readonly done: boolean) {
    super(instance);
  }
  request = (system: LedgerSystem): Request => ({ actor: this.agent, verb: "release", fields: { name: system.task, done: this.done }, aggregate: "task" });
  predict = (model: LedgerModel): Prediction => {
    const t = model.task;
    if (!t.exists) return refusal("not_found");
    if (t.done || t.holder !== this.agent) return refusal("conflict");
    return accepted({ holder: null, done: this.done, type: "claim.released" }, () => void (model.task = { exists: true, holder: null, done: this.done }));
  };
  toString = () => `release(${this.agent}${this.done ? ", done" : ""})@${this.instance}`;
}

const seqOf = (outcome: Outcome): number => (outcome.ok ? Number(outcome.result.seq) : Infinity);

/**
 * Several commands sent at once, to any instances, racing each other. The log's order is the order they
 * took effect: replayed through the model in sequence order, each accepted command must be what the
 * model accepts at that point (same version, holder), and each refused one must be refused with its code
 * at some point of that order (before or after any of the others).
 */
class Concurrently extends LedgerCommand {
  constructor(readonly commands: ModelledCommand[]) {
    super(0);
  }
  async run(model: LedgerModel, system: LedgerSystem): Promise<void> {
    const requests = this.commands.map((c) => c.request(system, model));
    const outcomes = await Promise.all(this.commands.map((c, i) => send(system, c.instance, requests[i]!.actor, requests[i]!.verb, requests[i]!.fields)));
    const order = this.commands
      .map((command, i) => ({ command, outcome: outcomes[i]!, aggregate: requests[i]!.aggregate }))
      .filter((x) => x.outcome.ok)
      .sort((a, b) => seqOf(a.outcome) - seqOf(b.outcome));
    const states: LedgerModel[] = [structuredClone(model)];
    for (const { command, outcome, aggregate } of order) {
      const prediction = command.predict(model);
      expectOutcome(`${command.toString()} in ${this.toString()}`, outcome, prediction.expected, system, aggregate);
      prediction.apply();
      states.push(structuredClone(model));
    }
    for (const [i, command] of this.commands.entries()) {
      const outcome = outcomes[i]!;
      if (outcome.ok) continue;
      const possible = states.map((state) => command.predict(structuredClone(state)).expected).filter((e) => !e.ok && e.code === outcome.code);
      if (possible.length === 0) {
        throw new Error(`${command.toString()} in ${this.toString()}: refused with ${outcome.code} (${String(outcome.reason)}), which no order of the batch explains`);
      }
    }
  }
  toString = () => `concurrently[${this.commands.map((c) => c.toString()).join(", ")}]`;
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
  // Weighted so that a good part of the commands is accepted: a run of refusals tests little of the state.
  const single: fc.Arbitrary<ModelledCommand>[] = [
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
  ];
  return [
    ...single,
    fc.array(fc.oneof(...single), { minLength: 2, maxLength: 4 }).map((commands) => new Concurrently(commands)),
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
  /** Called after each run with the number of runs done so far. */
  onRun?: (runs: number) => void;
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
  let runs = 0;
  // The stream exists before the first run, which may send nothing and still reads the log.
  await options.instances[0]!.store.ensureAppStream(options.app);
  const started = performance.now();
  await fc.assert(
    fc.asyncProperty(fc.commands(ledgerCommands(options.instances.length), { maxCommands: options.maxCommands ?? 12 }), async (commands) => {
      const system = newRunSystem(options.instances, options.app, stats);
      const model = initialModel();
      await fc.asyncModelRun(() => ({ model, real: system }), commands);
      await checkLogAgainstModel(system, model);
      options.onRun?.(++runs);
    }),
    { numRuns: options.numRuns, ...(options.seed === undefined ? {} : { seed: options.seed }) },
  );
  return { runs: options.numRuns, commands: stats.commands, refused: stats.refused, ms: performance.now() - started, seed: options.seed };
}
