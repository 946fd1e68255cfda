/**
 * `npm run bench -- peers`: the same events through memledger and through a peer, Emmett's PostgreSQL
 * event store (@event-driven-io/emmett-postgresql 0.42, against the PostgreSQL on this machine), in one
 * run, phase by phase in turn (memledger, then the peer) so a change in the machine's load hits both.
 *
 * Equivalent work on both sides (bench/peers/workload.ts spells it once):
 * - append with optimistic concurrency: each writer proposes a memory (a new aggregate: expected "no
 *   stream" / expected subject sequence 0), then approves it (expected: the proposal's version), one
 *   append per operation, one stream per aggregate. memledger runs its one write path, the
 *   CommandHandler (decide, schema check, hash chain, EventStore.append with Nats-Expected-Last-Subject-
 *   Sequence), in this process: Emmett is a library in its app's process, so the fair counterpart is
 *   memledger's in-process path, not the command service behind a NATS request. The peer decides with
 *   the same decider, builds the same envelope, and calls appendToStream with expectedStreamVersion
 *   (it skips memledger's schema check and hash chain: less work for the peer, not more).
 *   Neither side reads before the approve: memledger's handler has the state cached, the peer's writer
 *   holds it from its own append.
 * - sequential: one writer; p50 and p99 latency. Concurrent: 64 writers in one process; throughput.
 * - rebuild: active memories per kind, folded from the first event: memledger's ordered replay
 *   (EventStore.replay) against Emmett's readMessagesBatch over consecutive ranges of global position
 *   (not its consumer: see bench/peers/emmett.mjs, rebuild).
 * Durability differs by default: PostgreSQL waits for its WAL flush on each commit, a single JetStream
 * server acknowledges before fsync. `--peer-async-commit` gives the peer synchronous_commit=off, the
 * same promise as JetStream's; the output says which ran.
 * Either side failing an operation, or a rebuilt projection that differs from what its writers
 * approved, fails the benchmark (exit code 1).
 */
import { fork, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { memoryDecider } from "../commands/memory.js";
import { naming } from "../events/subjects.js";
import { CommandHandler, newAggregateId } from "../services/command-handler.js";
import { EventStore } from "../services/event-store.js";
import { connectNats } from "../services/nats.js";
import { APP, ActiveByKind, WriterScript, approveCommand, countsObject, proposeCommand, sumTallies } from "./peers/workload.js";
import {
  benchPrefix,
  deleteStreamsWithPrefix,
  flag,
  fmt,
  fmtInt,
  intOption,
  machineInfo,
  measure,
  table,
  type BenchArgs,
  type Benchmark,
  type PhaseResult,
} from "./util.js";

/** bench/peers/ in the source tree (this file runs from dist/bench/). */
const PEERS_DIR = fileURLToPath(new URL("../../bench/peers/", import.meta.url));
const PEER_SCRIPT = `${PEERS_DIR}emmett.mjs`;
const DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres";

/** The peer's package is installed on demand, from its own lockfile, into bench/peers/node_modules only. */
function ensurePeerInstalled(log: (l: string) => void): void {
  if (existsSync(`${PEERS_DIR}node_modules/@event-driven-io/emmett-postgresql/package.json`)) return;
  log(`installing the peer (npm ci --prefix bench/peers) ...`);
  const result = spawnSync("npm", ["ci", "--prefix", PEERS_DIR, "--no-audit", "--no-fund"], { stdio: "inherit" });
  if (result.status !== 0) throw new Error(`npm ci --prefix bench/peers failed (exit ${result.status ?? result.signal})`);
}

type Reply = { ok: true; cmd: string; result: unknown } | { ok: false; cmd?: string; error: string };

/** The peer process: one request at a time; it exiting or failing rejects what waits on it. */
class Peer {
  private waiting: { resolve(v: unknown): void; reject(e: Error): void } | null = null;
  private exited: Error | null = null;

  private constructor(private readonly child: ChildProcess) {
    child.on("message", (m: Reply) => {
      const w = this.waiting;
      this.waiting = null;
      if (!w) return;
      if (m.ok) w.resolve(m.result);
      else w.reject(new Error(`the peer failed${m.cmd ? ` in ${m.cmd}` : ""}: ${m.error}`));
    });
    child.on("exit", (code, signal) => {
      this.exited = new Error(`the peer process exited (${code ?? signal})`);
      this.waiting?.reject(this.exited);
      this.waiting = null;
    });
  }

  static async start(): Promise<Peer> {
    const child = fork(PEER_SCRIPT, [], { cwd: PEERS_DIR, stdio: ["ignore", "inherit", "inherit", "ipc"] });
    const peer = new Peer(child);
    await new Promise<void>((resolve, reject) => {
      peer.waiting = { resolve: () => resolve(), reject };
      child.once("error", reject);
    });
    return peer;
  }

  request<T>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    if (this.exited) return Promise.reject(this.exited);
    return new Promise<T>((resolve, reject) => {
      this.waiting = { resolve: resolve as (v: unknown) => void, reject };
      this.child.send({ cmd, ...args });
    });
  }

  kill(): void {
    if (this.child.exitCode === null) this.child.kill("SIGKILL");
  }
}

