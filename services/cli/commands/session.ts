import type { Command } from "commander";
import { invalid } from "../../../schemas/errors.js";
import { MemoryClient } from "../../client.js";
import type { CliContext } from "../context.js";
import { printJson } from "../io.js";
import { checkRequest, defined, expectedSeqOption, keyOption, type GlobalOptions } from "../options.js";

/** `memledger session start | end | show`: agent work sessions. */
export function register(program: Command, { io, globals, send }: CliContext): void {
  const session = program.command("session").description("agent work sessions: start, end, show");

  keyOption(
    session
      .command("start")
      .description("start a session; prints its id (with --session, starts that id)")
      .option("--task <text>", "what the session is for")
      .option("--branch <name>", "git branch")
      .option("--worktree <path>", "git worktree"),
    "idempotency key: retrying with it never starts two sessions",
  ).action(async (opts, cmd: Command) => {
    const g = globals(cmd);
    printJson(io, await send(g, "session_start", defined({ task: opts.task, branch: opts.branch, worktree: opts.worktree, key: opts.key, sessionId: g.session })));
  });

  keyOption(
    expectedSeqOption(
      session
        .command("end")
        .description("end a session")
        .argument("[id]", "session id (default: --session / MEMLEDGER_SESSION)")
        .option("--summary <text>", "what came of it"),
      "the session's sequence as you read it",
    ),
  )
    .option("--transcript <file>", "store this transcript (object store, by SHA-256) and reference it from the session.ended event")
    .action(async (id: string | undefined, opts, cmd: Command) => {
      const g = globals(cmd);
      const sessionId = sessionIdOf(id, g, "end");
      const payload = defined({ sessionId, summary: opts.summary, expectedSeq: opts.expectedSeq, key: opts.key });
      if (opts.transcript === undefined) return printJson(io, await send(g, "session_end", payload));
      // The SDK stores the transcript before the event that references it (services/transcripts.ts).
      checkRequest("session_end", payload);
      const client = await MemoryClient.connect({ app: g.app, as: g.as, prefix: g.prefix, servers: g.nats });
      try {
        const { sessionId: _id, ...options } = payload;
        printJson(io, await client.endSession(sessionId, { ...options, transcriptFile: opts.transcript as string }));
      } finally {
        await client.close().catch(() => undefined);
      }
    });

  session
    .command("show")
    .description("a session's state")
    .argument("[id]", "session id (default: --session / MEMLEDGER_SESSION)")
    .action(async (id: string | undefined, _opts, cmd: Command) => {
      const g = globals(cmd);
      printJson(io, await send(g, "session_show", { sessionId: sessionIdOf(id, g, "show") }), !g.json);
    });
}

function sessionIdOf(id: string | undefined, g: GlobalOptions, verb: string): string {
  const sessionId = id ?? g.session;
  if (sessionId === undefined) throw invalid(`session ${verb} needs a session id: an argument, --session or MEMLEDGER_SESSION`);
  return sessionId;
}
