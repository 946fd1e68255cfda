/**
 * `npm run bench -- append`: what one append costs on the raw JetStream path and through the full
 * command path (MemoryClient → NATS request → CommandService → decide → JetStream publish → reply).
 *
 * Fairness: every connection comes from connectNats (noAsyncTraces); the raw messages are real
 * `memory.proposed` events of the same shape and size the command path stores (a 256-byte body),
 * published with the same headers (Nats-Msg-Id + Nats-Expected-Last-Subject-Sequence) to one subject
 * per memory in a stream with the ledger's own configuration; warm-up rounds are not measured.
 */
import { fork, type ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { NatsConnection } from "@nats-io/transport-node";
import { v7 as uuidv7 } from "uuid";
import { encodeEvent } from "../events/upcast.js";
import { naming } from "../events/subjects.js";
import { memoryDecider } from "../commands/memory.js";
import { CURRENT_SCHEMA_VERSION, LedgerEvent } from "../schemas/events.js";
import { MemoryClient } from "../services/client.js";
import { CommandService } from "../services/command-service.js";
import { EventStore } from "../services/event-store.js";
import { connectNats } from "../services/nats.js";
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

const APP = "bench";
const BODY_BYTES = 256;
/** A ~256-byte markdown body, the size of a typical short memory. */
const BODY = ("Use pnpm, not npm, in this repository: the lockfile is pnpm-lock.yaml and CI runs `pnpm install --frozen-lockfile`. " +
  "Run the tests with `pnpm vitest run` and the build with `pnpm build` before pushing; the release job refuses dirty trees. ")
  .repeat(3)
  .slice(0, BODY_BYTES);
const titleFor = (i: number) => `bench memory ${String(i).padStart(8, "0")}`;
const proposeRequest = (i: number) => ({ title: titleFor(i), body: BODY, kind: "note" as const, tags: ["bench"] });

/** CPU time of the nats-server process (there is one on the machine), for the cost per operation. */
class ServerCpu {
  private readonly pid: number | undefined;
  private readonly ticksPerSec = 100; // USER_HZ on Linux
  constructor() {
    try {
      this.pid = readdirSync("/proc")
        .filter((d) => /^\d+$/.test(d))
        .map(Number)
        .find((pid) => {
          try {
            return readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "nats-server";
          } catch {
            return false;
          }
        });
    } catch {
      this.pid = undefined;
    }
  }
  /** Seconds of CPU used so far, or NaN when it cannot be read. */
  seconds(): number {
    if (this.pid === undefined) return NaN;
    try {
      const stat = readFileSync(`/proc/${this.pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      return (Number(fields[11]) + Number(fields[12])) / this.ticksPerSec; // utime, stime
    } catch {
      return NaN;
    }
  }
}

/** The CommandService in a child process (see service-process.ts). */
class ForkedService {
  private constructor(private readonly child: ChildProcess) {}

  static async start(prefix: string, profileDir: string | undefined, script?: string): Promise<ForkedService> {
    script ??= fileURLToPath(new URL("./service-process.js", import.meta.url));
    const child = fork(script, [prefix], {
      execArgv: profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the service process did not get ready in 15 s")), 15_000);
      child.once("error", reject);
      child.once("exit", (code) => reject(new Error(`the service process exited with ${code} before it was ready`)));
      child.on("message", (m: { type: string }) => {
        if (m.type === "ready") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    child.removeAllListeners("exit");
    return new ForkedService(child);
  }

  cpuSeconds(): Promise<number> {
    return new Promise((resolve) => {
      const onMessage = (m: { type: string; usage?: NodeJS.CpuUsage }) => {
        if (m.type !== "cpu" || !m.usage) return;
        this.child.off("message", onMessage);
        resolve((m.usage.user + m.usage.system) / 1e6);
      };
      this.child.on("message", onMessage);
      this.child.send({ type: "cpu" });
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.send({ type: "stop" });
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

interface Row extends PhaseResult {
  /** CPU µs per operation in the client (bench) process, the service process and nats-server. */
  cpuUsPerOp: { client: number; service: number | null; server: number };
}

interface Options {
  n: number;
  warmup: number;
  concurrency: number;
  inProcess: boolean;
  sequential: boolean;
  concurrent: boolean;
  profileDir: string | undefined;
  /** Another build's service-process.js, to compare two versions of the command path (A/B). */
  serviceScript: string | undefined;
}

async function phase(
  name: string,
  concurrency: number,
  opts: Options,
  op: (worker: number, i: number) => Promise<unknown>,
  serviceCpu: (() => Promise<number>) | null,
  server: ServerCpu,
  log: (line: string) => void,
): Promise<Row> {
  await measure(`${name} warm-up`, concurrency, opts.warmup, (w, i) => op(w, opts.n + i));
  const svc0 = serviceCpu ? await serviceCpu() : 0;
  const srv0 = server.seconds();
  const result = await measure(name, concurrency, opts.n, op);
  const srv = server.seconds() - srv0;
  const svc = serviceCpu ? (await serviceCpu()) - svc0 : null;
  const row: Row = {
    ...result,
    cpuUsPerOp: {
      client: (result.cpuSeconds / result.ops) * 1e6,
      service: svc === null ? null : (svc / result.ops) * 1e6,
      server: (srv / result.ops) * 1e6,
    },
  };
  log(`  ${name}: ${fmtInt(row.opsPerSec)} ops/s, p50 ${fmt(row.latencyMs.p50, 3)} ms, p99 ${fmt(row.latencyMs.p99, 3)} ms`);
  return row;
}

/** A `memory.proposed` event as the command handler would store it (the decider's data, today's schema version). */
function sampleEvent(i: number, actorId: string): LedgerEvent {
  const id = uuidv7();
  const decided = memoryDecider.decide(
    { type: "propose", revision: false, scope: "app", title: titleFor(i), body: BODY, kind: "note", tags: ["bench"], paths: [], importance: 3 },
    memoryDecider.initialState(),
  );
  return LedgerEvent.parse({
    id,
    type: decided.type,
    schemaVersion: CURRENT_SCHEMA_VERSION[decided.type],
    aggregateId: uuidv7(),
    app: APP,
    scope: "app",
    actor: { kind: "agent", id: actorId },
    sessionId: null,
    transcriptRef: null,
    git: null,
    causationId: null,
    correlationId: id,
    time: new Date().toISOString(),
    data: decided.data,
  });
}

async function rawPhases(nc: NatsConnection, prefix: string, opts: Options, server: ServerCpu, log: (l: string) => void) {
  const names = naming(prefix);
  const store = await EventStore.open(nc, names);
  await store.ensureAppStream(APP); // the ledger's own stream configuration
  const js = store.js;
  const bytes = encodeEvent(sampleEvent(0, "agent-0"));

  // Sequential: one "memory" subject, each publish expecting the previous one's sequence.
  let lastSeq = 0;
  const seqSubject = names.aggregate(APP, "memory", "raw-sequential");
  const sequential = !opts.sequential ? undefined : await phase(
    "raw publish",
    1,
    opts,
    async () => {
      const ack = await js.publish(seqSubject, bytes, { msgID: uuidv7(), expect: { lastSubjectSequence: lastSeq } });
      lastSeq = ack.seq;
    },
    null,
    server,
    log,
  );

  // Concurrent: each agent appends sequentially to its own subject.
  const agentSeq = new Array<number>(opts.concurrency).fill(0);
  const agentSubject = Array.from({ length: opts.concurrency }, (_, w) => names.aggregate(APP, "memory", `raw-agent-${w}`));
  const concurrent = !opts.concurrent ? undefined : await phase(
    "raw publish",
    opts.concurrency,
    opts,
    async (w) => {
      const ack = await js.publish(agentSubject[w]!, bytes, { msgID: uuidv7(), expect: { lastSubjectSequence: agentSeq[w]! } });
      agentSeq[w] = ack.seq;
    },
    null,
    server,
    log,
  );
  return { sequential, concurrent, messageBytes: bytes.length };
}

async function commandPhases(
  label: string,
  nc: NatsConnection,
  prefix: string,
  opts: Options,
  serviceCpu: (() => Promise<number>) | null,
  server: ServerCpu,
  log: (l: string) => void,
) {
  const clients = Array.from({ length: opts.concurrency }, (_, w) => new MemoryClient(nc, { app: APP, as: `agent-${w}`, prefix }));
  const sequential = !opts.sequential ? undefined : await phase(label, 1, opts, (_w, i) => clients[0]!.propose(proposeRequest(i)), serviceCpu, server, log);
  const concurrent = !opts.concurrent ? undefined : await phase(label, opts.concurrency, opts, (w, i) => clients[w]!.propose(proposeRequest(i)), serviceCpu, server, log);
  // The size of what the command path stored, to show the raw messages were the same size.
  const store = await EventStore.open(nc, naming(prefix));
  const stream = naming(prefix).appStream(APP);
  const last = await store.jsm.direct.getMessage(stream, { seq: await store.lastSeq(stream) });
  return { sequential, concurrent, messageBytes: last?.data.length ?? NaN };
}

interface Goal {
  name: string;
  value: number;
  goal: string;
  pass: boolean;
}

type Pair = { sequential: Row | undefined; concurrent: Row | undefined };

const goals = (raw: Pair, cmd: Pair, label: string): Goal[] => {
  const out: Goal[] = [];
  if (raw.sequential && cmd.sequential) {
    const latency = cmd.sequential.latencyMs.p50 / raw.sequential.latencyMs.p50;
    out.push({ name: `${label}: sequential command p50 / raw p50`, value: latency, goal: "<= 4.00x", pass: latency <= 4 });
  }
  if (raw.concurrent && cmd.concurrent) {
    const throughput = cmd.concurrent.opsPerSec / raw.concurrent.opsPerSec;
    out.push({ name: `${label}: concurrent command throughput / raw`, value: throughput, goal: ">= 50%", pass: throughput >= 0.5 });
  }
  return out;
};

async function run(args: BenchArgs): Promise<number> {
  const n = intOption(args, "n", 20000);
  const opts: Options = {
    n,
    warmup: intOption(args, "warmup", Math.max(500, Math.round(n / 10)), 0),
    concurrency: intOption(args, "concurrency", 64),
    inProcess: !flag(args, "no-in-process"),
    sequential: true,
    concurrent: true,
    profileDir: undefined,
    serviceScript: typeof args.options.get("service-script") === "string" ? String(args.options.get("service-script")) : undefined,
  };
  if (flag(args, "profile")) {
    opts.profileDir = typeof args.options.get("profile-dir") === "string" ? String(args.options.get("profile-dir")) : "bench-profiles";
    mkdirSync(opts.profileDir, { recursive: true });
  }
  const only = args.options.get("only");
  if (only !== undefined) {
    if (only !== "sequential" && only !== "concurrent") throw new Error("--only takes sequential or concurrent");
    opts.sequential = only === "sequential";
    opts.concurrent = only === "concurrent";
  }
  const json = flag(args, "json");
  const log = json ? (_: string) => undefined : (line: string) => console.log(line);
  const base = benchPrefix("bench");
  const server = new ServerCpu();
  const nc = await connectNats({ name: `bench-client-${base}` });
  let forked: ForkedService | undefined;
  let inProc: { nc: NatsConnection; service: CommandService } | undefined;
  const cleanup = async () => {
    await forked?.stop().catch(() => undefined);
    await inProc?.service.stop().catch(() => undefined);
    await inProc?.nc.close().catch(() => undefined);
    const deleted = await deleteStreamsWithPrefix(nc, base).catch(() => [] as string[]);
    log(`deleted streams: ${deleted.join(", ") || "none"}`);
  };
  const onSignal = () => {
    void cleanup().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  try {
    log(`append benchmark: prefix ${base}, n=${opts.n} per phase (+${opts.warmup} warm-up), concurrency ${opts.concurrency}, ` +
      `body ${BODY_BYTES} B, node ${process.version}, load ${machineInfo().loadavg.join(" ")}`);

    const raw = await rawPhases(nc, `${base}r`, opts, server, log);

    forked = await ForkedService.start(`${base}f`, opts.profileDir, opts.serviceScript);
    const fk = forked;
    const cmdForked = await commandPhases("command (service process)", nc, `${base}f`, opts, () => fk.cpuSeconds(), server, log);
    await forked.stop();
    forked = undefined;

    let cmdInProc: Awaited<ReturnType<typeof commandPhases>> | undefined;
    if (opts.inProcess) {
      const svcNc = await connectNats({ name: `bench-inproc-service-${base}` });
      inProc = { nc: svcNc, service: await CommandService.start(svcNc, { prefix: `${base}i` }) };
      // Client and service share this process: its CPU is the service's too (reported under client).
      cmdInProc = await commandPhases("command (in-process)", nc, `${base}i`, opts, null, server, log);
      await inProc.service.stop();
      await svcNc.close();
      inProc = undefined;
    }

    const rows: Row[] = [raw.sequential, raw.concurrent, cmdForked.sequential, cmdForked.concurrent, cmdInProc?.sequential, cmdInProc?.concurrent]
      .filter((r): r is Row => r !== undefined);
    const ratios = goals(raw, cmdForked, "service process");
    const info = cmdInProc ? goals(raw, cmdInProc, "in-process (info)") : [];

    if (json) {
      console.log(JSON.stringify({
        benchmark: "append",
        config: { ...opts, bodyBytes: BODY_BYTES, rawMessageBytes: raw.messageBytes, commandMessageBytes: cmdForked.messageBytes, ...machineInfo() },
        phases: rows,
        goals: ratios,
        info,
      }, null, 2));
    } else {
      console.log("");
      console.log(table(
        ["phase", "agents", "ops", "ops/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "CPU µs/op client", "service", "nats-server"],
        rows.map((r) => [
          r.name,
          r.concurrency,
          r.ops,
          fmtInt(r.opsPerSec),
          fmt(r.latencyMs.p50, 3),
          fmt(r.latencyMs.p90, 3),
          fmt(r.latencyMs.p99, 3),
          fmt(r.latencyMs.max, 1),
          fmtInt(r.cpuUsPerOp.client),
          r.cpuUsPerOp.service === null ? "(in client)" : fmtInt(r.cpuUsPerOp.service),
          fmtInt(r.cpuUsPerOp.server),
        ]),
      ));
      console.log(`\nstored message size: raw ${raw.messageBytes} B, command path ${cmdForked.messageBytes} B`);
      console.log("");
      console.log(table(
        ["ratio", "value", "goal", "result"],
        [...ratios, ...info].map((g) => [
          g.name,
          g.goal.includes("%") ? `${fmt(g.value * 100, 1)}%` : `${fmt(g.value, 2)}x`,
          g.goal,
          g.name.includes("(info)") ? (g.pass ? "(pass)" : "(miss)") : g.pass ? "PASS" : "MISS",
        ]),
      ));
    }
    const failed = rows.reduce((s, r) => s + r.errors, 0);
    return failed > 0 ? 1 : 0;
  } finally {
    await cleanup();
    await nc.close().catch(() => undefined);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

export const appendBenchmark: Benchmark = {
  name: "append",
  summary: "raw JetStream publish vs. the full command path (propose), sequential latency and concurrent throughput",
  usage: "append [--n 20000] [--warmup N] [--concurrency 64] [--json] [--no-in-process] [--only sequential|concurrent] [--profile [--profile-dir DIR]] [--service-script other/dist/bench/service-process.js]",
  run,
};
