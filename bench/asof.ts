/**
 * `npm run bench -- asof`: as-of reads (show, index, search, hydrate) over a stream of 100k events
 * (`--events N`), folded from the log alone and from a verified snapshot (services/audit/snapshots.ts).
 *
 * 1. Appends N synthetic events in a fresh prefix with pipelined publishes: memories (proposed, approved,
 *    revised, rejected, rolled back, superseded; ~300-byte bodies, paths, branches) for `--memory-ratio`
 *    of the events (default 0.1), the rest claims (claimed, renewed, released) and sessions (started, ended).
 * 2. Times each read as of `--at` (default: 95% of the stream, so the newest snapshot is behind the bound)
 *    with `--no-snapshot` semantics (fold from the first event), `--runs` times (default 2).
 * 3. Writes the snapshots (`memledger snapshot`, every `--every` events, default 10,000) and times that.
 * 4. Times the same reads again from the snapshot (`--runs` times, default 3), and checks each answer
 *    equals the one folded from the log.
 * The functions the CLI calls are timed (process start and connect, ~0.3 s, are not). The stream and the
 * snapshot bucket are deleted afterwards, also on error.
 */
import { Objm } from "@nats-io/obj";
import seedrandom from "seedrandom";
import { claimIdOf } from "../commands/claim.js";
import { memoryView } from "../commands/memory.js";
import { naming } from "../events/subjects.js";
import { encodeEvent } from "../events/upcast.js";
import { CURRENT_SCHEMA_VERSION, type LedgerEvent } from "../schemas/events.js";
import { memoryHistory, type AsOf } from "../services/audit/history.js";
import { writeSnapshots } from "../services/audit/snapshots.js";
import { hydrateAsOf, memoryIndexAsOf, searchAsOf } from "../services/audit/time-travel.js";
import { fastUuidv7 } from "../services/command-handler.js";
import { EventStore } from "../services/event-store.js";
import { connectNats } from "../services/nats.js";
import { benchPrefix, fmt, fmtInt, intOption, machineInfo, table, type BenchArgs, type Benchmark } from "./util.js";

const APP = "bench";
const GOAL_SECONDS = 2;
const WORDS = (
  "payment webhook retry idempotency key stripe invoice ledger refund customer session token expired cache redis queue worker deploy " +
  "rollback migration schema index postgres replica timeout circuit breaker fixture build lint module config secret vault certificate " +
  "latency alert metric trace error handler router endpoint request response auth scope role review release branch merge commit"
).split(" ");
const PATHS = ["src/payments/webhook.ts", "src/auth/session.ts", "lib/ledger/client.ts", "services/billing/invoice.go", "infra/deploy.yaml"];
const KINDS = ["note", "fact", "decision", "convention", "procedure", "fragile"] as const;
const AGENTS = Array.from({ length: 20 }, (_, i) => `agent-${i}`);
const QUERIES = ["stripe webhook retry"];

