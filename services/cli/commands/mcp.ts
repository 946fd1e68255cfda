import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { redactUrl } from "../io.js";
import { mcpActor } from "../mcp.js";
import { wholeNumber } from "../options.js";

/** `memledger mcp`: the ledger served to MCP clients, over stdio or streamable HTTP. */
export function register(program: Command, { io, globals }: CliContext): void {
  program
    .command("mcp")
    .description("serve the ledger to MCP clients (Claude Code, Cursor, …): over stdio, or streamable HTTP on 127.0.0.1 with --http")
    .option("--http <port>", "serve streamable HTTP at http://127.0.0.1:<port>/mcp instead of stdio (0: any free port)", wholeNumber(0))
    .option("--files <dir>", "files projection root for the MEMORY.md and memory file resources (env MEMLEDGER_FILES)")
    .action(async (opts: { http?: number; files?: string }, cmd: Command) => {
      const g = globals(cmd);
      const actor = mcpActor(cmd.optsWithGlobals().as as string | undefined, io.env, g);
      const [{ connectNats }, { MemoryClient }, { readModelConfig }, server] = await Promise.all([
        import("../../nats.js"),
        import("../../client.js"),
        import("../../read-models.js"),
        import("../../mcp/server.js"),
      ]);
      const log = (line: string) => io.stderr.write(`memledger mcp: ${line}\n`);
      // A long-lived server: reconnects to NATS forever rather than dying with the agent session still open.
      const nc = await connectNats({ servers: g.nats, name: `memledger-mcp-${g.app}`, reconnect: true });
      // --session / MEMLEDGER_SESSION: hydrate and search report what this session was shown (exposure).
      const client = new MemoryClient(nc, { app: g.app, as: actor, prefix: g.prefix, ...(g.session !== undefined ? { sessionId: g.session } : {}) });
      const filesRoot = readModelConfig(io.env, { filesRoot: opts.files }).filesRoot;
      const who = `${actor.kind}:${actor.id}`;
      const stopped = new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
      });
      if (opts.http !== undefined) {
        const http = await server.serveHttp({ client, filesRoot, port: opts.http });
        // On stdout, so a script that started it on port 0 can read where it listens.
        io.stdout.write(`${JSON.stringify({ status: "ready", url: http.url, app: g.app, as: who, nats: redactUrl(g.nats) })}\n`);
        log(`serving app ${g.app} as ${who} at ${http.url}`);
        await stopped;
        await http.close();
      } else {
        // stdout belongs to the protocol: everything human goes to stderr.
        const { closed } = await server.serveStdio({ client, filesRoot });
        log(`serving app ${g.app} as ${who} over stdio`);
        await Promise.race([closed, stopped]);
      }
      await client.close().catch(() => undefined);
    });
}
