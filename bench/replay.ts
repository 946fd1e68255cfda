/**
 * `npm run bench -- replay`: how fast the read models rebuild from the log, against how fast the log
 * can be read at all.
 *
 * For each size (`--events 100000,1000000`, `--quick` = 10k) it
 *   1. generates a realistic app stream: valid `LedgerEvent` envelopes built the way the command handler
 *      builds them (proposals with ~300-byte bodies, approvals, revisions, rejections, rollbacks,
 *      supersessions, claims/renews/releases of tasks and locks, sessions), interleaved over ~10% as many
 *      memories as events, published with pipelined JetStream publishes into a stream with the ledger's
 *      own configuration (no expected-sequence or msg-id headers: the generator is the only writer);
 *   2. reads the whole stream with an ordered consumer and does nothing with the messages (raw read: the
 *      ceiling), and again decoding every event (what EventStore.replay does before any projection);
 *   3. rebuilds each projection alone into a fresh target (rebuildProjection: openFresh, replay from
 *      seq 1 until caught up, commit, promote): files, claims, search (BM25 only, the configuration
 *      of the figures before issue 15) and search with its vector channel (what users run: HNSW
 *      vectors, embedder behind a warm embedding cache, see below);
 *   4. rebuilds all three one rebuildProjection after the other (what `memledger rebuild all` did before it
 *      used the single pass), and in
 *      one pass (one replay feeding every fresh target: rebuildProjections), without and with vectors.
 * Vectors (`--vectors both|on|off`, default both): the embedder is bench/search.ts's hashed
 * bag-of-words projection (512-d, not a model: a stand-in with a model's output shape) behind a real
 * CachedEmbedder over this size's own KV bucket. A setup pass (untimed, reported) folds the memories and
 * embeds every active memory's text once, so the bucket is warm; each measured rebuild then gets a new
 * CachedEmbedder (empty in-process LRU, as a new `memledger rebuild` process has) over that bucket, and
 * the row says how many texts reached the embedder (0 when the cache was warm).
 * Each measured rebuild runs in a new node process of its own (bench/rebuild-process.ts), as `memledger
 * rebuild` does: its seconds, CPU (every thread) and peak RSS (the kernel's high-water mark) are that
 * process's alone. `--in-process` runs them in the benchmark's process instead, whose RSS then also
 * holds what generating the stream left behind (about 270 MB at 1M events).
 * Every phase gets its own files root, search directory and Redis key prefix: the keys are removed after
 * the phase, the files when the run ends (see freshJob), the streams too (also on error and on Ctrl-C).
 * The files go under the OS temp directory: `TMPDIR=/dev/shm` (a tmpfs) measures the rebuild without a
 * disk whose file creation is slowed by earlier deletions; the probe line says which one a run had.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { fork } from "node:child_process";
import { Session } from "node:inspector";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { DeliverPolicy, type JetStreamClient } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { Redis } from "ioredis";
import { claimIdOf } from "../commands/claim.js";
import { encodeEvent } from "../events/upcast.js";
import { naming, type Naming } from "../events/subjects.js";
import { decodeEvent } from "../events/upcast.js";
import { claimsProjection, unlinkMatching } from "../projections/claims/target.js";
import { filesProjection } from "../projections/files/index.js";
import type { ProjectionScope } from "../projections/projection.js";
import { embeddingTextOf } from "../projections/search/index.js";
import { searchFromDescription } from "../services/search-definition.js";
import { canRebuildInThread } from "../services/rebuild-threads.js";
import { evolveMemoryRecord, indexedViewOf, isMemoryEvent, type MemoryRecord } from "../projections/search/memory-records.js";
import { CachedEmbedder, KvVectorStore } from "../services/embeddings/cache.js";
import { HashedBagOfWordsEmbedder } from "./search.js";
import { CURRENT_SCHEMA_VERSION, LedgerEvent } from "../schemas/events.js";
import { fastUuidv7 } from "../services/command-handler.js";
import { EventStore } from "../services/event-store.js";
import { connectNats } from "../services/nats.js";
import { rebuildProjection, rebuildProjections } from "../services/projection-runner.js";
import { DEFAULT_REDIS_URL } from "../services/read-models.js";
import { benchPrefix, deleteStreamsWithPrefix, flag, fmt, fmtInt, intOption, machineInfo, table, type BenchArgs, type Benchmark } from "./util.js";
import seedrandom from "seedrandom";

const APP = "bench";
const GOAL = 0.25;

// ---- a deterministic random source -------------------------------------------------------------

/** Seeded, so the same seed gives the same sequence on every machine and a failure can be replayed. */
const rng = (seed: number): (() => number) => seedrandom(String(seed));

// ---- the event stream generator ----------------------------------------------------------------

const WORDS = (
  "payment webhook retry idempotency key stripe invoice ledger refund customer session token expired cache " +
  "redis queue worker deploy rollback migration schema index postgres replica timeout circuit breaker test " +
  "fixture mock build lint typescript module import export config environment secret vault rotate certificate " +
  "latency budget alert dashboard metric trace span log error handler middleware router endpoint request " +
  "response header cookie auth oauth scope role permission review approve release branch merge conflict " +
  "rebase commit hook script docker image container kubernetes pod node cluster shard partition backup restore " +
  "snapshot checkpoint projection event stream consumer producer topic subject memory agent claim lease lock " +
  "task priority owner team convention decision procedure fragile fact note always never before after because"
).split(" ");
const IDENTIFIERS = ["ERR_TOKEN_EXPIRED", "StripeWebhookHandler", "useAuthStore", "PAYMENT_RETRY_LIMIT", "createInvoice", "LedgerClient", "E_CONN_RESET", "withIdempotencyKey"];
const PATHS = ["src/payments/webhook.ts", "src/auth/session.ts", "lib/ledger/client.ts", "services/billing/invoice.go", "infra/deploy.yaml", "packages/ui/Button.tsx"];
const KINDS = ["note", "fact", "decision", "convention", "procedure", "fragile"] as const;
const AGENTS = Array.from({ length: 40 }, (_, i) => `agent-${i}`);
const HUMANS = ["alice", "bob", "carol"];
const TEAMS = ["payments", "platform", "web"];

