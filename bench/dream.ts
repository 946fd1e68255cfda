/**
 * `npm run bench -- dream`: a consolidation dry run over a synthetic app, on the real NATS.
 *
 * The app (`--memories 5000`, `--sessions 50`, `--seed 1`): memories proposed and approved over the last
 * 400 days, among them near-duplicate pairs, relative dates ("yesterday", "3 days ago"), paths to files a
 * temporary git repository does not have (and paths it does), contradicting pairs, dead superseded
 * chains; sessions that were shown (exposure receipts) seven in ten of the memories, and ended with JSONL
 * transcripts in the transcripts object store, in which a handful of failures recur (a missing module,
 * a refused connection, a failing test command retried) among noise. Everything is written to a fresh
 * prefix with pipelined JetStream publishes (the generator is the only writer) and removed afterwards.
 *
 * Measured: the dry run (services/dream/runner.ts `runDream` with `dryRun`: gates, the view read from
 * the stream, every registered phase, nothing appended), its view read and each phase alone, and the
 * proposals per phase. BM25 only (no embedder), as an app without vectors runs.
 */
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { jetstreamManager } from "@nats-io/jetstream";
import seedrandom from "seedrandom";
import { naming } from "../events/subjects.js";
import { encodeEvent } from "../events/upcast.js";
import { CURRENT_SCHEMA_VERSION, LedgerEvent } from "../schemas/events.js";
import type { Phase } from "../services/dream/phase.js";
import { dreamPhases } from "../services/dream/phases/index.js";
import { runDream } from "../services/dream/runner.js";
import { readDreamView } from "../services/dream/view.js";
import { EventStore } from "../services/event-store.js";
import { connectNats } from "../services/nats.js";
import { openTranscripts, putTranscript } from "../services/transcripts.js";
import { benchPrefix, deleteStreamsWithPrefix, fmt, fmtInt, intOption, machineInfo, table, type BenchArgs, type Benchmark } from "./util.js";

const APP = "bench";
const DAY = 86_400_000;

const WORDS = (
  "payment webhook retry idempotency stripe invoice ledger refund customer session token cache redis queue worker deploy " +
  "rollback migration schema index postgres replica timeout circuit breaker fixture build lint typescript module config " +
  "environment secret vault certificate latency budget alert dashboard metric trace handler middleware router endpoint " +
  "header cookie oauth role permission review release branch commit hook docker container kubernetes cluster shard backup " +
  "snapshot checkpoint projection stream consumer producer subject agent claim lease lock task owner team"
).split(" ");
const SYLLABLES = "ka lo mi nu pe ri sa to vu za be co di fu ga hi jo le mo ne".split(" ");
const REPO_FILES = ["src/payments/webhook.ts", "src/auth/session.ts", "lib/ledger/client.ts", "infra/deploy.yaml", "packages/ui/Button.tsx"];
const MISSING_FILES = ["src/legacy/billing.ts", "src/old/queue.ts", "scripts/migrate-v1.sh"];

interface Draft {
  subject: string;
  event: LedgerEvent;
}

