/**
 * The fault-suite driver, shared by test/faults/*.e2e.spec.ts (a few iterations in CI) and
 * `npm run bench -- chaos` (as many as asked): memledger processes started and SIGKILLed by pid, agents
 * that write, promote and claim with idempotency keys while they die, and the checks that must hold
 * afterwards (nothing acknowledged lost, nothing duplicated, read models equal a rebuild, one org memory
 * per accepted promotion, at most one live holder per claim).
 *
 * It drives the built CLI (`dist/services/cli/main.js`) as separate processes, like an operator would.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { Redis } from "ioredis";
import seedrandom from "seedrandom";
import { MemoryClient } from "../services/client.js";
import { EventStore, type StoredEvent } from "../services/event-store.js";
import { listInstances } from "../services/instance.js";
import { connectNats } from "../services/nats.js";
import { claimDecider, initialClaimState, isLive, type ClaimState } from "../commands/claim.js";
import { ORG_APP, isStreamOfPrefix, naming } from "../events/subjects.js";
import { escapeGlob, liveClaims, unlinkMatching } from "../projections/claims/index.js";
import { openSearchIndex, retrieve } from "../projections/search/index.js";
import { rebuildProjections } from "../services/projection-runner.js";
import { openReadModels, readModelConfig } from "../services/read-models.js";
import { ErrorCode, MemledgerError } from "../schemas/errors.js";
import type { ClaimEvent, LedgerEvent } from "../schemas/events.js";

// ---- the CLI as a process ------------------------------------------------------------------------

const here = dirname(fileURLToPath(import.meta.url));
/**
 * The built CLI: beside this file when it runs from dist/bench, under dist/ when it runs from the sources
 * (vitest); MEMLEDGER_FAULTS_CLI points elsewhere (a build of its own while others rebuild dist/).
 */
export const CLI_PATH =
  process.env.MEMLEDGER_FAULTS_CLI ??
  (existsSync(resolve(here, "../services/cli/main.js")) ? resolve(here, "../services/cli/main.js") : resolve(here, "../dist/services/cli/main.js"));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs one CLI command to its end. */
export function runCli(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 120_000): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [CLI_PATH, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

/** An environment without the caller's MEMLEDGER_* settings: only what the driver passes counts. */
export function cliEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("MEMLEDGER_")) env[k] = v;
  return { ...env, ...extra };
}

/**
 * One long-running memledger process (`up`, `curator`, …): started, waited for until it prints its ready
 * line, killed by its pid, started again. Keeps the tail of its output for failure messages.
 */
export class MemledgerProcess {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private tail = "";
  /** How long each start took until ready, in ms. */
  readonly startTimes: number[] = [];
  kills = 0;

  constructor(
    readonly name: string,
    readonly args: string[],
    readonly env: NodeJS.ProcessEnv,
    private readonly readyPattern: RegExp = /\bready\b/,
  ) {}