type Draft = { subject: string; bytes: Uint8Array; event: LedgerEvent };
type Emit = (aggregate: "memory" | "session" | "claim", id: string, type: LedgerEvent["type"], data: unknown, env: Partial<Envelope>) => Draft;
interface Envelope {
  scope: string;
  actor: { kind: "agent" | "human" | "service"; id: string };
  sessionId: string | null;
  git: { branch?: string; worktree?: string } | null;
}

/**
 * Interleaved lifecycles ("scripts") of memories, claims and sessions: a window of scripts is active at
 * once and each event advances a random one, so a memory's events are spread over a stretch of the log
 * as they would be with many agents at work. A new memory script starts whenever memories fall below
 * `memoryRatio` of the events emitted; otherwise a claim (2/3) or session (1/3) script starts.
 */
class StreamGenerator {
  private readonly random: () => number;
  private readonly active: Generator<Draft, void, void>[] = [];
  private readonly names: Naming;
  private emitted = 0;
  memories = 0;
  private clock: number;
  private readonly stepMs: number;
  readonly counts = new Map<string, number>();
  private bodyBytes = 0;
  private bodies = 0;
  private readonly openSessions: { id: string; agent: string }[] = [];

  constructor(prefix: string, private readonly total: number, private readonly memoryRatio: number, seed = 42, private readonly window = Math.max(20, Math.min(2000, Math.floor(total / 100)))) {
    this.random = rng(seed);
    this.names = naming(prefix);
    // The stream ends about now, so the last claims' leases are live, as in a ledger in use.
    this.stepMs = 5_000;
    this.clock = Date.now() - total * this.stepMs;
  }

  get averageBodyBytes(): number {
    return this.bodies ? this.bodyBytes / this.bodies : 0;
  }