/** Events of interleaved memory, claim and session lifecycles, as the command handler builds envelopes (unchained). */
export function* generate(prefix: string, total: number, memoryRatio: number, seed = 7): Generator<{ subject: string; event: LedgerEvent }> {
  const random = seedrandom(String(seed));
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const names = naming(prefix);
  let clock = Date.now() - total * 1000;
  let memories = 0;
  let emitted = 0;
  const scripts: Generator<{ subject: string; event: LedgerEvent }, void, void>[] = [];
  const emit = (kind: "memory" | "claim" | "session", id: string, type: LedgerEvent["type"], data: unknown, actor: string, scope = "app", sessionId: string | null = null, branch: string | null = null) => {
    clock += 1 + Math.floor(random() * 1000);
    const eventId = fastUuidv7();
    const event = {
      id: eventId, type, schemaVersion: CURRENT_SCHEMA_VERSION[type], aggregateId: id, app: APP, scope,
      actor: actor.startsWith("human:") ? { kind: "human", id: actor.slice(6) } : { kind: "agent", id: actor },
      sessionId, transcriptRef: null, git: branch ? { branch } : null, causationId: null, correlationId: eventId,
      time: new Date(clock).toISOString(), data,
    } as LedgerEvent;
    return { subject: names.aggregate(APP, kind, id), event };
  };
  const words = (n: number) => Array.from({ length: n }, () => pick(WORDS)).join(" ");
  function* memory() {
    const id = fastUuidv7();
    const author = pick(AGENTS);
    const scope = random() < 0.7 ? "app" : random() < 0.5 ? "team:payments" : `agent:${author}`;
    let version = 0;
    const approved: number[] = [];
    do {
      version++;
      yield emit("memory", id, "memory.proposed", { version, title: words(5), body: `${words(30)}\n\n${words(20)}`, kind: pick(KINDS), tags: [pick(WORDS)], paths: random() < 0.5 ? [pick(PATHS)] : [], importance: 1 + Math.floor(random() * 5) }, author, scope, null, random() < 0.5 ? `feat/${pick(WORDS)}` : null);
      const r = random();
      if (r < 0.85) {
        yield emit("memory", id, "memory.approved", { version }, "human:alice", scope);
        approved.push(version);
      } else if (r < 0.95) yield emit("memory", id, "memory.rejected", { version, reason: words(3) }, "human:alice", scope);
      else return;
    } while (random() < 0.5 && version < 5);
    if (approved.length >= 2 && random() < 0.2) yield emit("memory", id, "memory.rolled_back", { fromVersion: approved.at(-1)!, toVersion: approved[0]! }, "human:alice", scope);
    if (random() < 0.05) yield emit("memory", id, "memory.superseded", { by: null, reason: words(3) }, "human:alice", scope);
  }
  function* claim() {
    const name = `t${fastUuidv7().slice(-12)}`;
    const id = claimIdOf("task", name);
    const holder = pick(AGENTS);
    const leaseMs = 600_000;
    yield emit("claim", id, "claim.claimed", { kind: "task", name, holder, leaseMs, expiresAt: new Date(clock + leaseMs).toISOString(), takeoverOf: null, priority: 3 }, holder);
    for (let i = Math.floor(random() * 3); i > 0; i--) yield emit("claim", id, "claim.renewed", { holder, leaseMs, expiresAt: new Date(clock + leaseMs).toISOString() }, holder);
    if (random() < 0.9) yield emit("claim", id, "claim.released", { holder, done: random() < 0.7 }, holder);
  }
  function* session() {
    const id = fastUuidv7();
    const agent = pick(AGENTS);
    yield emit("session", id, "session.started", { agentId: agent, task: words(3), branch: `feat/${pick(WORDS)}`, worktree: `/work/${agent}` }, agent, `agent:${agent}`, id);
    if (random() < 0.85) yield emit("session", id, "session.ended", { summary: words(3) }, agent, `agent:${agent}`, id);
  }
  while (emitted < total) {
    while (scripts.length < 200) {
      if (memories < memoryRatio * (emitted + 1)) {
        memories++;
        scripts.push(memory());
      } else scripts.push(random() < 2 / 3 ? claim() : session());
    }
    const at = Math.floor(random() * scripts.length);
    const step = scripts[at]!.next();
    if (step.done) {
      scripts.splice(at, 1);
      continue;
    }
    emitted++;
    yield step.value;
  }
}