  get pid(): number | undefined {
    return this.running ? this.child?.pid : undefined;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The last few KB it printed (stdout and stderr, interleaved). */
  get output(): string {
    return this.tail;
  }

  private record(s: string): void {
    this.tail = (this.tail + s).slice(-32_000);
  }

  /** Starts it and resolves once it printed its ready line; fails (with its output) if it exits first or is slow. */
  async start(timeoutMs = 60_000): Promise<number> {
    if (this.running) throw new Error(`${this.name} is already running (pid ${this.child?.pid})`);
    const started = performance.now();
    const child = spawn(process.execPath, [CLI_PATH, ...this.args], { env: this.env, stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    this.exited = new Promise((resolveExit) => child.once("exit", () => resolveExit()));
    this.record(`\n--- ${this.name} started (pid ${child.pid}) ---\n`);
    let out = "";
    await new Promise<void>((ready, fail) => {
      const timer = setTimeout(() => fail(new Error(`${this.name} not ready after ${timeoutMs} ms:\n${this.tail}`)), timeoutMs);
      child.stdout!.setEncoding("utf8").on("data", (s: string) => {
        this.record(s);
        out += s;
        if (this.readyPattern.test(out)) {
          clearTimeout(timer);
          ready();
        }
      });
      child.stderr!.setEncoding("utf8").on("data", (s: string) => this.record(s));
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        fail(new Error(`${this.name} exited (${code ?? signal}) before it was ready:\n${this.tail}`));
      });
    });
    const ms = performance.now() - started;
    this.startTimes.push(ms);
    return ms;
  }

  /** Sends the signal (default SIGKILL: a crash) and waits for the process to be gone. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    if (signal === "SIGKILL") this.kills++;
    process.kill(child.pid!, signal);
    await this.exited;
  }

  /** SIGTERM, then SIGKILL if it has not exited within graceMs. */
  async stop(graceMs = 10_000): Promise<void> {
    if (!this.running) return;
    const child = this.child!;
    process.kill(child.pid!, "SIGTERM");
    const timer = setTimeout(() => {
      if (this.running) process.kill(child.pid!, "SIGKILL");
    }, graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

// ---- agents ---------------------------------------------------------------------------------------

export type Verb = "propose" | "approve" | "promote" | "claim" | "release";

/** One command the ledger acknowledged. */
export interface Ack {
  agent: string;
  verb: Verb;
  key: string;
  aggregateId: string;
  eventId: string;
  seq: number;
  replayed: boolean;
}

export interface Workload {
  /** How often each verb is picked (a verb that has nothing to act on falls back to propose). */
  weights: Partial<Record<Verb, number>>;
  /** Tasks the agents compete for. */
  tasks: number;
  /** Lease lengths picked at random: short ones lapse during the run (takeovers), long ones stay held. */
  leaseMs: number[];
}

export const DEFAULT_WORKLOAD: Workload = {
  weights: { propose: 5, approve: 3, promote: 2, claim: 3, release: 1 },
  tasks: 6,
  leaseMs: [1_500, 600_000],
};

export const PROPOSALS_ONLY: Workload = { weights: { propose: 1 }, tasks: 0, leaseMs: [] };

const WORDS =
  "payments webhook retries idempotency ledger cache eviction schema migration rollout canary latency budget queue backoff jitter tenant quota index shard replica snapshot checkpoint lease fencing token rotation secret vault deploy pipeline flaky test timeout circuit breaker".split(
    " ",
  );

/** What the agents did: every acknowledged command, and the attempts that never got an answer. */
export class AckLedger {
  readonly acks: Ack[] = [];
  /** Refused for good (conflict, not_found, …): nothing was appended for them (checked). */
  readonly refused: { agent: string; verb: Verb; key: string; code: string; message: string }[] = [];
  /** Never answered before the agents stopped: may or may not be in the log, but at most once. */
  readonly unresolved: { agent: string; verb: Verb; key: string; error: string }[] = [];
  /** Retries after `unavailable` (timeouts, no responders, a node or instance gone). */
  retries = 0;
}

interface AgentMemory {
  memoryId: string;
  approved: boolean;
  promoted: boolean;
}

export interface AgentsOptions {
  prefix: string;
  app: string;
  /** One connection per agent (spread them over servers and instances). */
  connections: NatsConnection[];
  workload?: Workload;
  seed?: string;
  /** Each agent stops after this many commands (default: until stop()). */
  commandsPerAgent?: number;
  /** How long one command may keep being retried on `unavailable` before it counts as unresolved. */
  retryForMs?: number;
  requestTimeoutMs?: number;
  /** Agent names: `<label>-<i>`. */
  label?: string;
  /** Each agent waits a random 0..pauseMs between commands (agents think; default 0). */
  pauseMs?: number;
}

/**
 * Agents working in parallel, each one command at a time, every command with its own idempotency key
 * and retried with the same key while the answer is `unavailable`: a crash may have taken the answer,
 * never the command twice.
 */
export class Agents {
  readonly ledger = new AckLedger();
  private stopping = false;
  private readonly running: Promise<void>[] = [];
  private readonly workload: Workload;
  readonly clients: MemoryClient[];

  constructor(private readonly options: AgentsOptions) {
    this.workload = options.workload ?? DEFAULT_WORKLOAD;
    const label = options.label ?? "agent";
    this.clients = options.connections.map(
      (nc, i) => new MemoryClient(nc, { app: options.app, as: `${label}-${i}`, prefix: options.prefix, timeoutMs: options.requestTimeoutMs ?? 6_000 }),
    );
  }

  start(): this {
    for (const [i, client] of this.clients.entries()) this.running.push(this.agent(client, seedrandom(`${this.options.seed ?? "chaos"}-${i}`)));
    return this;
  }

  /** Lets each agent finish the command it is on (retries included), then resolves. */
  async stop(): Promise<AckLedger> {
    this.stopping = true;
    await Promise.all(this.running);
    return this.ledger;
  }

  /** Resolves once every agent did its commandsPerAgent. */
  async done(): Promise<AckLedger> {
    await Promise.all(this.running);
    return this.ledger;
  }

  private async agent(client: MemoryClient, random: () => number): Promise<void> {
    const name = client.actor.id;
    const memories: AgentMemory[] = [];
    const held = new Set<string>();
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    const words = (n: number) => Array.from({ length: n }, () => pick(WORDS)).join(" ");
    const weights = Object.entries(this.workload.weights).filter(([, w]) => (w ?? 0) > 0) as [Verb, number][];
    const total = weights.reduce((sum, [, w]) => sum + w, 0);
    const limit = this.options.commandsPerAgent ?? Number.POSITIVE_INFINITY;
    for (let n = 0; n < limit && !this.stopping; n++) {
      if (this.options.pauseMs) await sleep(random() * this.options.pauseMs);
      let roll = random() * total;
      let verb: Verb = weights.find(([, w]) => (roll -= w) < 0)?.[0] ?? "propose";
      const toApprove = memories.filter((m) => !m.approved);
      const toPromote = memories.filter((m) => m.approved && !m.promoted);
      if ((verb === "approve" && toApprove.length === 0) || (verb === "promote" && toPromote.length === 0) || (verb === "release" && held.size === 0)) verb = "propose";
      if (verb === "claim" && this.workload.tasks === 0) verb = "propose";
      const key = `${name}-${n}-${verb}`;
      switch (verb) {
        case "propose": {
          // `${name}` without its dash is one search token of this agent alone: queries find its memories only.
          // The request is drawn once: a retry sends the same request with the same key (a different one would be a conflict).
          const request = {
            title: `${words(3)} ${name.replace(/-/g, "")} ${n}`,
            body: `${words(12)}\n\n${words(20)}`,
            kind: pick(["note", "fact", "convention", "decision"] as const),
            tags: [pick(WORDS)],
            key,
          };
          const ack = await this.attempt(name, verb, key, () => client.propose(request));
          if (ack) memories.push({ memoryId: ack.aggregateId, approved: false, promoted: false });
          break;
        }
        case "approve": {
          const memory = pick(toApprove);
          const ack = await this.attempt(name, verb, key, () => client.approve(memory.memoryId, { key }));
          // Refused or unresolved: not tried again, and not promoted (it may not be approved).
          memory.approved = true;
          memory.promoted = ack === null;
          break;
        }
        case "promote": {
          const memory = pick(toPromote);
          memory.promoted = true;
          const reason = words(4);
          await this.attempt(name, verb, key, () => client.promote(memory.memoryId, { reason, key }));
          break;
        }
        case "claim": {
          const task = `task-${Math.floor(random() * this.workload.tasks)}`;
          const ttlMs = pick(this.workload.leaseMs);
          const ack = await this.attempt(name, verb, key, () => client.claim(task, { ttlMs, key }));
          if (ack) held.add(task);
          break;
        }
        case "release": {
          const task = pick([...held]);
          held.delete(task);
          await this.attempt(name, verb, key, () => client.release(task, { key }));
          break;
        }
      }
    }
  }

  /** Sends a command until it is answered: `unavailable` is retried with the same key, anything else is final. */
  private async attempt(
    agent: string,
    verb: Verb,
    key: string,
    send: () => Promise<{ seq: number; eventId: string; replayed: boolean; memoryId?: string; claimId?: string }>,
  ): Promise<Ack | null> {
    const deadline = Date.now() + (this.options.retryForMs ?? 60_000);
    for (let attempt = 0; ; attempt++) {
      try {
        const outcome = await send();
        const ack: Ack = {
          agent,
          verb,
          key,
          aggregateId: outcome.memoryId ?? outcome.claimId ?? "",
          eventId: outcome.eventId,
          seq: outcome.seq,
          replayed: outcome.replayed,
        };
        this.ledger.acks.push(ack);
        return ack;
      } catch (err) {
        const code = err instanceof MemledgerError ? err.code : ErrorCode.unavailable;
        if (code !== ErrorCode.unavailable) {
          this.ledger.refused.push({ agent, verb, key, code, message: (err as Error).message });
          return null;
        }
        if (Date.now() > deadline) {
          this.ledger.unresolved.push({ agent, verb, key, error: (err as Error).message });
          return null;
        }
        this.ledger.retries++;
        await sleep(Math.min(1_000, 100 * 2 ** Math.min(attempt, 4)) * (0.5 + Math.random()));
      }
    }
  }
}

// ---- the log: what must hold ----------------------------------------------------------------------

export interface LedgerReport {
  /** Events in the app and org streams. */
  events: number;
  acked: number;
  /** Acknowledged commands whose event is not in the log at the acknowledged sequence. */
  lost: string[];
  /** Event ids stored more than once, and keyed commands applied more than once. */
  duplicates: string[];
  /** Promotion requests without exactly one decision, accepted ones without exactly one org version, org versions without a request. */
  promotionViolations: string[];
  /** Claim events that gave a task or lock a second live holder, or were not the holder's. */
  claimViolations: string[];
  /** Promotions: requested, accepted (created or merged), rejected. */
  promotions: { requested: number; accepted: number; rejected: number };
}

/**
 * The whole stream, oldest first (none if it does not exist). Retried while JetStream is `unavailable`
 * (a node just restarted, a leader being elected), for up to 30 s.
 */
export function readStream(store: EventStore, stream: string): Promise<StoredEvent[]> {
  return whileUnavailable(async () => {
    const events: StoredEvent[] = [];
    try {
      await store.replay(stream, {}, (batch) => void events.push(...batch));
    } catch (err) {
      if (err instanceof MemledgerError && err.code === ErrorCode.not_found) return [];
      throw err;
    }
    return events;
  });
}

/** The prefix's event store, opened once JetStream answers. */
export const openStore = (nc: NatsConnection, prefix: string): Promise<EventStore> => whileUnavailable(() => EventStore.open(nc, naming(prefix)));

/**
 * Reads the app and org streams whole and checks every guarantee the agents' acknowledgements promise.
 * Pure over what it read, except for the reads themselves.
 */
export async function verifyLedger(nc: NatsConnection, prefix: string, app: string, ledger: AckLedger): Promise<LedgerReport> {
  const store = await openStore(nc, prefix);
  const appEvents = await readStream(store, store.names.appStream(app));
  const orgEvents = await readStream(store, store.names.orgStream());
  return checkLedger(appEvents, orgEvents, ledger);
}

export function checkLedger(appEvents: StoredEvent[], orgEvents: StoredEvent[], ledger: AckLedger): LedgerReport {
  const lost: string[] = [];
  const duplicates: string[] = [];
  const promotionViolations: string[] = [];
  const claimViolations: string[] = [];

  for (const [label, events] of [["app", appEvents], ["org", orgEvents]] as const) {
    const seen = new Map<string, number>();
    for (const e of events) {
      const before = seen.get(e.event.id);
      if (before !== undefined) duplicates.push(`${label} event ${e.event.id} at seq ${before} and ${e.seq}`);
      else seen.set(e.event.id, e.seq);
    }
  }

  const byId = new Map(appEvents.map((e) => [e.event.id, e]));
  for (const ack of ledger.acks) {
    const stored = byId.get(ack.eventId);
    if (!stored) lost.push(`${ack.agent} ${ack.verb} ${ack.key}: event ${ack.eventId} (seq ${ack.seq}) is not in the log`);
    else if (stored.seq !== ack.seq) lost.push(`${ack.agent} ${ack.verb} ${ack.key}: acknowledged at seq ${ack.seq}, stored at ${stored.seq}`);
  }
  // Two acknowledgements of one key must name the same event (a retry is a replay, never a second event).
  const ackByKey = new Map<string, Ack>();
  for (const ack of ledger.acks) {
    const first = ackByKey.get(`${ack.agent}\u0000${ack.key}`);
    if (first && first.eventId !== ack.eventId) duplicates.push(`key ${ack.key} of ${ack.agent} acknowledged as ${first.eventId} and ${ack.eventId}`);
    ackByKey.set(`${ack.agent}\u0000${ack.key}`, ack);
  }
  // Keyed commands once: the agents propose each memory once, approve it once, promote it once.
  const once = new Map<string, number[]>();
  for (const e of appEvents) {
    if (e.event.actor.kind !== "agent") continue;
    if (e.event.type === "memory.proposed" || e.event.type === "memory.approved" || e.event.type === "memory.promotion_requested") {
      const k = `${e.event.type} ${e.event.aggregateId}`;
      once.set(k, [...(once.get(k) ?? []), e.seq]);
    }
  }
  for (const [k, seqs] of once) if (seqs.length > 1) duplicates.push(`${k} stored ${seqs.length} times (seqs ${seqs.join(", ")})`);
  // Every agent event answers one command: acknowledged, or sent and never answered (at most once each).
  const agentEvents = appEvents.filter((e) => e.event.actor.kind === "agent").length;
  const commands = new Set(ledger.acks.map((a) => `${a.agent}\u0000${a.key}`)).size + ledger.unresolved.length;
  if (agentEvents > commands) duplicates.push(`${agentEvents} agent events for ${commands} commands`);

  // Promotions: one decision each; an accepted one is exactly one org version whose provenance names it.
  const requests = appEvents.filter((e) => e.event.type === "memory.promotion_requested");
  const decisions = new Map<string, StoredEvent[]>();
  for (const e of appEvents) {
    if (e.event.type !== "memory.promotion_accepted" && e.event.type !== "memory.promotion_rejected") continue;
    const id = (e.event.data as { promotionId: string }).promotionId;
    decisions.set(id, [...(decisions.get(id) ?? []), e]);
  }
  const orgVersions = new Map<string, StoredEvent[]>();
  for (const e of orgEvents) {
    const provenance = e.event.type === "memory.proposed" ? (e.event.data as { provenance?: { promotionId: string } }).provenance : undefined;
    if (provenance) orgVersions.set(provenance.promotionId, [...(orgVersions.get(provenance.promotionId) ?? []), e]);
  }
  let accepted = 0;
  let rejected = 0;
  const requested = new Set<string>();
  for (const request of requests) {
    const id = (request.event.data as { promotionId: string }).promotionId;
    requested.add(id);
    const decided = decisions.get(id) ?? [];
    if (decided.length !== 1) {
      promotionViolations.push(`promotion ${id}: ${decided.length} decisions`);
      continue;
    }
    const decision = decided[0]!.event;
    const versions = orgVersions.get(id) ?? [];
    if (decision.type === "memory.promotion_rejected") {
      rejected++;
      if (versions.length > 0) promotionViolations.push(`promotion ${id} was rejected but wrote ${versions.length} org versions`);
      continue;
    }
    accepted++;
    const data = decision.data as { orgMemoryId: string; orgVersion: number };
    if (versions.length !== 1) promotionViolations.push(`promotion ${id} was accepted with ${versions.length} org versions`);
    else if (versions[0]!.event.aggregateId !== data.orgMemoryId || (versions[0]!.event.data as { version: number }).version !== data.orgVersion) {
      promotionViolations.push(`promotion ${id}: decision names ${data.orgMemoryId} v${data.orgVersion}, the org holds ${versions[0]!.event.aggregateId}`);
    }
  }
  for (const id of decisions.keys()) if (!requested.has(id)) promotionViolations.push(`decision for unknown promotion ${id}`);
  for (const id of orgVersions.keys()) if (!requested.has(id)) promotionViolations.push(`org version for unknown promotion ${id}`);

  claimViolations.push(...checkClaims(appEvents));
  return {
    events: appEvents.length + orgEvents.length,
    acked: ledger.acks.length,
    lost,
    duplicates,
    promotionViolations,
    claimViolations,
    promotions: { requested: requests.length, accepted, rejected },
  };
}

const isClaimEvent = (e: LedgerEvent): e is ClaimEvent => e.type.startsWith("claim.");

/**
 * Folds each task's and lock's events in log order and checks that no event gave it a second live holder:
 * a claim lands only on a free or lapsed lease (decided at `expiresAt - leaseMs`, the command's now), and
 * only the holder renews or releases.
 */
export function checkClaims(appEvents: StoredEvent[]): string[] {
  const violations: string[] = [];
  const states = new Map<string, ClaimState>();
  for (const { seq, event } of appEvents) {
    if (!isClaimEvent(event)) continue;
    const before = states.get(event.aggregateId) ?? initialClaimState();
    if (event.type === "claim.claimed") {
      const decidedAt = Date.parse(event.data.expiresAt) - event.data.leaseMs;
      if (isLive(before, decidedAt)) {
        violations.push(`seq ${seq}: ${event.data.holder} claimed ${event.data.name} while ${before.holder} held it until ${before.expiresAt}`);
      }
    } else if (event.type === "claim.renewed" || event.type === "claim.released") {
      if (before.holder !== event.data.holder) violations.push(`seq ${seq}: ${event.type} by ${event.data.holder}, holder was ${before.holder}`);
    }
    states.set(event.aggregateId, claimDecider.evolve(before, event));
  }
  return violations;
}

/** The claims that are live at `now` by a fold of the log: kind, name, holder, expiry. */
export function liveClaimsOf(appEvents: StoredEvent[], now: number): string[] {
  const states = new Map<string, ClaimState>();
  for (const { event } of appEvents) {
    if (isClaimEvent(event)) states.set(event.aggregateId, claimDecider.evolve(states.get(event.aggregateId) ?? initialClaimState(), event));
  }
  return [...states.values()]
    .filter((s) => !s.done && isLive(s, now))
    .map((s) => `${s.kind} ${s.name} ${s.holder} ${s.expiresAt}`)
    .sort();
}

// ---- read models against a rebuild ---------------------------------------------------------------

/** A digest of every reader-visible file of an app's tree (`<root>/<app>`, following its link); dot files (state, checkpoints) excluded. */
export async function treeDigest(dir: string): Promise<{ digest: string; files: Map<string, string> }> {
  const files = new Map<string, string>();
  const walk = async (at: string) => {
    let entries: string[];
    try {
      entries = await readdir(at);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    for (const name of entries.sort()) {
      if (name.startsWith(".")) continue;
      const path = join(at, name);
      const info = await stat(path);
      if (info.isDirectory()) await walk(path);
      else files.set(relative(dir, path), createHash("sha256").update(await readFile(path)).digest("hex"));
    }
  };
  await walk(dir);
  const digest = createHash("sha256");
  for (const [path, hash] of files) digest.update(`${path}\u0000${hash}\n`);
  return { digest: digest.digest("hex"), files };
}

function treeDiff(a: Map<string, string>, b: Map<string, string>): string {
  const out: string[] = [];
  for (const [path, hash] of a) if (b.get(path) !== hash) out.push(b.has(path) ? `changed ${path}` : `only in instance: ${path}`);
  for (const path of b.keys()) if (!a.has(path)) out.push(`only in rebuild: ${path}`);
  return out.slice(0, 10).join("; ") + (out.length > 10 ? `; … ${out.length - 10} more` : "");
}

export interface ReadModelTarget {
  name: string;
  /** Its MEMLEDGER_DATA: files under files/, search snapshots under search/. */
  dataDir: string;
}

export interface ReadModelCheck {
  /** Per instance and app: where its files tree and its search answers differ from a rebuild (empty: equal). */
  differences: string[];
  /** Live claims in Redis against a fold of the log (empty: equal). */
  claimDifferences: string[];
}

/** What `memledger rebuild files` and `rebuild search` do, in this process: one replay of the stream into fresh targets under dataDir. */
export async function rebuildInto(store: EventStore, app: string, dataDir: string, redisUrl: string): Promise<void> {
  const config = readModelConfig({}, { filesRoot: join(dataDir, "files"), searchDir: join(dataDir, "search"), vectors: null, redisUrl });
  const models = openReadModels(store.names.prefix, config);
  try {
    const stream = app === ORG_APP ? store.names.orgStream() : store.names.appStream(app);
    await whileUnavailable(() => rebuildProjections(store, [...models.select("files"), ...models.select("search")], { prefix: store.names.prefix, app, stream }));
  } finally {
    await models.close();
  }
}

/**
 * The memory ids `query` finds (BM25, at most 100) in the search snapshots under searchDir, caught up from
 * the log as `memledger search` reads them: the app's index and the org's.
 */
export async function searchSnapshot(store: EventStore, searchDir: string, app: string, query: string): Promise<string[]> {
  const indexes = [];
  for (const name of app === ORG_APP ? [ORG_APP] : [app, ORG_APP]) {
    const index = await openSearchIndex(searchDir, name);
    const stream = name === ORG_APP ? store.names.orgStream() : store.names.appStream(name);
    await whileUnavailable(() =>
      store.replay(stream, { fromSeq: index.appliedSeq + 1 }, (events) => index.ingest(events.filter((e) => e.seq > index.appliedSeq))).catch((err) => {
        if (!(err instanceof MemledgerError && err.code === ErrorCode.not_found)) throw err;
        return 0;
      }),
    );
    indexes.push(index);
  }
  return (await retrieve(indexes, query, { k: 100, mode: "bm25" })).map((hit) => hit.memoryId).sort();
}

const describeDiff = (actual: string[], expected: string[]): string => {
  const missing = expected.filter((id) => !actual.includes(id));
  const extra = actual.filter((id) => !expected.includes(id));
  return `${actual.length} hits, a rebuild ${expected.length} (missing ${missing.slice(0, 3).join(", ") || "none"}; extra ${extra.slice(0, 3).join(", ") || "none"})`;
};

/**
 * Rebuilds files and search of each app from the log into a fresh directory, then waits (bounded) until
 * each instance's files tree equals it; compares search answers with the rebuild's (each instance's
 * snapshot caught up from the log, and the live indexes through the `search` verb), and the live claims
 * in Redis with a fold of the log.
 */
export async function compareReadModels(options: {
  prefix: string;
  apps: string[];
  instances: ReadModelTarget[];
  scratchDir: string;
  redisUrl: string;
  queries: string[];
  nc: NatsConnection;
  /** How long an instance may take to reach what the rebuild holds. */
  timeoutMs?: number;
  /**
   * Asks the running instances too (the `search` verb over their live indexes), with minSeq at the
   * stream's end, so an instance whose projection stalled answers `unavailable` instead of less.
   */
  client?: MemoryClient;
  /** Says how long each step took. */
  log?: (line: string) => void;
}): Promise<ReadModelCheck> {
  const started = performance.now();
  const step = (what: string) => options.log?.(`${what} (${Math.round(performance.now() - started)} ms)`);
  const store = await openStore(options.nc, options.prefix);
  const rebuilt = join(options.scratchDir, `rebuilt-${Date.now()}`);
  const differences: string[] = [];
  const timeoutMs = options.timeoutMs ?? 30_000;
  try {
    for (const app of options.apps) await rebuildInto(store, app, rebuilt, options.redisUrl);
    step("rebuilt files and search");
    const deadline = Date.now() + timeoutMs;
    for (const app of options.apps) {
      const expected = await treeDigest(join(rebuilt, "files", app));
      for (const instance of options.instances) {
        // The instance projects asynchronously: wait (bounded) for it to reach what the rebuild holds.
        let actual = await treeDigest(join(instance.dataDir, "files", app));
        while (actual.digest !== expected.digest && Date.now() < deadline) {
          await sleep(250);
          actual = await treeDigest(join(instance.dataDir, "files", app));
        }
        if (actual.digest !== expected.digest) differences.push(`${instance.name} files of ${app} differ from a rebuild: ${treeDiff(actual.files, expected.files)}`);
      }
    }
    step("compared files");
    for (const query of options.queries) {
      for (const app of options.apps) {
        const expected = await searchSnapshot(store, join(rebuilt, "search"), app, query);
        for (const instance of options.instances) {
          const actual = await searchSnapshot(store, join(instance.dataDir, "search"), app, query);
          if (actual.join() !== expected.join()) differences.push(`${instance.name} search snapshot "${query}" in ${app}: ${describeDiff(actual, expected)}`);
        }
        // The live indexes of whichever instances answer (the queue group spreads the requests).
        const client = options.client;
        if (client && app === client.options.app) {
          client.observe(await whileUnavailable(() => store.lastSeq(store.names.appStream(app))));
          for (let ask = 0; ask < 2 * options.instances.length; ask++) {
            try {
              const answer = (await whileUnavailable(() => client.search(query, { mode: "bm25", limit: 100 }), timeoutMs)).map((hit) => hit.memoryId).sort();
              if (answer.join() !== expected.join()) differences.push(`live search "${query}" in ${app}: ${describeDiff(answer, expected)}`);
            } catch (err) {
              differences.push(`live search "${query}" in ${app}: ${(err as Error).message}`);
              break;
            }
          }
        }
      }
    }
    step("compared search");
  } finally {
    await rm(rebuilt, { recursive: true, force: true });
  }
  const claimDifferences: string[] = [];
  const redis = new Redis(options.redisUrl, { maxRetriesPerRequest: 3 });
  try {
    for (const app of options.apps.filter((a) => a !== ORG_APP)) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const now = Date.now();
        const folded = liveClaimsOf(await readStream(store, store.names.appStream(app)), now);
        const projected = (await liveClaims(redis, `${options.prefix}:claims`, app, { now })).map((c) => `${c.kind} ${c.name} ${c.holder} ${c.expiresAt}`).sort();
        if (JSON.stringify(folded) === JSON.stringify(projected)) break;
        if (Date.now() > deadline) {
          claimDifferences.push(`live claims of ${app} differ: log: [${folded.join("; ")}] redis: [${projected.join("; ")}]`);
          break;
        }
        await sleep(250);
      }
    }
  } finally {
    redis.disconnect();
  }
  step("compared claims");
  return { differences, claimDifferences };
}

/** Resolves once every promotion request of the app has a decision (the curator may be restarting). */
export async function waitForDecisions(nc: NatsConnection, prefix: string, app: string, timeoutMs = 60_000): Promise<{ undecided: number }> {
  const store = await openStore(nc, prefix);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const events = await readStream(store, store.names.appStream(app));
    const requested = new Set(events.filter((e) => e.event.type === "memory.promotion_requested").map((e) => (e.event.data as { promotionId: string }).promotionId));
    for (const e of events) {
      if (e.event.type === "memory.promotion_accepted" || e.event.type === "memory.promotion_rejected") requested.delete((e.event.data as { promotionId: string }).promotionId);
    }
    if (requested.size === 0 || Date.now() > deadline) return { undecided: requested.size };
    await sleep(300);
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs `work` again while it fails with `unavailable` (a node just restarted, a leader being elected, an
 * instance coming back), for up to timeoutMs; any other failure, or the last one, is thrown.
 */
export async function whileUnavailable<T>(work: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await work();
    } catch (err) {
      if (!(err instanceof MemledgerError && err.code === ErrorCode.unavailable) || Date.now() > deadline) throw err;
      await sleep(500);
    }
  }
}

// ---- the chaos loop ---------------------------------------------------------------------------------

export type KillTarget = "up" | "curator" | "projection";

export interface ChaosOptions {
  /** NATS URL (one server or a cluster's URLs, comma separated). */
  nats: string;
  redisUrl: string;
  iterations: number;
  /** Seeds agents, targets and moments: the same seed replays the same choices (not the same timing). */
  seed?: string;
  /** Agents writing, promoting and claiming in each iteration (default 6). */
  agents?: number;
  /** How long the agents work in each iteration; the kill lands at a random moment inside it (default 4 s). */
  writeMs?: number;
  /** `up` instances side by side, each with its own data directory (default 2). */
  instances?: number;
  /** What may be killed (default all): an `up` instance, the curator process, or the projection leader (the instance writing the shared claims store). */
  targets?: KillTarget[];
  /** How long read models may take to catch up with a rebuild after an iteration (default 30 s). */
  settleMs?: number;
  /** Stop at the first iteration that breaks a guarantee (the test does; the benchmark counts). */
  stopOnViolation?: boolean;
  log?: (line: string) => void;
}

export interface ChaosIteration {
  iteration: number;
  target: string;
  killedAfterMs: number;
  restartMs: number;
  acked: number;
  retries: number;
  violations: string[];
  seconds: number;
}

export interface ChaosSummary {
  prefix: string;
  iterations: ChaosIteration[];
  kills: Record<KillTarget, number>;
  acked: number;
  unresolved: number;
  events: number;
  lost: number;
  duplicates: number;
  promotions: { requested: number; accepted: number; rejected: number };
  /** Every broken guarantee, with the iteration it was found in. */
  violations: string[];
}

/**
 * The chaos loop: `up` instances (each its own data directory) and a curator process on one NATS, agents
 * writing, approving, promoting and claiming with idempotency keys; in each iteration one target is
 * SIGKILLed at a random moment and started again. After each iteration every guarantee is checked over
 * the whole log so far (verifyLedger) and every instance's read models against a rebuild.
 */
export async function runChaos(options: ChaosOptions): Promise<ChaosSummary> {
  const log = options.log ?? (() => undefined);
  const random = seedrandom(options.seed ?? "chaos");
  const prefix = `chaos${createHash("sha256").update(`${options.seed ?? ""}${Date.now()}${Math.random()}`).digest("hex").slice(0, 8)}`;
  const app = "chaos";
  const root = await mkdtemp(join(tmpdir(), "memledger-chaos-"));
  const targets = options.targets ?? ["up", "curator", "projection"];
  // Short leases and heartbeats: a killed leader's store is taken over within seconds.
  const env = (dataDir: string) =>
    cliEnv({ MEMLEDGER_DATA: dataDir, MEMLEDGER_VECTORS: "off", REDIS_URL: options.redisUrl, MEMLEDGER_LEASE_TTL_MS: "3000", MEMLEDGER_HEARTBEAT_MS: "500" });
  const global = ["--nats", options.nats, "--prefix", prefix];
  const instances = Array.from({ length: options.instances ?? 2 }, (_, i) => {
    const dataDir = join(root, `up-${i}`);
    return { name: `up-${i}`, dataDir, process: new MemledgerProcess(`up-${i}`, ["up", ...global, "--no-embedded"], env(dataDir)) };
  });
  const curator = new MemledgerProcess("curator", ["curator", ...global], env(join(root, "curator")));
  const admin = await connectNats({ servers: options.nats, name: `chaos-admin-${prefix}` });
  const agentConns: NatsConnection[] = [];
  const all = new AckLedger();
  const summary: ChaosSummary = {
    prefix,
    iterations: [],
    kills: { up: 0, curator: 0, projection: 0 },
    acked: 0,
    unresolved: 0,
    events: 0,
    lost: 0,
    duplicates: 0,
    promotions: { requested: 0, accepted: 0, rejected: 0 },
    violations: [],
  };
  try {
    await Promise.all([...instances.map((i) => i.process), curator].map(async (p) => log(`${p.name} ready in ${Math.round(await p.start())} ms`)));
    for (let i = 0; i < (options.agents ?? 6); i++) agentConns.push(await connectNats({ servers: options.nats, name: `chaos-agent-${i}` }));

    for (let iteration = 1; iteration <= options.iterations; iteration++) {
      const started = performance.now();
      const agents = new Agents({ prefix, app, connections: agentConns, seed: `${options.seed ?? "chaos"}-${iteration}`, label: `i${iteration}x`, pauseMs: 100, retryForMs: 60_000 }).start();
      const writeMs = options.writeMs ?? 4_000;
      const killAt = Math.round(writeMs * (0.15 + 0.7 * random()));
      await sleep(killAt);
      const kind = targets[Math.floor(random() * targets.length)]!;
      const victim = await chooseVictim(kind, instances, curator, admin, prefix, random);
      await victim.kill("SIGKILL");
      summary.kills[kind]++;
      await sleep(200 + random() * 1_300);
      const restartMs = Math.round(await victim.start());
      await sleep(Math.max(0, writeMs - killAt));
      const ledger = await agents.stop();
      all.acks.push(...ledger.acks);
      all.refused.push(...ledger.refused);
      all.unresolved.push(...ledger.unresolved);
      all.retries += ledger.retries;

      // Settle: every promotion decided, then the whole log checked and every instance's read models compared.
      const violations: string[] = [];
      const { undecided } = await waitForDecisions(admin, prefix, app, options.settleMs ?? 60_000);
      if (undecided > 0) violations.push(`${undecided} promotion requests undecided after ${options.settleMs ?? 60_000} ms`);
      const report = await verifyLedger(admin, prefix, app, all);
      violations.push(...report.lost, ...report.duplicates, ...report.promotionViolations, ...report.claimViolations);
      const query = `i${iteration}x${Math.floor(random() * agentConns.length)}`;
      const probe = new MemoryClient(admin, { app, as: "chaos-probe", prefix, timeoutMs: 6_000 });
      const readModels = await compareReadModels({
        prefix,
        apps: [app, ORG_APP],
        instances: instances.map(({ name, dataDir }) => ({ name, dataDir })),
        scratchDir: root,
        redisUrl: options.redisUrl,
        queries: [query],
        nc: admin,
        client: probe,
        timeoutMs: options.settleMs ?? 30_000,
      });
      violations.push(...readModels.differences, ...readModels.claimDifferences);

      Object.assign(summary, {
        acked: all.acks.length,
        unresolved: all.unresolved.length,
        events: report.events,
        lost: report.lost.length,
        duplicates: report.duplicates.length,
        promotions: report.promotions,
      });
      summary.violations.push(...violations.map((v) => `iteration ${iteration}: ${v}`));
      const result: ChaosIteration = {
        iteration,
        target: `${kind} (${victim.name})`,
        killedAfterMs: killAt,
        restartMs,
        acked: ledger.acks.length,
        retries: ledger.retries,
        violations,
        seconds: (performance.now() - started) / 1000,
      };
      summary.iterations.push(result);
      log(
        `iteration ${iteration}: killed ${result.target} after ${killAt} ms, ready again in ${restartMs} ms; ${ledger.acks.length} commands acknowledged (${ledger.retries} retries, ${ledger.unresolved.length} unresolved); ` +
          `log ${report.events} events, lost ${report.lost.length}, duplicated ${report.duplicates.length}; ${violations.length === 0 ? "all checks hold" : `VIOLATIONS: ${violations.join(" | ")}`} (${result.seconds.toFixed(1)} s)`,
      );
      if (violations.length > 0 && options.stopOnViolation) break;
    }
  } catch (err) {
    for (const p of [...instances.map((i) => i.process), curator]) log(`--- ${p.name} output ---\n${p.output}`);
    throw err;
  } finally {
    await Promise.allSettled([...instances.map((i) => i.process.stop()), curator.stop()]);
    await Promise.allSettled(agentConns.map((nc) => nc.close()));
    await cleanUp(admin, prefix, options.redisUrl).catch((err) => log(`cleanup: ${(err as Error).message}`));
    await admin.close().catch(() => undefined);
    await rm(root, { recursive: true, force: true });
  }
  return summary;
}

/** The process to kill: a random `up`, the curator, or the instance leading the shared claims projection. */
async function chooseVictim(
  kind: KillTarget,
  instances: { name: string; process: MemledgerProcess }[],
  curator: MemledgerProcess,
  nc: NatsConnection,
  prefix: string,
  random: () => number,
): Promise<MemledgerProcess> {
  if (kind === "curator") return curator;
  if (kind === "projection") {
    const presences = await whileUnavailable(() => listInstances(nc, naming(prefix)));
    const leader = presences.find((p) => p.state === "live" && p.roles.some((r) => r.projection === "claims" && r.role === "leader"));
    const found = instances.find((i) => i.process.pid !== undefined && i.process.pid === leader?.pid);
    if (found) return found.process;
  }
  return instances[Math.floor(random() * instances.length)]!.process;
}

/** Removes what the run created: the prefix's streams, KV buckets and object stores, its Redis keys. */
async function cleanUp(nc: NatsConnection, prefix: string, redisUrl: string): Promise<void> {
  const jsm = await jetstreamManager(nc);
  for await (const name of jsm.streams.names()) if (isStreamOfPrefix(prefix, name)) await jsm.streams.delete(name).catch(() => undefined);
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 2 });
  try {
    await unlinkMatching(redis, `${escapeGlob(prefix)}:*`);
  } finally {
    redis.disconnect();
  }
}