  private pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.random() * items.length)]!;
  }

  private chance(p: number): boolean {
    return this.random() < p;
  }

  private readonly emit: Emit = (aggregate, id, type, data, env) => {
    this.clock += 1 + Math.floor(this.random() * this.stepMs * 2);
    const eventId = fastUuidv7();
    // Exactly the command handler's envelope (CommandHandler.envelope), in its field order.
    const event = {
      id: eventId,
      type,
      schemaVersion: CURRENT_SCHEMA_VERSION[type],
      aggregateId: id,
      app: APP,
      scope: env.scope ?? "app",
      actor: env.actor ?? { kind: "agent", id: this.pick(AGENTS) },
      sessionId: env.sessionId ?? null,
      transcriptRef: null,
      git: env.git ?? null,
      causationId: null,
      correlationId: eventId,
      time: new Date(this.clock).toISOString(),
      data,
    } as LedgerEvent;
    this.counts.set(type, (this.counts.get(type) ?? 0) + 1);
    return { subject: this.names.aggregate(APP, aggregate, id), bytes: encodeEvent(event), event };
  };

  private body(): { title: string; body: string; tags: string[]; paths: string[] } {
    const words = (n: number) => Array.from({ length: n }, () => this.pick(WORDS)).join(" ");
    const title = `${words(3)} ${this.pick(IDENTIFIERS)} ${words(2)}`.slice(0, 200);
    const paths = this.chance(0.5) ? [this.pick(PATHS)] : [];
    // ~300 bytes of markdown: two short paragraphs, an identifier and sometimes a path.
    let body = `${words(20)} \`${this.pick(IDENTIFIERS)}\`.\n\n${words(16)}${paths.length ? ` in \`${paths[0]}\`` : ""}.\n\n- ${words(6)}`;
    while (body.length < 280) body += ` ${this.pick(WORDS)}`;
    this.bodyBytes += body.length;
    this.bodies++;
    return { title, body, tags: [this.pick(TEAMS), this.pick(WORDS)], paths };
  }

  private agentContext(agent: string): Partial<Envelope> {
    const session = this.openSessions.find((s) => s.agent === agent);
    return {
      actor: { kind: "agent", id: agent },
      sessionId: session?.id ?? null,
      git: this.chance(0.7) ? { branch: `feat/${this.pick(WORDS)}`, worktree: `/work/${agent}` } : null,
    };
  }

  private *memory(): Generator<Draft, void, void> {
    const id = fastUuidv7();
    const author = this.pick(AGENTS);
    const roll = this.random();
    const scope = roll < 0.6 ? "app" : roll < 0.85 ? `team:${this.pick(TEAMS)}` : `agent:${author}`;
    const reviewer = () => ({ actor: { kind: "human" as const, id: this.pick(HUMANS) }, scope });
    const approved: number[] = [];
    let version = 0;
    let active: number | null = null;
    const propose = () => {
      version++;
      const content = this.body();
      return this.emit("memory", id, "memory.proposed", {
        version,
        title: content.title,
        body: content.body,
        kind: this.pick(KINDS),
        tags: content.tags,
        paths: content.paths,
        importance: 1 + Math.floor(this.random() * 5),
      }, { ...this.agentContext(author), scope });
    };
    // Version 1, then revisions (on average 1.5): each approved (85%), rejected (10%) or left pending.
    let revisions = 0;
    while (revisions === 0 || this.chance(0.6)) {
      yield propose();
      const decision = this.random();
      if (decision < 0.85) {
        yield this.emit("memory", id, "memory.approved", { version }, reviewer());
        approved.push(version);
        active = version;
      } else if (decision < 0.95) {
        yield this.emit("memory", id, "memory.rejected", { version, reason: `needs work: ${this.pick(WORDS)} ${this.pick(WORDS)}` }, reviewer());
      } else {
        break; // pending: nothing more happens to this memory
      }
      revisions++;
      if (revisions > 6) break;
    }
    if (active !== null && approved.length >= 2 && this.chance(0.25)) {
      const to = approved.find((v) => v !== active)!;
      yield this.emit("memory", id, "memory.rolled_back", { fromVersion: active, toVersion: to }, reviewer());
      active = to;
    }
    if (this.chance(0.1)) {
      yield this.emit("memory", id, "memory.superseded", { by: null, reason: `outdated: ${this.pick(WORDS)} changed` }, reviewer());
    }
  }

  private *claim(): Generator<Draft, void, void> {
    const task = this.chance(0.6);
    const name = task ? `t${fastUuidv7().slice(-12)}` : `${this.pick(PATHS)}#${Math.floor(this.random() * 1e6)}`;
    const kind = task ? "task" : "lock";
    const id = claimIdOf(kind, name);
    const holder = this.pick(AGENTS);
    const ctx = () => ({ ...this.agentContext(holder), scope: "app" });
    let opened = false;
    if (task && this.chance(0.4)) {
      yield this.emit("claim", id, "claim.task_opened", { name, title: `${this.pick(WORDS)} ${this.pick(WORDS)}`, priority: 1 + Math.floor(this.random() * 5) }, {
        actor: { kind: "human", id: this.pick(HUMANS) },
        scope: "app",
      });
      opened = true;
    }
    const leaseMs = 10 * 60 * 1000;
    const lease = () => new Date(this.clock + leaseMs).toISOString();
    yield this.emit("claim", id, "claim.claimed", {
      kind,
      name,
      holder,
      leaseMs,
      expiresAt: lease(),
      takeoverOf: null,
      priority: task && !opened ? 3 : null,
    }, ctx());
    const renews = Math.floor(this.random() * 3);
    for (let i = 0; i < renews; i++) yield this.emit("claim", id, "claim.renewed", { holder, leaseMs, expiresAt: lease() }, ctx());
    if (this.chance(0.9)) yield this.emit("claim", id, "claim.released", { holder, done: task && this.chance(0.7) }, ctx());
  }

  private *session(): Generator<Draft, void, void> {
    const id = fastUuidv7();
    const agent = this.pick(AGENTS);
    const env = { actor: { kind: "agent" as const, id: agent }, scope: `agent:${agent}`, sessionId: id };
    const branch = `feat/${this.pick(WORDS)}`;
    yield this.emit("session", id, "session.started", { agentId: agent, task: `${this.pick(WORDS)} ${this.pick(WORDS)}`, branch, worktree: `/work/${agent}` }, env);
    this.openSessions.push({ id, agent });
    if (this.openSessions.length > 40) this.openSessions.shift();
    if (this.chance(0.85)) yield this.emit("session", id, "session.ended", { summary: `${this.pick(WORDS)} done` }, env);
    const at = this.openSessions.findIndex((s) => s.id === id);
    if (at >= 0) this.openSessions.splice(at, 1);
  }

  private newScript(): Generator<Draft, void, void> {
    if (this.memories < this.memoryRatio * (this.emitted + 1)) {
      this.memories++;
      return this.memory();
    }
    return this.chance(2 / 3) ? this.claim() : this.session();
  }

  /** The next event, or undefined once `total` were emitted. */
  next(): Draft | undefined {
    if (this.emitted >= this.total) return undefined;
    for (;;) {
      while (this.active.length < this.window) this.active.push(this.newScript());
      const at = Math.floor(this.random() * this.active.length);
      const step = this.active[at]!.next();
      if (step.done) {
        this.active[at] = this.newScript();
        continue;
      }
      this.emitted++;
      return step.value;
    }
  }
}

interface Generated {
  events: number;
  memories: number;
  seconds: number;
  bytes: number;
  counts: Map<string, number>;
  averageBodyBytes: number;
  validated: number;
}

/** Publishes `total` events with up to `window` publishes in flight; every `validateEvery`-th is schema-checked. */
async function generate(js: JetStreamClient, prefix: string, total: number, memoryRatio: number, validateEvery: number, log: (l: string) => void): Promise<Generated> {
  const gen = new StreamGenerator(prefix, total, memoryRatio);
  const window = 4096;
  let inflight = 0;
  let wake: (() => void) | null = null;
  let failure: unknown;
  let bytes = 0;
  let validated = 0;
  let n = 0;
  const t0 = performance.now();
  let lastLog = t0;
  const settle = () => {
    inflight--;
    const w = wake;
    wake = null;
    w?.();
  };
  for (let draft = gen.next(); draft; draft = gen.next()) {
    if (n % validateEvery === 0) {
      LedgerEvent.parse(JSON.parse(new TextDecoder().decode(draft.bytes))); // throws on a bad envelope
      validated++;
    }
    while (inflight >= window) await new Promise<void>((resolve) => (wake = resolve));
    if (failure) throw failure;
    inflight++;
    bytes += draft.bytes.length;
    n++;
    js.publish(draft.subject, draft.bytes, { timeout: 30_000 }).then(settle, (err: unknown) => {
      failure ??= err;
      settle();
    });
    if (n % 50_000 === 0 && performance.now() - lastLog > 5_000) {
      lastLog = performance.now();
      log(`    generated ${fmtInt(n)} / ${fmtInt(total)} (${fmtInt(n / ((lastLog - t0) / 1000))} ev/s)`);
    }
  }
  while (inflight > 0) await new Promise<void>((resolve) => (wake = resolve));
  if (failure) throw failure;
  return {
    events: n,
    memories: gen.memories,
    seconds: (performance.now() - t0) / 1000,
    bytes,
    counts: gen.counts,
    averageBodyBytes: gen.averageBodyBytes,
    validated,
  };
}

