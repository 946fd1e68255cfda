import type { Command } from "commander";
import { splitCredentials } from "../nats.js";
import { parseActor } from "../client.js";
import type { Actor } from "../../schemas/primitives.js";
import { redactUrl, type Io } from "./io.js";
import { wholeNumber, type GlobalOptions } from "./options.js";

/**
 * Who the MCP server acts as: --as or MEMLEDGER_AGENT when given; otherwise, on a broker with auth, its
 * NATS user (`agent.coder-1` is agent:coder-1, memledger auth config's naming), since that is the only
 * identity the broker lets it use; otherwise the CLI's default. Never a tool argument.
 */
export function mcpActor(explicit: string | undefined, env: NodeJS.ProcessEnv, g: GlobalOptions): Actor {
  if (explicit !== undefined || (env.MEMLEDGER_AGENT ?? "") !== "") return g.as;
  const user = splitCredentials(g.nats).user;
  const match = user ? /^(agent|human|service)\.([A-Za-z0-9_-]{1,64})$/.exec(user) : null;
  return match ? parseActor(`${match[1]}:${match[2]}`) : g.as;
}

export function registerMcpCommand(program: Command, io: Io, globals: (cmd: Command) => GlobalOptions): void {
  program
    .command("mcp")
    .description("serve the ledger to MCP clients (Claude Code, Cursor, …): over stdio, or streamable HTTP on 127.0.0.1 with --http")
    .option("--http <port>", "serve streamable HTTP at http://127.0.0.1:<port>/mcp instead of stdio (0: any free port)", wholeNumber(0))
    .option("--files <dir>", "files projection root for the MEMORY.md and memory file resources (env MEMLEDGER_FILES)")
    .action(async (opts: { http?: number; files?: string }, cmd: Command) => {
      const g = globals(cmd);
      const actor = mcpActor(cmd.optsWithGlobals().as as string | undefined, io.env, g);
      const [{ connectNats }, { MemoryClient }, { readModelConfig }, server] = await Promise.all([
        import("../nats.js"),
        import("../client.js"),
        import("../read-models.js"),
        import("../mcp/server.js"),
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
