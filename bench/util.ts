import { randomBytes } from "node:crypto";
import { loadavg } from "node:os";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";

/** Parsed `--name value` / `--flag` options; positional words are the benchmark names. */
export interface BenchArgs {
  positional: string[];
  options: Map<string, string | true>;
}

export function parseArgs(argv: string[]): BenchArgs {
  const positional: string[] = [];
  const options = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("--")) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    if (eq > 0) {
      options.set(arg.slice(2, eq), arg.slice(eq + 1));
    } else if (i + 1 < argv.length && !argv[i + 1]!.startsWith("--")) {
      options.set(arg.slice(2), argv[++i]!);
    } else {
      options.set(arg.slice(2), true);
    }
  }
  return { positional, options };
}

export function intOption(args: BenchArgs, name: string, fallback: number, min = 1): number {
  const raw = args.options.get(name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (raw === true || !Number.isInteger(n) || n < min) throw new Error(`--${name} needs an integer >= ${min}, got ${String(raw)}`);
  return n;
}

export const flag = (args: BenchArgs, name: string): boolean => args.options.get(name) === true || args.options.get(name) === "true";

/** A benchmark module: `npm run bench -- <name>` runs it. */
export interface Benchmark {
  name: string;
  summary: string;
  usage: string;
  run(args: BenchArgs): Promise<number>; // exit code
}

/** A unique prefix for subjects and streams; every stream whose name starts with it is deleted afterwards. */
export const benchPrefix = (label: string): string => `${label}${randomBytes(4).toString("hex")}`;

export async function deleteStreamsWithPrefix(nc: NatsConnection, prefix: string): Promise<string[]> {
  const jsm = await jetstreamManager(nc);
  const deleted: string[] = [];
  for await (const name of jsm.streams.names()) {
    if (name.startsWith(prefix)) {
      await jsm.streams.delete(name).then(
        () => deleted.push(name),
        () => undefined,
      );
    }
  }
  return deleted;
}

// ---- statistics -------------------------------------------------------------------------------

export interface LatencyStats {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentiles over milliseconds. */
export function latencyStats(samples: Float64Array | number[]): LatencyStats {
  const sorted = Float64Array.from(samples).sort();
  const n = sorted.length;
  const at = (p: number) => (n === 0 ? NaN : sorted[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))]!);
  let sum = 0;
  for (const v of sorted) sum += v;
  return { count: n, p50: at(50), p90: at(90), p99: at(99), max: n ? sorted[n - 1]! : NaN, mean: n ? sum / n : NaN };
}

export interface PhaseResult {
  name: string;
  mode: "sequential" | "concurrent";
  concurrency: number;
  ops: number;
  seconds: number;
  opsPerSec: number;
  latencyMs: LatencyStats;
  /** CPU seconds of this process (user+system) during the measured part. */
  cpuSeconds: number;
  errors: number;
}

/**
 * Runs `total` operations spread over `concurrency` workers, each one awaiting its previous operation
 * before starting the next (an "agent" working sequentially), and records every latency.
 */
export async function measure(
  name: string,
  concurrency: number,
  total: number,
  op: (worker: number, i: number) => Promise<unknown>,
): Promise<PhaseResult> {
  const latencies = new Float64Array(total);
  let next = 0;
  let errors = 0;
  let firstError: unknown;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const worker = async (w: number) => {
    for (;;) {
      const i = next++;
      if (i >= total) return;
      const s = performance.now();
      try {
        await op(w, i);
      } catch (err) {
        errors++;
        firstError ??= err;
      }
      latencies[i] = performance.now() - s;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  if (errors > 0) {
    console.error(`  ${name}: ${errors} of ${total} operations failed; first: ${(firstError as Error)?.message ?? firstError}`);
  }
  return {
    name,
    mode: concurrency === 1 ? "sequential" : "concurrent",
    concurrency,
    ops: total,
    seconds,
    opsPerSec: total / seconds,
    latencyMs: latencyStats(latencies),
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    errors,
  };
}

// ---- output -----------------------------------------------------------------------------------

export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, c) => Math.max(...cells.map((r) => r[c]?.length ?? 0)));
  const line = (r: string[]) => r.map((v, c) => (c === 0 ? v.padEnd(widths[c]!) : v.padStart(widths[c]!))).join("  ");
  return [line(cells[0]!), widths.map((w) => "-".repeat(w)).join("  "), ...cells.slice(1).map(line)].join("\n");
}

export const fmt = (n: number, digits = 2): string => (Number.isFinite(n) ? n.toFixed(digits) : "-");
export const fmtInt = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "-");

export const machineInfo = () => ({
  node: process.version,
  loadavg: loadavg().map((l) => Number(l.toFixed(2))),
});