// ---- reading ----------------------------------------------------------------------------------

/** The whole stream through an ordered consumer, as EventStore.replay reads it; `each` gets every message. */
async function orderedRead(store: EventStore, stream: string, each: (data: Uint8Array) => void): Promise<number> {
  const consumer = await store.js.consumers.get(stream, { deliver_policy: DeliverPolicy.All });
  const messages = await consumer.consume({ max_messages: 2000 });
  let n = 0;
  try {
    for await (const m of messages) {
      each(m.data);
      n++;
      if (m.info.pending === 0) break;
    }
  } finally {
    messages.stop();
  }
  return n;
}

// ---- phases -----------------------------------------------------------------------------------

interface Row {
  size: number;
  phase: string;
  events: number;
  seconds: number;
  eventsPerSec: number;
  /** Of the raw ordered-consumer read of the same stream. */
  ratio: number;
  cpuSeconds: number;
  rssMB: number;
  note: string;
}

interface Ctx {
  store: EventStore;
  /** The warm embedding cache of this size's prefix; undefined when vectors are off. */
  vectors?: { kv: KvVectorStore; prefix: string } | undefined;
  scope: ProjectionScope;
  workDir: string;
  redisUrl: string;
  keyPrefixBase: string;
  redis: Redis;
  log: (l: string) => void;
  /** Rebuild in the benchmark's own process instead of a new one per phase. */
  inProcess: boolean;
}

let runCounter = 0;

/**
 * One measured rebuild, as plain data: what bench/rebuild-process.ts is given to run it in a process of
 * its own, or what `runRebuild` runs here with `--in-process`.
 */
export interface RebuildJob {
  /** The naming prefix of the stream (and of the warm embedding cache's bucket). */
  prefix: string;
  scope: ProjectionScope;
  /** This rebuild's own directory: files root and search directory below it. */
  dir: string;
  redisUrl: string;
  keyPrefix: string;
  /** The search projection gets its vector channel over the warm cache of `prefix`. */
  vectors: boolean;
  /** A projection alone, all three one after the other, all three in one pass, or the raw read alone. */
  mode: "files" | "claims" | "search" | "all-sequential" | "all-single-pass" | "raw";
  /** Names the CPU profile written under MEMLEDGER_BENCH_CPU_PROFILE. */
  phase: string;
}

export interface RebuildOutcome {
  events: number;
  seconds: number;
  /** Every thread of the process that rebuilt. */
  cpuSeconds: number;
  /** Peak RSS of that process (in a process of its own: the kernel's high-water mark, start-up included). */
  rssMB: number;
  /** What reached the embedder, for the row's note ("" without vectors). */
  embedded: string;
}

/** The three projection definitions of a job, over fresh locations, and what its embedder did. */
async function jobDefinitions(store: EventStore, job: RebuildJob) {
  // Described as `memledger rebuild` describes it (services/search-definition.ts), so that search is
  // rebuilt where that command would rebuild it (on a worker thread of its own from THREADS_FROM_EVENTS);
  // the embedder is this benchmark's stand-in, made by the thread that embeds, behind a new CachedEmbedder (an empty LRU in front of the warm bucket, as in a
  // new process). That thread may be a worker, so what reached the model is counted in the bucket: a
  // text the cache did not hold is embedded once and put there.
  const cacheStream = `KV_${naming(job.prefix).embeddingCacheBucket()}`;
  const cached = async () => (await store.jsm.streams.info(cacheStream)).state.messages;
  const before = job.vectors ? await cached() : 0;
  const definitions = {
    files: filesProjection({ root: path.join(job.dir, "files") }),
    claims: claimsProjection({ redis: job.redisUrl, keyPrefix: job.keyPrefix }),
    search: searchFromDescription(
      {
        dir: path.join(job.dir, "search"),
        ...(job.vectors
          ? {
              vectors: {
                prefix: job.prefix,
                backend: { kind: "hnsw" },
                embedder: { kind: "module", module: new URL("./search.js", import.meta.url).href, factory: "hashedBagOfWordsEmbedder" },
                nats: { name: `bench-rebuild-${job.phase}` },
              },
            }
          : {}),
      },
      { nc: store.nc },
    ),
  };
  const embedded = async () => {
    if (!job.vectors) return "";
    const added = (await cached()) - before;
    const threaded = canRebuildInThread(definitions.search, await store.lastSeq(job.scope.stream));
    return `; embedder: ${fmtInt(added)} texts embedded (new cache entries), search ${threaded ? "on a worker thread" : "on the reading thread"}`;
  };
  return { definitions, embedded };
}

