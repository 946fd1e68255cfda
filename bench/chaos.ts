/**
 * `npm run bench -- chaos [--iterations N] [--agents N] [--write-ms MS] [--instances N] [--seed S]`
 *
 * The chaos loop of the fault suite (bench/chaos-driver.ts, which test/faults/chaos.e2e.spec.ts runs for a
 * few iterations in CI), for as many iterations as asked: two `up` instances and a curator process on the
 * NATS at NATS_URL, agents writing, approving, promoting and claiming, and one SIGKILL per iteration. It
 * counts instead of stopping at the first broken guarantee, and exits 1 if any broke.
 */
import { runChaos } from "./chaos-driver.js";
import { flag, intOption, type BenchArgs, type Benchmark } from "./util.js";

async function run(args: BenchArgs): Promise<number> {
  const iterations = intOption(args, "iterations", 20);
  const seed = typeof args.options.get("seed") === "string" ? (args.options.get("seed") as string) : `bench-${Date.now()}`;
  console.log(`chaos: ${iterations} iterations, seed ${seed}`);
  const started = performance.now();
  const summary = await runChaos({
    nats: process.env.NATS_URL ?? "nats://127.0.0.1:4222",
    redisUrl: process.env.REDIS_URL ?? "redis://127.0.0.1:6379",
    iterations,
    seed,
    agents: intOption(args, "agents", 6),
    writeMs: intOption(args, "write-ms", 4_000),
    instances: intOption(args, "instances", 2),
    stopOnViolation: flag(args, "stop"),
    log: (line) => console.log(`  ${line}`),
  });
  const restarts = summary.iterations.map((i) => i.restartMs).sort((a, b) => a - b);
  console.log(
    [
      `iterations run          ${summary.iterations.length}`,
      `kills                   up ${summary.kills.up}, curator ${summary.kills.curator}, projection leader ${summary.kills.projection}`,
      `commands acknowledged   ${summary.acked} (${summary.unresolved} never answered)`,
      `events in the log       ${summary.events}`,
      `acknowledged lost       ${summary.lost}`,
      `duplicated              ${summary.duplicates}`,
      `promotions              ${summary.promotions.requested} requested, ${summary.promotions.accepted} accepted, ${summary.promotions.rejected} rejected`,
      `restart to ready (ms)   median ${restarts[Math.floor(restarts.length / 2)] ?? "-"}, max ${restarts.at(-1) ?? "-"}`,
      `violations              ${summary.violations.length}`,
      `seconds                 ${((performance.now() - started) / 1000).toFixed(1)}`,
    ].join("\n"),
  );
  for (const v of summary.violations.slice(0, 20)) console.log(`  ${v}`);
  return summary.violations.length === 0 ? 0 : 1;
}

export const chaosBenchmark: Benchmark = {
  name: "chaos",
  summary: "SIGKILL up instances, the curator or the projection leader while agents write; every guarantee checked after each iteration",
  usage: "--iterations N (20) --agents N (6) --write-ms MS (4000) --instances N (2) --seed S --stop (stop at the first violation)",
  run,
};