/** The synthetic app's events and transcripts, deterministic for a seed. */
function generate(options: { memories: number; sessions: number; seed: number; now: number; prefix: string }) {
  const random = seedrandom(String(options.seed));
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
  // Text is drawn half from a small set of common words, half from a long tail (Zipf-like: the n-th
  // made-up word about 1/n as likely), as technical prose has both; a memory of common words only would
  // resemble thousands of others.
  const tail = Array.from({ length: 3000 }, (_, n) => `${SYLLABLES[n % 20]}${SYLLABLES[Math.floor(n / 20) % 20]}${SYLLABLES[Math.floor(n / 400) % 20]}x`);
  const zipf = () => tail[Math.min(tail.length - 1, Math.floor(Math.exp(random() * Math.log(tail.length)) - 1))]!;
  const word = () => (random() < 0.5 ? pick(WORDS) : zipf());
  const sentence = (n: number) => Array.from({ length: n }, word).join(" ");
  const names = naming(options.prefix);
  const events: Draft[] = [];
  let counter = 0;
  const add = (kind: "memory" | "session", aggregateId: string, type: string, data: unknown, time: number, scope = "app") => {
    const id = `ev-${++counter}`;
    const event = LedgerEvent.parse({
      id,
      aggregateId,
      app: APP,
      scope,
      actor: { kind: kind === "session" ? "agent" : "agent", id: "agent-1" },
      sessionId: null,
      transcriptRef: null,
      git: null,
      causationId: null,
      correlationId: id,
      time: new Date(time).toISOString(),
      type,
      schemaVersion: CURRENT_SCHEMA_VERSION[type as LedgerEvent["type"]],
      data,
    });
    events.push({ subject: names.aggregate(APP, kind, aggregateId), event });
  };
  const memory = (id: string, content: { title: string; body: string; paths?: string[] }, at: number, approve = true) => {
    add("memory", id, "memory.proposed", { version: 1, kind: pick(["note", "fact", "decision", "convention", "procedure", "fragile"]), tags: [pick(WORDS)], paths: content.paths ?? [], importance: 1 + Math.floor(random() * 5), title: content.title, body: content.body }, at);
    if (approve) add("memory", id, "memory.approved", { version: 1 }, at + 60_000);
  };

  const planted = { duplicates: 0, dates: 0, missing: 0, contradictions: 0, chains: 0 };
  const ids: string[] = [];
  let i = 0;
  while (ids.length < options.memories) {
    const at = options.now - Math.floor(random() * 400) * DAY - Math.floor(random() * DAY);
    const id = `m-${String(i++).padStart(5, "0")}`;
    const roll = random();
    const title = `${sentence(4)} ${i}`;
    const body = `${sentence(25)}.\n${sentence(20)}.`;
    if (roll < 0.04 && ids.length + 2 <= options.memories) {
      // A near-duplicate pair: the same note written twice, one word apart.
      memory(id, { title, body }, at);
      memory(`${id}d`, { title, body: body.replace(/^\S+/, pick(WORDS)) }, at + DAY);
      ids.push(id, `${id}d`);
      planted.duplicates++;
    } else if (roll < 0.09) {
      memory(id, { title, body: `${sentence(10)} broke ${pick(["yesterday", "3 days ago", "last week", "today"])}. ${body}` }, at);
      ids.push(id);
      planted.dates++;
    } else if (roll < 0.14) {
      memory(id, { title, body, paths: random() < 0.6 ? [pick(MISSING_FILES)] : [pick(REPO_FILES), pick(MISSING_FILES)] }, at);
      ids.push(id);
      planted.missing++;
    } else if (roll < 0.15 && ids.length + 2 <= options.memories) {
      const subject = sentence(6);
      memory(id, { title: subject, body: `The ${subject} worker retries 3 times before giving up.` }, at);
      memory(`${id}c`, { title: subject, body: `The ${subject} worker retries 5 times before giving up.` }, at + DAY);
      ids.push(id, `${id}c`);
      planted.contradictions++;
    } else if (roll < 0.155 && ids.length + 2 <= options.memories) {
      memory(id, { title, body }, at);
      memory(`${id}p`, { title: `${title} (revised)`, body }, at + DAY, false);
      add("memory", id, "memory.superseded", { by: `${id}p`, reason: "replaced" }, at + 2 * DAY);
      ids.push(id, `${id}p`);
      planted.chains++;
    } else {
      memory(id, { title, body, paths: random() < 0.2 ? [pick(REPO_FILES)] : [] }, at);
      ids.push(id);
    }
  }

  // Recurring failures, each in a share of the sessions, among noise.
  const failures = [
    { share: 0.6, call: { command: "npm run build" }, output: (h: string) => `Error: Cannot find module '${h}/node_modules/left-pad/index.js'\nexit code 1` },
    { share: 0.4, call: { command: "npm run test:int" }, output: (h: string) => `Error: connect ECONNREFUSED 127.0.0.1:${4000 + Math.floor(random() * 999)}\n    at ${h}/src/db.ts:12:5` },
    { share: 0.3, call: { command: "make migrate" }, output: () => `fatal: migration ${Math.floor(random() * 1e6).toString(16)} failed: relation "users" already exists` },
    { share: 0.1, call: { command: "cargo build" }, output: () => "error[E0425]: cannot find value `x` in this scope" },
  ];
  const transcripts: { sessionId: string; text: string }[] = [];
  // Seven in ten memories were shown to some session; the rest were never retrieved.
  const exposedIds = ids.filter(() => random() < 0.7);
  for (let s = 0; s < options.sessions; s++) {
    const sessionId = `s-${String(s).padStart(3, "0")}`;
    const at = options.now - (options.sessions - s) * 3_600_000;
    const home = `/home/agent${s}/work`;
    const lines: string[] = [JSON.stringify({ type: "user", message: { role: "user", content: `task ${s}: ${sentence(8)}` } })];
    let call = 0;
    const tool = (input: object, result: string, isError: boolean) => {
      const id = `tu-${s}-${call++}`;
      lines.push(JSON.stringify({ type: "assistant", message: { role: "assistant", content: [{ type: "tool_use", id, name: "Bash", input }] } }));
      lines.push(JSON.stringify({ type: "user", message: { role: "user", content: [{ type: "tool_result", tool_use_id: id, is_error: isError, content: result }] } }));
    };
    for (let n = 0; n < 80; n++) {
      tool({ command: `cat ${pick(REPO_FILES)}` }, sentence(30), false);
      if (n % 20 === 0) {
        for (const f of failures) {
          if (random() < f.share / 4) {
            tool(f.call, f.output(home), true);
            tool(f.call, "ok", false); // retried
          }
        }
      }
    }
    transcripts.push({ sessionId, text: lines.join("\n") });
    add("session", sessionId, "session.started", { agentId: "agent-1", task: `task ${s}`, branch: null, worktree: null }, at, "agent:agent-1");
    const shown = exposedIds.slice(Math.floor((s * exposedIds.length) / options.sessions), Math.floor(((s + 1) * exposedIds.length) / options.sessions));
    for (let from = 0; from < shown.length; from += 100) {
      add("session", sessionId, "session.exposed", {
        receipts: [{ verb: "search", time: new Date(at + 1000).toISOString(), tokens: 100, memories: shown.slice(from, from + 100).map((memoryId, r) => ({ memoryId, version: 1, rank: r + 1, channel: "bm25", origin: "app" })) }],
      }, at + 1000, "agent:agent-1");
    }
  }
  return { events, transcripts, planted };
}