/** Runs one job in this process and measures it (peak RSS sampled every 200 ms). */
export async function runRebuild(store: EventStore, job: RebuildJob): Promise<RebuildOutcome> {
  const { definitions, embedded } = await jobDefinitions(store, job);
  const all = [definitions.files, definitions.claims, definitions.search];
  const run = async (): Promise<number> => {
    switch (job.mode) {
      case "raw":
        return orderedRead(store, job.scope.stream, () => undefined);
      case "all-single-pass":
        return (await rebuildProjections(store, all, job.scope)).events;
      case "all-sequential": {
        let events = 0;
        for (const definition of all) events = (await rebuildProjection(store, definition, job.scope)).events;
        return events;
      }
      default:
        return (await rebuildProjection(store, definitions[job.mode], job.scope)).events;
    }
  };
  global.gc?.();
  const { value: events, seconds, cpuSeconds, rssMB } = await timed(() => profiled(job.phase, run));
  return { events, seconds, cpuSeconds, rssMB, embedded: await embedded() };
}

/** Runs one job in a new node process (bench/rebuild-process.ts), as `memledger rebuild` runs. */
function runRebuildInChild(job: RebuildJob): Promise<RebuildOutcome> {
  return new Promise((resolve, reject) => {
    // Profiled, the child profiles every thread itself (--cpu-prof: one file per thread in the phase's folder).
    const { MEMLEDGER_BENCH_CPU_PROFILE: profileDir, ...env } = process.env;
    const execArgv = profileDir ? ["--cpu-prof", `--cpu-prof-dir=${path.join(profileDir, phaseSlug(job.phase))}`] : [];
    const child = fork(fileURLToPath(new URL("./rebuild-process.js", import.meta.url)), [JSON.stringify(job)], { stdio: ["ignore", "inherit", "inherit", "ipc"], execArgv, env });
    let outcome: RebuildOutcome | undefined;
    child.on("message", (message: { outcome?: RebuildOutcome }) => (outcome = message.outcome ?? outcome));
    child.on("error", reject);
    child.on("exit", (code, signal) => (outcome && code === 0 ? resolve(outcome) : reject(new Error(`rebuild process ${job.phase} exited with ${signal ?? code}`))));
  });
}

/** Fresh, private read-model locations for one measured rebuild, and a way to delete them. */
function freshJob(ctx: Ctx, mode: RebuildJob["mode"], phase: string, withVectors: boolean) {
  const run = ++runCounter;
  const job: RebuildJob = {
    prefix: ctx.vectors?.prefix ?? ctx.scope.prefix,
    scope: ctx.scope,
    dir: path.join(ctx.workDir, `run${run}`),
    redisUrl: ctx.redisUrl,
    keyPrefix: `${ctx.keyPrefixBase}:run${run}`,
    vectors: withVectors && ctx.vectors !== undefined,
    mode,
    phase,
  };
  // The phase's files stay on disk until the whole benchmark ends (workDir is removed then). Deleting
  // 10k+ files between phases made the next phase's file creation up to 15 times slower: ext4 without
  // a journal (these machines' root file system) skips inodes freed in the last 60 to 300 s when it
  // allocates one (ialloc.c, recently_deleted), so each create after a mass deletion scans past them.
  // That measured the previous phase's cleanup, not the rebuild.
  const cleanup = async () => {
    await unlinkMatching(ctx.redis, `${job.keyPrefix}:*`);
  };
  return { job, cleanup };
}

const PROBE_FILES = 2000;

/**
 * How fast this file system creates small files right now, reported beside the rebuild rates: the
 * files projection creates one per memory, and on these machines that cost varies tenfold with what
 * was deleted in the last minutes (see freshModels). The probe's files stay until the end, like the phases'.
 */
function fileCreationProbe(workDir: string): { ms: number } {
  const dir = path.join(workDir, "probe");
  mkdirSync(dir);
  const body = "x".repeat(1024);
  const t0 = performance.now();
  for (let i = 0; i < PROBE_FILES; i++) writeFileSync(path.join(dir, `${i}.md`), body);
  return { ms: performance.now() - t0 };
}

async function timed<T>(work: () => Promise<T>): Promise<{ value: T; seconds: number; cpuSeconds: number; rssMB: number }> {
  let peakRss = process.memoryUsage.rss();
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage.rss())), 200);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  try {
    const value = await work();
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    return { value, seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, rssMB: Math.max(peakRss, process.memoryUsage.rss()) / 2 ** 20 };
  } finally {
    clearInterval(sampler);
  }
}

const phaseSlug = (phase: string) => phase.replace(/[^a-z0-9]+/gi, "-");

/**
 * With MEMLEDGER_BENCH_CPU_PROFILE=<dir>, each measured rebuild is CPU-profiled on its own (the
 * generator, setup and raw reads stay out of the profile), in files Chrome's DevTools and `node
 * --cpu-prof`'s readers open: in a process of its own, one per thread (worker threads included) under
 * `<dir>/<phase>/`; with `--in-process`, its main thread alone, `<dir>/<phase>.cpuprofile`.
 */
async function profiled<T>(phase: string, work: () => Promise<T>): Promise<T> {
  const dir = process.env.MEMLEDGER_BENCH_CPU_PROFILE;
  if (!dir) return work();
  const session = new Session();
  session.connect();
  const post = (method: string, params?: object) =>
    new Promise<unknown>((resolve, reject) => session.post(method, params ?? {}, (err, result) => (err ? reject(err) : resolve(result))));
  await post("Profiler.enable");
  await post("Profiler.setSamplingInterval", { interval: 200 });
  await post("Profiler.start");
  try {
    return await work();
  } finally {
    const { profile } = (await post("Profiler.stop")) as { profile: unknown };
    session.disconnect();
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, `${phaseSlug(phase)}.cpuprofile`), JSON.stringify(profile));
  }
}

