import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { wholeNumber } from "../options.js";

/** `memledger up`: the runtime (services/cli/up.ts), behind the embedded servers when asked for. */
export function register(program: Command, { io, globals, setExitCode }: CliContext): void {
  program
    .command("up")
    .description("run the ledger: command service and projections, until SIGINT or SIGTERM")
    .option("--replicas <n>", "replicas for the streams it creates (1 on a single server, 3 in a cluster)", wholeNumber(1))
    .option("--files <dir>", "markdown file store root (env MEMLEDGER_FILES, default .memledger/files)")
    .option("--policy <file>", "who may do what, JSON or YAML (env MEMLEDGER_POLICY; default: everyone may do everything)")
    .option("--embedded", "start nats-server / redis-server from PATH when nothing answers on a loopback URL (default: only for the default URLs)")
    .option("--no-embedded", "never start servers, even for the default URLs")
    .option("--no-session-review", "do not review session candidates when a session ends (docs/candidates.md)")
    .option("--dream", "run the scheduled consolidation: check each app's gates every MEMLEDGER_DREAM_INTERVAL_MS (env MEMLEDGER_DREAM=1; docs/consolidation.md)")
    .option("--snapshot-every <n>", "write an as-of snapshot of each app every N events (default 10000; 0: none; docs/audit.md)", wholeNumber(0))
    .action(async (opts: { replicas?: number; files?: string; policy?: string; embedded?: boolean; sessionReview?: boolean; dream?: boolean; snapshotEvery?: number }, cmd: Command) => {
      // Loaded on use: the runtime pulls in every projection, and most CLI calls are one request.
      const { up } = await import("../up.js");
      const { withEmbedded } = await import("../../embedded.js");
      const { readModelConfig } = await import("../../read-models.js");
      const g = globals(cmd);
      const log = (line: string) => io.stderr.write(`memledger: ${line}\n`);
      const embedding = { natsUrl: g.nats, redisUrl: readModelConfig(io.env).redisUrl, embedded: opts.embedded, env: io.env, log };
      setExitCode(await withEmbedded(embedding, () => up(g, opts, io)));
    });
}