/** Wall seconds, and this process's CPU seconds (user + system): on a shared, loaded machine the second is the steadier figure. */
async function timed<T>(work: () => Promise<T>): Promise<{ value: T; seconds: number; cpu: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await work();
  const c = process.cpuUsage(c0);
  return { value, seconds: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function run(args: BenchArgs): Promise<number> {
  const total = intOption(args, "events", 100_000, 100);
  const every = intOption(args, "every", 10_000, 100);
  const coldRuns = intOption(args, "runs", 2);
  const warmRuns = intOption(args, "warm-runs", 3);
  const ratio = Number(args.options.get("memory-ratio") ?? 0.1);
  const prefix = benchPrefix("asof");
  const nc = await connectNats({ servers: process.env.NATS_URL ?? "nats://127.0.0.1:4222", name: "bench-asof" });
  const store = await EventStore.open(nc, naming(prefix));
  const stream = await store.ensureAppStream(APP);
  const log = (line: string) => console.log(line);
  log(`as-of reads at ${fmtInt(total)} events (memory ratio ${ratio}), prefix ${prefix}; ${JSON.stringify(machineInfo())}`);
  try {
    // 1. The stream.
    const t0 = performance.now();
    let inflight: Promise<unknown>[] = [];
    let memoryId: string | null = null;
    for (const { subject, event } of generate(prefix, total, ratio)) {
      inflight.push(store.js.publish(subject, encodeEvent(event), { timeout: 30_000 }));
      if (event.type === "memory.approved" && memoryId === null && inflight.length > 100) memoryId = event.aggregateId;
      if (inflight.length >= 2000) {
        await Promise.all(inflight);
        inflight = [];
      }
    }
    await Promise.all(inflight);
    const lastSeq = await store.lastSeq(stream);
    log(`appended ${fmtInt(lastSeq)} events in ${fmt((performance.now() - t0) / 1000)} s`);
    const at = intOption(args, "at", Math.floor(lastSeq * 0.95));
    const asOf: AsOf = { seq: at };
    const readable = () => true;

    const reads: Record<string, (noSnapshot: boolean) => Promise<string>> = {
      show: async () => JSON.stringify(memoryView(memoryId!, (await memoryHistory(store, APP, memoryId!, asOf)).state, at)),
      index: async (noSnapshot) => (await memoryIndexAsOf(store, APP, asOf, { noSnapshot })).markdown,
      // One query per read, as one `memledger search --as-of-seq` process runs.
      search: async (noSnapshot) => (await searchAsOf(store, APP, QUERIES[0]!, asOf, { k: 10, mode: "bm25", readable, noSnapshot })).hits.map((h) => h.memoryId).join(","),
      hydrate: async (noSnapshot) =>
        (await hydrateAsOf(store, APP, { agent: "agent-3", task: "stripe webhook retry", branch: null, paths: ["src/payments"], budget: 4000, readable }, asOf, { noSnapshot })).pack.markdown,
    };
    const results: Record<string, { cold: number[]; warm: number[]; coldCpu: number[]; warmCpu: number[]; answer?: string; same: boolean }> = {};
    // 2. Folded from the log alone.
    for (const [name, read] of Object.entries(reads)) {
      const r: (typeof results)[string] = { cold: [], warm: [], coldCpu: [], warmCpu: [], same: true };
      results[name] = r;
      for (let i = 0; i < coldRuns; i++) {
        const { value, seconds, cpu } = await timed(() => read(true));
        r.cold.push(seconds);
        r.coldCpu.push(cpu);
        r.answer = value;
      }
      log(`  ${name} as of ${at}, from the log: ${r.cold.map((s) => fmt(s, 3)).join(", ")} s (cpu ${r.coldCpu.map((s) => fmt(s, 3)).join(", ")} s)`);
    }
    // 3. Snapshots.
    const written = await timed(() => writeSnapshots(store, APP, { every }));
    const bytes = written.value.written.reduce((n, w) => n + w.bytes, 0);
    log(`wrote ${written.value.written.length} snapshots (every ${fmtInt(every)}; ${fmt(bytes / 1e6, 1)} MB in all; the last ${fmt((written.value.written.at(-1)?.bytes ?? 0) / 1e6, 1)} MB) in ${fmt(written.seconds)} s`);
    // 4. From the newest snapshot at or below the bound.
    for (const [name, read] of Object.entries(reads)) {
      const r = results[name]!;
      for (let i = 0; i < warmRuns; i++) {
        const { value, seconds, cpu } = await timed(() => read(false));
        r.warm.push(seconds);
        r.warmCpu.push(cpu);
        if (value !== r.answer) r.same = false;
      }
      log(`  ${name} as of ${at}, from a snapshot: ${r.warm.map((s) => fmt(s, 3)).join(", ")} s (cpu ${r.warmCpu.map((s) => fmt(s, 3)).join(", ")} s)${r.same ? "" : "  ANSWER DIFFERS"}`);
    }
    const rows = Object.entries(results).map(([name, r]) => [
      name,
      fmt(median(r.cold), 3),
      fmt(median(r.warm), 3),
      fmt(median(r.cold) / median(r.warm), 1),
      fmt(median(r.coldCpu), 3),
      fmt(median(r.warmCpu), 3),
      median(r.warm) <= GOAL_SECONDS ? "yes" : "NO",
      r.same ? "yes" : "NO",
    ]);
    log(`\nas of seq ${fmtInt(at)} of ${fmtInt(lastSeq)} (snapshots every ${fmtInt(every)}: the newest below the bound is ${fmtInt(Math.floor(at / every) * every)}); median seconds; load average now ${machineInfo().loadavg.map((l) => fmt(l, 1)).join(" ")}`);
    log(table(["read", "wall, log", "wall, snapshot", "ratio", "cpu, log", "cpu, snapshot", `wall <= ${GOAL_SECONDS} s`, "same answer"], rows));
    return Object.values(results).every((r) => r.same) ? 0 : 1;
  } finally {
    await store.deleteStream(stream).catch(() => undefined);
    await new Objm(nc).open(store.names.asOfSnapshotsBucket()).then((b) => b.destroy(), () => undefined);
    await nc.close();
  }
}

export const asOfBenchmark: Benchmark = {
  name: "asof",
  summary: "as-of show/index/search/hydrate at 100k events, folded from the log and from a snapshot",
  usage: "[--events 100000] [--every 10000] [--at SEQ] [--memory-ratio 0.1] [--runs 2] [--warm-runs 3]",
  run,
};