async function rebuildPhase(
  ctx: Ctx,
  size: number,
  raw: number,
  phase: string,
  note: string,
  mode: RebuildJob["mode"],
  withVectors = false,
): Promise<Row> {
  const { job, cleanup } = freshJob(ctx, mode, phase, withVectors);
  try {
    const outcome = ctx.inProcess ? await runRebuild(ctx.store, job) : await runRebuildInChild(job);
    const { events, seconds, cpuSeconds, rssMB } = outcome;
    const eventsPerSec = events / seconds;
    note += outcome.embedded;
    const row: Row = { size, phase, events, seconds, eventsPerSec, ratio: eventsPerSec / raw, cpuSeconds, rssMB, note };
    ctx.log(`  ${phase}: ${fmtInt(events)} events in ${fmt(seconds)} s = ${fmtInt(eventsPerSec)} ev/s (${fmt(row.ratio * 100, 1)}% of raw read), ` +
      `peak RSS ${fmtInt(rssMB)} MB${note ? `; ${note}` : ""}`);
    return row;
  } finally {
    await cleanup();
  }
}

interface Options {
  sizes: number[];
  memoryRatio: number;
  only: Set<string>;
  filesMaxEvents: number;
  fullMaxEvents: number;
  json: boolean;
  /** Which configurations of the search projection run: BM25 only (off), with vectors (on), or both. */
  vectors: "both" | "on" | "off";
  inProcess: boolean;
}

const ALL_PHASES = ["raw", "decode", "files", "claims", "search", "search-vectors", "all-sequential", "all-single-pass", "all-single-pass-vectors"];
const VECTOR_PHASES = new Set(["search-vectors", "all-single-pass-vectors"]);
const SINGLE_PASS_PHASES = new Set(["all-single-pass", "all-single-pass-vectors"]);

/**
 * The setup pass of the vector phases: folds the memories the way the search projection does and
 * embeds every active memory's final text once through a CachedEmbedder over the prefix's KV bucket,
 * so that a measured rebuild finds every text there (a warm cache, as on a ledger in use).
 */
async function warmEmbeddingCache(store: EventStore, stream: string, prefix: string): Promise<{ kv: KvVectorStore; texts: number; seconds: number }> {
  const t0 = performance.now();
  const kv = await KvVectorStore.open(store.nc, prefix);
  const records = new Map<string, MemoryRecord>();
  await store.replay(stream, {}, (events) => {
    for (const { event } of events) {
      if (isMemoryEvent(event)) records.set(event.aggregateId, evolveMemoryRecord(records.get(event.aggregateId), event).record);
    }
  });
  const texts: string[] = [];
  for (const record of records.values()) {
    const view = indexedViewOf(record);
    if (view) texts.push(embeddingTextOf(view));
  }
  const embedder = new CachedEmbedder(new HashedBagOfWordsEmbedder(), kv);
  for (let i = 0; i < texts.length; i += 1000) await embedder.embed(texts.slice(i, i + 1000));
  return { kv, texts: texts.length, seconds: (performance.now() - t0) / 1000 };
}

