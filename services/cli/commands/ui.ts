import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { printLine } from "../io.js";
import { wholeNumber } from "../options.js";

/**
 * `memledger ui [--port 7420] [--host 127.0.0.1] [--token T] --as human:ID`: the review page
 * (services/ui/server.ts), until SIGINT or SIGTERM. It acts as that human: its commands go through the
 * command service like the CLI's, so the broker and the policy decide what it may do.
 */
export function register(program: Command, { io, globals }: CliContext): void {
  program
    .command("ui")
    .description("serve the review page (queue, consolidation runs, memories, timeline, claims) as a human (--as human:<id>), until SIGINT or SIGTERM")
    .option("--port <n>", "port to listen on (default 7420; 0 picks a free one)", wholeNumber(0))
    .option("--host <address>", "address to bind (default 127.0.0.1; any other needs --token)")
    .option("--token <token>", "required on every request (env MEMLEDGER_UI_TOKEN; at least 16 characters); needed to bind a non-loopback address")
    .option("--read-nats <url>", "NATS URL for direct log reads (exposure, live updates, transcripts), e.g. the auditor's (env MEMLEDGER_UI_READ_NATS; default the same as --nats)")
    .action(async (opts: { port?: number; host?: string; token?: string; readNats?: string }, cmd: Command) => {
      const g = globals(cmd);
      const { startUi } = await import("../../ui/server.js");
      const token = opts.token ?? (io.env.MEMLEDGER_UI_TOKEN || undefined);
      const server = await startUi({
        host: opts.host ?? "127.0.0.1",
        port: opts.port ?? 7420,
        token,
        actor: g.as,
        app: g.app,
        prefix: g.prefix,
        nats: g.nats,
        readNats: opts.readNats ?? (io.env.MEMLEDGER_UI_READ_NATS || undefined),
        log: (line) => io.stderr.write(`memledger ui: ${line}\n`),
      });
      printLine(io, `memledger ui: listening on ${server.url} as ${g.as.kind}:${g.as.id}${token ? " (token required)" : ""}`);
      await new Promise<void>((resolve) => {
        process.once("SIGINT", resolve);
        process.once("SIGTERM", resolve);
      });
      await server.close();
    });
}
