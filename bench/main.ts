/**
 * Benchmark runner: `npm run bench -- <name> [options]`; with no name, lists the benchmarks.
 * Each benchmark is its own module exporting a `Benchmark`; add new ones (replay, search) to BENCHMARKS.
 */
import { appendBenchmark } from "./append.js";
import { asOfBenchmark } from "./asof.js";
import { chaosBenchmark } from "./chaos.js";
import { dreamBenchmark } from "./dream.js";
import { dreamReviewBenchmark } from "./dream-review.js";
import { replayBenchmark } from "./replay.js";
import { peersBenchmark } from "./peers.js";
import { propertyBenchmark } from "./property.js";
import { searchBenchmark } from "./search.js";
import { parseArgs, type Benchmark } from "./util.js";

const BENCHMARKS: Benchmark[] = [appendBenchmark, replayBenchmark, searchBenchmark, propertyBenchmark, chaosBenchmark, peersBenchmark, asOfBenchmark, dreamBenchmark, dreamReviewBenchmark];

function list(): void {
  console.log("usage: npm run bench -- <benchmark> [options]\n\nbenchmarks:");
  for (const b of BENCHMARKS) console.log(`  ${b.name.padEnd(10)} ${b.summary}\n  ${" ".repeat(10)} ${b.usage}`);
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const [name, ...rest] = args.positional;
  if (!name || name === "list" || args.options.has("help")) {
    list();
    return 0;
  }
  const bench = BENCHMARKS.find((b) => b.name === name);
  if (!bench) {
    console.error(`unknown benchmark '${name}'`);
    list();
    return 2;
  }
  if (rest.length > 0) {
    console.error(`unexpected arguments: ${rest.join(" ")}`);
    return 2;
  }
  return bench.run(args);
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err instanceof Error ? err.stack : err);
    process.exit(1);
  },
);