async function runSize(nc: NatsConnection, base: string, size: number, opts: Options, workDir: string, redis: Redis, redisUrl: string, log: (l: string) => void) {
  const prefix = `${base}n${size}`;
  const store = await EventStore.open(nc, naming(prefix));
  const stream = await store.ensureAppStream(APP);
  const scope: ProjectionScope = { prefix, app: APP, stream };
  const rows: Row[] = [];

  log(`\n== ${fmtInt(size)} events (stream ${stream}) ==`);
  const gen = await generate(store.js, prefix, size, opts.memoryRatio, size <= 10_000 ? 1 : 100, log);
  const mix = [...gen.counts].sort((a, b) => b[1] - a[1]).map(([t, c]) => `${t} ${fmt((c / gen.events) * 100, 1)}%`).join(", ");
  log(`  generated ${fmtInt(gen.events)} events over ${fmtInt(gen.memories)} memories in ${fmt(gen.seconds)} s (${fmtInt(gen.events / gen.seconds)} ev/s pipelined), ` +
    `${fmt(gen.bytes / gen.events, 0)} B/event, bodies ${fmt(gen.averageBodyBytes, 0)} B; ${fmtInt(gen.validated)} checked against LedgerEvent`);
  log(`  mix: ${mix}`);
  const stored = await store.lastSeq(stream);
  if (stored !== gen.events) throw new Error(`the stream holds ${stored} events, not ${gen.events}`);

  // Raw read twice (start and end of the size's phases): the better of the two is the reference, so a
  // noisy first read cannot flatter the ratios.
  const rawRead = async (label: string) => {
    const { value: n, seconds, cpuSeconds, rssMB } = await timed(() => orderedRead(store, stream, () => undefined));
    log(`  ${label}: ${fmtInt(n)} messages in ${fmt(seconds)} s = ${fmtInt(n / seconds)} msg/s`);
    return { n, seconds, cpuSeconds, rssMB };
  };
  const raw1 = await rawRead("raw ordered-consumer read");
  let raw = raw1.n / raw1.seconds;
  const rawRow = (r: typeof raw1, phase: string): Row => ({ size, phase, events: r.n, seconds: r.seconds, eventsPerSec: r.n / r.seconds, ratio: r.n / r.seconds / raw, cpuSeconds: r.cpuSeconds, rssMB: r.rssMB, note: "ordered consumer, messages dropped" });
  rows.push(rawRow(raw1, "raw read (1)"));
  // The same read in a new process, as each measured rebuild runs (for reference, not the goal's
  // denominator): there the NATS client's code is not compiled yet, and on these machines that read
  // took 1.2 to 1.5 times as long as in this process, which has just published the stream.
  if (!opts.inProcess) {
    const { job } = freshJob({ vectors: undefined, scope, workDir, redisUrl, keyPrefixBase: `${base}:claims`, redis, log, inProcess: false, store }, "raw", "raw read (own process)", false);
    const own = await runRebuildInChild(job);
    rows.push({ ...rawRow({ n: own.events, seconds: own.seconds, cpuSeconds: own.cpuSeconds, rssMB: own.rssMB }, "raw read (own process)"), note: "ordered consumer, messages dropped, in a new process as each rebuild" });
    log(`  raw ordered-consumer read, in a process of its own: ${fmtInt(own.events)} messages in ${fmt(own.seconds)} s = ${fmtInt(own.events / own.seconds)} msg/s`);
  }

  // Above --full-max-events, only the raw reads and the single-pass rebuild of all three run unless
  // --full: each projection alone and the sequential `rebuild all` at 1M take minutes each on this
  // 2-core machine, and the whole benchmark must stay near ten minutes.
  const full = size <= opts.fullMaxEvents;
  const wanted = (phase: string) => {
    if (!opts.only.has(phase)) return false;
    if (opts.vectors === "off" && VECTOR_PHASES.has(phase)) return false;
    if (opts.vectors === "on" && (phase === "search" || phase === "all-single-pass")) return false;
    if (full || SINGLE_PASS_PHASES.has(phase)) return true;
    log(`  ${phase}: skipped at ${fmtInt(size)} events (runs up to --full-max-events ${fmtInt(opts.fullMaxEvents)}; pass --full to run it here)`);
    return false;
  };
  if (wanted("decode")) {
    for (const verify of [false, true]) {
      const { value: n, seconds, cpuSeconds, rssMB } = await timed(() => store.replay(stream, { verify }, () => undefined));
      const phase = verify ? "read + decode --verify" : "read + decode";
      const note = verify ? "EventStore.replay, JSON + strict zod parse, no projection" : "EventStore.replay, JSON + structural check (what rebuilds use), no projection";
      rows.push({ size, phase, events: n, seconds, eventsPerSec: n / seconds, ratio: n / seconds / raw, cpuSeconds, rssMB, note });
      log(`  ${phase} (EventStore.replay): ${fmtInt(n / seconds)} ev/s`);
    }
  }

  let vectors: Ctx["vectors"];
  if ([...VECTOR_PHASES].some((phase) => opts.only.has(phase)) && opts.vectors !== "off") {
    const warm = await warmEmbeddingCache(store, stream, prefix);
    vectors = { kv: warm.kv, prefix };
    log(`  embedding cache warmed (setup, untimed): ${fmtInt(warm.texts)} active memories' texts embedded into ${warm.kv.bucket} in ${fmt(warm.seconds)} s`);
  }
  const ctx: Ctx = { store, vectors, scope, workDir, redisUrl, keyPrefixBase: `${base}:claims`, redis, log, inProcess: opts.inProcess };

  for (const phase of ["files", "claims", "search", "search-vectors"]) {
    if (!wanted(phase)) continue;
    if (phase === "files" && size > opts.filesMaxEvents) {
      log(`  files: skipped at ${fmtInt(size)} events (--files-max-events ${fmtInt(opts.filesMaxEvents)})`);
      continue;
    }
    const name = phase === "search-vectors" ? "search" : (phase as "files" | "claims" | "search");
    const note = phase === "search" ? "BM25 only (no vector channel)" : phase === "search-vectors" ? "BM25 + HNSW vectors, warm embedding cache" : "";
    rows.push(await rebuildPhase(ctx, size, raw, phase === "search-vectors" ? "rebuild search + vectors" : `rebuild ${name}`, note, name, phase === "search-vectors"));
  }

  if (wanted("all-sequential")) {
    rows.push(await rebuildPhase(ctx, size, raw, "rebuild all (sequential)", "one rebuildProjection per projection (`memledger rebuild all` before the single pass)", "all-sequential"));
  }
  if (wanted("all-single-pass")) {
    rows.push(await rebuildPhase(ctx, size, raw, "rebuild all (single pass)", "rebuildProjections, search BM25 only (the configuration before issue 15)", "all-single-pass"));
  }
  if (wanted("all-single-pass-vectors")) {
    rows.push(await rebuildPhase(ctx, size, raw, "rebuild all + vectors (single pass)", "rebuildProjections, search with HNSW vectors and a warm embedding cache (what users run)", "all-single-pass", true));
  }

  const raw2 = await rawRead("raw ordered-consumer read, again");
  rows.push(rawRow(raw2, "raw read (2)"));
  raw = Math.max(raw, raw2.n / raw2.seconds);
  for (const row of rows) row.ratio = row.eventsPerSec / raw;
  await store.deleteStream(stream);
  if (vectors) await store.jsm.streams.delete(`KV_${vectors.kv.bucket}`).catch(() => undefined);
  return { rows, raw, gen };
}

function vectorsOption(args: BenchArgs): Options["vectors"] {
  const raw = args.options.get("vectors");
  if (raw === undefined || raw === true) return raw === true ? "on" : "both";
  if (raw === "both" || raw === "on" || raw === "off") return raw;
  throw new Error(`--vectors takes both, on or off; got ${String(raw)}`);
}