async function publishAll(store: EventStore, drafts: Draft[]): Promise<void> {
  const window = 512;
  let inFlight: Promise<unknown>[] = [];
  for (const d of drafts) {
    inFlight.push(store.js.publish(d.subject, encodeEvent(d.event), { timeout: 30_000 }));
    if (inFlight.length >= window) {
      await Promise.all(inFlight);
      inFlight = [];
    }
  }
  await Promise.all(inFlight);
}

export const dreamBenchmark: Benchmark = {
  name: "dream",
  summary: "a consolidation dry run over a synthetic app: time, and proposals per phase",
  usage: "[--memories 5000] [--sessions 50] [--seed 1] [--show N: print N proposals' evidence per phase]",
  async run(args: BenchArgs): Promise<number> {
    const memories = intOption(args, "memories", 5000);
    const sessions = intOption(args, "sessions", 50);
    const seed = intOption(args, "seed", 1, 0);
    const show = intOption(args, "show", 0, 0);
    const prefix = benchPrefix("dream");
    const nc = await connectNats({ name: `bench-dream-${prefix}` });
    const repo = await mkdtemp(path.join(tmpdir(), "memledger-bench-dream-"));
    const stop = async () => {
      await deleteStreamsWithPrefix(nc, prefix).catch(() => undefined);
      const jsm = await jetstreamManager(nc);
      for await (const name of jsm.streams.names()) if (name.startsWith(`OBJ_${prefix}`) || name.startsWith(`KV_${prefix}`)) await jsm.streams.delete(name).catch(() => undefined);
      await rm(repo, { recursive: true, force: true });
    };
    const onSignal = () => void stop().finally(() => process.exit(130));
    process.once("SIGINT", onSignal);
    try {
      // The repository the prune phase checks paths against: REPO_FILES exist, MISSING_FILES do not.
      execFileSync("git", ["-C", repo, "init", "-q"]);
      for (const f of REPO_FILES) {
        await mkdir(path.join(repo, path.dirname(f)), { recursive: true });
        await writeFile(path.join(repo, f), `// ${f}\n`);
      }
      execFileSync("git", ["-C", repo, "add", "."]);
      execFileSync("git", ["-C", repo, "-c", "user.email=b@example.com", "-c", "user.name=b", "commit", "-q", "-m", "files"]);

      const store = await EventStore.open(nc, naming(prefix));
      await store.ensureAppStream(APP);
      const now = Date.now();
      const gen = generate({ memories, sessions, seed, now, prefix });
      const objects = await openTranscripts(nc, store.names);
      const refs = new Map<string, LedgerEvent>();
      let transcriptBytes = 0;
      for (const t of gen.transcripts) {
        const ref = await putTranscript(objects, Buffer.from(t.text));
        transcriptBytes += ref.bytes;
        refs.set(t.sessionId, LedgerEvent.parse({ ...gen.events.find((d) => d.event.aggregateId === t.sessionId)!.event, id: `end-${t.sessionId}`, correlationId: `end-${t.sessionId}`, time: new Date(now - 60_000).toISOString(), type: "session.ended", schemaVersion: 2, data: { summary: null, transcript: ref } }));
      }
      const drafts = [...gen.events, ...[...refs.values()].map((event) => ({ subject: store.names.aggregate(APP, "session", event.aggregateId), event }))];
      const t0 = performance.now();
      await publishAll(store, drafts);
      const publishMs = performance.now() - t0;
      console.log(`synthetic app: ${fmtInt(memories)} memories, ${sessions} sessions, ${fmtInt(drafts.length)} events published in ${fmt(publishMs / 1000)} s; transcripts ${fmtInt(transcriptBytes)} bytes`);
      console.log(`planted: ${gen.planted.duplicates} near-duplicate pairs, ${gen.planted.dates} relative dates, ${gen.planted.missing} with missing files, ${gen.planted.contradictions} contradicting pairs, ${gen.planted.chains} dead chains`);

      // Each phase timed alone inside the dry run; the view read timed through the runner's hook.
      const timings = new Map<string, number>();
      const timed = (phase: Phase): Phase => ({
        name: phase.name,
        async propose(ctx) {
          const start = performance.now();
          try {
            return await phase.propose(ctx);
          } finally {
            timings.set(phase.name, performance.now() - start);
          }
        },
      });
      let viewMs = 0;
      const start = performance.now();
      const result = await runDream(
        {
          nc,
          store,
          readView: async (s, app, asOfSeq) => {
            const v0 = performance.now();
            const view = await readDreamView(s, app, asOfSeq);
            viewMs = performance.now() - v0;
            return view;
          },
        },
        { app: APP, dryRun: true, force: true, phases: dreamPhases().map(timed), settings: { repoDir: repo } },
      );
      const totalMs = performance.now() - start;
      if (result.status !== "dry_run") throw new Error(`expected a dry run, got ${result.status}`);
      const perPhase = new Map<string, number>();
      for (const p of result.proposals) perPhase.set(p.phase, (perPhase.get(p.phase) ?? 0) + 1);
      const actions = (phase: string) => {
        const counts = new Map<string, number>();
        for (const p of result.proposals.filter((x) => x.phase === phase)) counts.set(p.change.action, (counts.get(p.change.action) ?? 0) + 1);
        return [...counts].map(([a, n]) => `${a} ${n}`).join(", ") || "-";
      };
      console.log(`\ndry run: ${fmt(totalMs / 1000)} s in all (view read ${fmt(viewMs / 1000)} s, ${fmtInt(result.asOfSeq)} events as of the run)\n`);
      console.log(
        table(
          ["phase", "proposals", "by action", "time (s)"],
          dreamPhases().map((p) => [p.name, perPhase.get(p.name) ?? 0, actions(p.name), fmt((timings.get(p.name) ?? NaN) / 1000)]),
        ),
      );
      for (const p of dreamPhases()) {
        for (const d of result.proposals.filter((x) => x.phase === p.name).slice(0, show)) console.log(`  ${p.name} ${d.key}: ${d.evidence.summary}`);
      }
      console.log(`\nmachine: ${JSON.stringify(machineInfo())}`);
      return 0;
    } finally {
      process.off("SIGINT", onSignal);
      await stop();
      await nc.close();
    }
  },
};