interface RebuildRun {
  events: number;
  seconds: number;
}
const best = (runs: RebuildRun[]) => Math.max(...runs.map((r) => r.events / r.seconds));

interface Row {
  row: string;
  memledger: number;
  peer: number;
  unit: string;
  higherIsBetter: boolean;
  digits: number;
}

async function run(args: BenchArgs): Promise<number> {
  const n = intOption(args, "n", 5000);
  const concurrentN = intOption(args, "concurrent-n", 20000);
  const warmup = intOption(args, "warmup", 500, 0);
  const concurrency = intOption(args, "concurrency", 64);
  const rounds = intOption(args, "rounds", 3);
  const batchSize = intOption(args, "batch", 2000);
  const poolSize = intOption(args, "pool", 64);
  const asyncCommit = flag(args, "peer-async-commit");
  const pgUrl = typeof args.options.get("pg") === "string" ? String(args.options.get("pg")) : (process.env.MEMLEDGER_PEERS_PG_URL ?? DEFAULT_PG_URL);
  const log = (line: string) => console.log(line);

  ensurePeerInstalled(log);
  const base = benchPrefix("benchpeers");
  const db = `memledger_peers_${process.pid}_${base.slice(-8)}`;
  const nc = await connectNats({ name: `bench-peers-${base}` });
  let peer: Peer | undefined;
  let failed = false;
  const cleanup = async () => {
    peer?.kill();
    const drop = spawnSync(process.execPath, [PEER_SCRIPT, "--drop", pgUrl, db], { cwd: PEERS_DIR, stdio: "inherit" });
    const deleted = await deleteStreamsWithPrefix(nc, base).catch(() => [] as string[]);
    log(`cleanup: database ${db} ${drop.status === 0 ? "dropped" : "NOT dropped"}; streams deleted: ${deleted.join(", ") || "none"}`);
  };
  const onSignal = () => void cleanup().finally(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  try {
    log(`peers benchmark: memledger (NATS ${nc.info?.version}, prefix ${base}) vs Emmett on PostgreSQL (database ${db}); ` +
      `sequential ${fmtInt(n)} ops, ${concurrency} writers ${fmtInt(concurrentN)} ops, +${warmup} warm-up each, rebuild best of ${rounds}; ` +
      `node ${process.version}, load ${machineInfo().loadavg.join(" ")}`);
    peer = await Peer.start();
    const setup = await peer.request<{ server: string; emmett: string; poolSize: number; synchronousCommit: string }>("setup", { adminUrl: pgUrl, db, poolSize, asyncCommit });
    log(`  peer: Emmett ${setup.emmett}, PostgreSQL ${setup.server}, a pool of ${setup.poolSize} connections, synchronous_commit ${setup.synchronousCommit}` +
      (asyncCommit ? " (acknowledged before the WAL flush, like JetStream's lazy fsync)" : " (PostgreSQL's default: each commit waits for its WAL flush; a single JetStream server acknowledges before fsync)"));

    const store = await EventStore.open(nc, naming(base));
    const stream = await store.ensureAppStream(APP);
    const handler = new CommandHandler(store);
    const writers: WriterScript<string>[] = [];
    let appended = 0;
    const memledgerPhase = async (name: string, writerCount: number, ops: number): Promise<PhaseResult> => {
      const scripts = Array.from({ length: writerCount }, () => new WriterScript<string>());
      writers.push(...scripts);
      const ctxs = scripts.map((_, w) => ({ app: APP, actor: { kind: "agent" as const, id: `agent-${w}` } }));
      const op = async (w: number, i: number) => {
        const script = scripts[w]!;
        if (!script.pending) {
          const id = newAggregateId();
          const command = proposeCommand(i);
          await handler.execute(memoryDecider, id, command, ctxs[w]!, { isNew: true });
          script.pending = { kind: command.kind, state: id };
        } else {
          await handler.execute(memoryDecider, script.pending.state, approveCommand, ctxs[w]!);
          script.approvedOne(script.pending.kind);
          script.pending = null;
        }
        appended++;
      };
      await measure(`${name} warm-up`, writerCount, warmup, (w, i) => op(w, 1_000_000_000 + i));
      return measure(name, writerCount, ops, op);
    };
    const show = (side: string, r: PhaseResult) =>
      log(`  ${side} ${r.name}: ${fmtInt(r.opsPerSec)} ops/s, p50 ${fmt(r.latencyMs.p50, 3)} ms, p99 ${fmt(r.latencyMs.p99, 3)} ms${r.errors ? `, ${r.errors} FAILED` : ""}`);
    const peerPhase = (name: string, writerCount: number, ops: number) =>
      peer!.request<PhaseResult>("append", { name, concurrency: writerCount, warmup, n: ops });

    const mSeq = await memledgerPhase("sequential", 1, n);
    show("memledger", mSeq);
    const pSeq = await peerPhase("sequential", 1, n);
    show("peer     ", pSeq);
    const mCon = await memledgerPhase(`${concurrency} writers`, concurrency, concurrentN);
    show("memledger", mCon);
    const pCon = await peerPhase(`${concurrency} writers`, concurrency, concurrentN);
    show("peer     ", pCon);
    const errors = [mSeq, pSeq, mCon, pCon].filter((r) => r.errors > 0);
    if (errors.length > 0) {
      failed = true;
      throw new Error(`operations failed: ${errors.map((r) => `${r.errors} of ${r.ops} in ${r.name}`).join("; ")}`);
    }

    // Rebuild: the whole app stream, folded, `rounds` times; checked against what the writers approved.
    const expected = sumTallies(writers);
    const mRuns: RebuildRun[] = [];
    for (let r = 0; r < rounds; r++) {
      const fold = new ActiveByKind();
      const t0 = performance.now();
      await store.replay(stream, { batchSize }, (batch) => {
        for (const stored of batch) fold.apply(stored.event);
      });
      const seconds = (performance.now() - t0) / 1000;
      const got = countsObject(fold.counts);
      if (JSON.stringify(got) !== JSON.stringify(expected)) throw new Error(`memledger rebuild: ${JSON.stringify(got)}, but the writers approved ${JSON.stringify(expected)}`);
      if (fold.events !== appended) throw new Error(`memledger rebuild read ${fold.events} events; ${appended} were appended`);
      mRuns.push({ events: fold.events, seconds });
    }
    log(`  memledger rebuild (ordered replay): ${mRuns.map((r) => fmtInt(r.events / r.seconds)).join(", ")} events/s over ${fmtInt(appended)} events`);
    const pRebuild = await peer.request<{ runs: RebuildRun[]; counts: Record<string, number>; appended: number }>("rebuild", { rounds, batchSize });
    log(`  peer rebuild (readMessagesBatch by ranges of position): ${pRebuild.runs.map((r) => fmtInt(r.events / r.seconds)).join(", ")} events/s over ${fmtInt(pRebuild.appended)} events`);
    if (pRebuild.appended !== appended) throw new Error(`the sides appended different numbers of events: memledger ${appended}, peer ${pRebuild.appended}`);
    await peer.request("close", { adminUrl: pgUrl, db });

    const rows: Row[] = [
      { row: "append p50, sequential", memledger: mSeq.latencyMs.p50, peer: pSeq.latencyMs.p50, unit: "ms", higherIsBetter: false, digits: 3 },
      { row: "append p99, sequential", memledger: mSeq.latencyMs.p99, peer: pSeq.latencyMs.p99, unit: "ms", higherIsBetter: false, digits: 3 },
      { row: `append throughput, ${concurrency} writers`, memledger: mCon.opsPerSec, peer: pCon.opsPerSec, unit: "ops/s", higherIsBetter: true, digits: 0 },
      { row: "rebuild (active per kind)", memledger: best(mRuns), peer: best(pRebuild.runs), unit: "events/s", higherIsBetter: true, digits: 0 },
    ];
    const value = (v: number, digits: number) => (digits === 0 ? fmtInt(v) : fmt(v, digits));
    console.log("");
    console.log(table(
      ["row", "memledger", "Emmett (PostgreSQL)", "memledger/peer", "memledger ahead"],
      rows.map((r) => [
        r.row,
        `${value(r.memledger, r.digits)} ${r.unit}`,
        `${value(r.peer, r.digits)} ${r.unit}`,
        `${fmt(r.memledger / r.peer, 2)}×`,
        (r.higherIsBetter ? r.memledger > r.peer : r.memledger < r.peer) ? "yes" : "NO",
      ]),
    ));
    console.log(`\n(latency: lower is better, so memledger/peer < 1 is ahead; throughput: > 1 is ahead. Rebuild: the best of ${rounds} on each side; ` +
      `the peer reads with readMessagesBatch over ranges of ${fmtInt(batchSize)} global positions, memledger in batches of ${fmtInt(batchSize)}.)`);
    console.log(`active memories per kind (each side's equal to what its own writers approved): memledger ${JSON.stringify(expected)}, peer ${JSON.stringify(pRebuild.counts)}`);
    return 0;
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    await cleanup();
    await nc.close().catch(() => undefined);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    if (failed) console.error("peers benchmark FAILED");
  }
}

export const peersBenchmark: Benchmark = {
  name: "peers",
  summary: "memledger vs Emmett's PostgreSQL event store: append with expected version (p50/p99, 64 writers) and a projection rebuild",
  usage: "peers [--n 5000] [--concurrent-n 20000] [--concurrency 64] [--warmup 500] [--rounds 3] [--batch 2000] [--pool 64] [--peer-async-commit] [--pg postgresql://postgres@127.0.0.1:5432/postgres]",
  run,
};