async function run(args: BenchArgs): Promise<number> {
  const quick = flag(args, "quick");
  const sizesRaw = args.options.get("events");
  const sizes = quick
    ? [10_000]
    : typeof sizesRaw === "string"
      ? sizesRaw.split(",").map((s) => {
          const n = Number(s.replace(/_/g, ""));
          if (!Number.isInteger(n) || n < 100) throw new Error(`--events takes sizes like 100000,1000000; got ${s}`);
          return n;
        })
      : [100_000, 1_000_000];
  const onlyRaw = args.options.get("only");
  const only = new Set(typeof onlyRaw === "string" ? ["raw", ...onlyRaw.split(",")] : ALL_PHASES);
  for (const p of only) if (!ALL_PHASES.includes(p)) throw new Error(`--only takes ${ALL_PHASES.join(",")}; got ${p}`);
  const opts: Options = {
    sizes,
    memoryRatio: intOption(args, "memories-percent", 10) / 100,
    only,
    filesMaxEvents: intOption(args, "files-max-events", Number.MAX_SAFE_INTEGER),
    fullMaxEvents: flag(args, "full") ? Number.MAX_SAFE_INTEGER : intOption(args, "full-max-events", 200_000),
    json: flag(args, "json"),
    vectors: vectorsOption(args),
    inProcess: flag(args, "in-process"),
  };
  const log = opts.json ? (_: string) => undefined : (line: string) => console.log(line);
  const base = benchPrefix("benchreplay");
  const redisUrl = process.env.REDIS_URL ?? DEFAULT_REDIS_URL;
  const nc = await connectNats({ name: `bench-replay-${base}` });
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 3 });
  const workDir = await mkdtemp(path.join(tmpdir(), `memledger-${base}-`));
  const cleanup = async () => {
    const deleted = [
      ...(await deleteStreamsWithPrefix(nc, base).catch(() => [] as string[])),
      ...(await deleteStreamsWithPrefix(nc, `KV_${base}`).catch(() => [] as string[])),
    ];
    const keys = await unlinkMatching(redis, `${base}:*`).catch(() => 0);
    await rm(workDir, { recursive: true, force: true }).catch(() => undefined);
    log(`\ncleanup: deleted streams ${deleted.join(", ") || "none left"}, ${keys} Redis keys, ${workDir}`);
  };
  const onSignal = () => void cleanup().finally(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    log(`replay benchmark: prefix ${base}, sizes ${sizes.map(fmtInt).join(", ")}, memories ~${opts.memoryRatio * 100}% of events, ` +
      `node ${process.version}, load ${machineInfo().loadavg.join(" ")}, files in ${workDir}`);
    const probe = fileCreationProbe(workDir);
    log(`file creation probe: ${fmtInt(PROBE_FILES)} new 1 KB files in ${fmt(probe.ms, 0)} ms (${fmt((probe.ms * 1000) / PROBE_FILES, 0)} µs each; ` +
      `~20 µs on an idle disk, several times more within 5 minutes of a mass deletion on this file system: see freshJob)`);
    const results = [];
    for (const size of sizes) results.push(await runSize(nc, base, size, opts, workDir, redis, redisUrl, log));
    const rows = results.flatMap((r) => r.rows);

    const goals = results.flatMap((r) =>
      r.rows
        .filter((row) => row.phase.startsWith("rebuild all"))
        .map((row) => ({ name: `${fmtInt(r.gen.events)} events: ${row.phase} / raw read`, value: row.ratio, pass: row.ratio >= GOAL })),
    );
    if (opts.json) {
      console.log(JSON.stringify({ benchmark: "replay", config: { ...opts, only: [...opts.only], ...machineInfo(), fileCreationProbeMs: probe.ms }, rows, goals }, null, 2));
    } else {
      console.log("");
      console.log(table(
        ["events", "phase", "seconds", "events/s", "of raw", "CPU s", "peak RSS MB", "note"],
        rows.map((r) => [fmtInt(r.size), r.phase, fmt(r.seconds), fmtInt(r.eventsPerSec), `${fmt(r.ratio * 100, 1)}%`, fmt(r.cpuSeconds, 1), fmtInt(r.rssMB), r.note]),
      ));
      console.log("\n(of raw = events/s over the better of the two raw ordered-consumer reads of the same stream)\n");
      console.log(table(["goal: all projections together >= 25% of the raw read rate", "value", "result"], goals.map((g) => [g.name, `${fmt(g.value * 100, 1)}%`, g.pass ? "PASS" : "MISS"])));
      const reference = results.flatMap((r) => {
        const own = r.rows.find((row) => row.phase === "raw read (own process)");
        return own ? r.rows.filter((row) => row.phase.startsWith("rebuild all")).map((row) => [`${fmtInt(r.gen.events)} events: ${row.phase} / raw read (own process)`, `${fmt((row.eventsPerSec / own.eventsPerSec) * 100, 1)}%`]) : [];
      });
      if (reference.length > 0) console.log(`\n${table(["for reference, not the goal: against the raw read in a process of its own", "value"], reference)}`);
    }
    return 0;
  } finally {
    await cleanup();
    redis.disconnect();
    await nc.close().catch(() => undefined);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

export const replayBenchmark: Benchmark = {
  name: "replay",
  summary: "raw ordered-consumer read vs. rebuilding each projection (files, claims, search) and all together, at 100k and 1M events",
  usage: "replay [--events 100000,1000000] [--quick] [--only decode,files,claims,search,search-vectors,all-sequential,all-single-pass,all-single-pass-vectors] [--vectors both|on|off] [--in-process] [--full | --full-max-events 200000] [--files-max-events N] [--memories-percent 10] [--json]",
  run,
};
