/**
 * `npm run bench -- property`: the model-based property test of the command path (bench/ledger-model.ts,
 * the same model test/ledger/model.int.spec.ts runs 1,000 times in CI) at bench scale: 10,000 random
 * command sequences by default, through two command-service instances with caches of their own, on a
 * private prefix of the real NATS (deleted afterwards). Prints runs, commands, refusals and time; exits
 * 1 with fast-check's report (seed and shrunk counterexample) if any run disagrees with the model.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { CommandService } from "../services/command-service.js";
import { connectNats } from "../services/nats.js";
import { runLedgerProperty } from "./ledger-model.js";
import { benchPrefix, deleteStreamsWithPrefix, flag, fmt, fmtInt, intOption, machineInfo, type BenchArgs, type Benchmark } from "./util.js";

async function run(args: BenchArgs): Promise<number> {
  const runs = intOption(args, "runs", 10_000);
  const instanceCount = intOption(args, "instances", 2, 2);
  const maxCommands = intOption(args, "max-commands", 12);
  const seedOption = args.options.get("seed");
  const seed = typeof seedOption === "string" ? Number(seedOption) : undefined;
  const prefix = benchPrefix("bprop");
  const servers = typeof args.options.get("nats") === "string" ? (args.options.get("nats") as string) : undefined;

  const connections: NatsConnection[] = [];
  const instances: CommandService[] = [];
  try {
    for (let i = 0; i < instanceCount; i++) {
      const nc = await connectNats({ servers, name: `bench-property-${i}` });
      connections.push(nc);
      instances.push(await CommandService.start(nc, { prefix }));
    }
    console.log(`property: ${fmtInt(runs)} runs of up to ${maxCommands} commands over ${instanceCount} instances (prefix ${prefix}) ${JSON.stringify(machineInfo())}`);
    const t0 = performance.now();
    const onRun = (done: number) => {
      if (done % 1000 === 0) console.log(`  ${fmtInt(done)} runs in ${fmt((performance.now() - t0) / 1000, 1)} s`);
    };
    const report = await runLedgerProperty({ instances, app: "property", numRuns: runs, maxCommands, onRun, ...(seed === undefined ? {} : { seed }) });
    const seconds = report.ms / 1000;
    const result = {
      runs: report.runs,
      commands: report.commands,
      refused: report.refused,
      seconds: Number(fmt(seconds, 1)),
      runsPerSec: Number(fmt(report.runs / seconds, 1)),
      commandsPerSec: Number(fmt(report.commands / seconds, 0)),
    };
    if (flag(args, "json")) console.log(JSON.stringify(result));
    else {
      console.log(
        `all ${fmtInt(result.runs)} runs agree with the model: ${fmtInt(result.commands)} commands (${fmtInt(result.refused)} refused) in ${result.seconds} s ` +
          `(${result.runsPerSec} runs/s, ${result.commandsPerSec} commands/s)`,
      );
    }
    return 0;
  } catch (err) {
    console.error(err instanceof Error ? err.message : err);
    const cause = (err as Error | undefined)?.cause;
    if (cause) console.error("caused by:", cause instanceof Error ? cause.message : cause);
    return 1;
  } finally {
    for (const service of instances) await service.stop().catch(() => undefined);
    if (connections[0]) await deleteStreamsWithPrefix(connections[0], prefix).catch(() => undefined);
    for (const nc of connections) await nc.close().catch(() => undefined);
  }
}

export const propertyBenchmark: Benchmark = {
  name: "property",
  summary: "model-based property test of the command path: random propose/revise/approve/reject/supersede/rollback/claim/release across instances with stale caches",
  usage: "property [--runs 10000] [--instances 2] [--max-commands 12] [--seed N] [--nats URL] [--json]",
  run,
};
