import { readFile } from "node:fs/promises";
import { Command, CommanderError } from "commander";
import type { RequestOf, Verb } from "../../schemas/commands.js";
import { invalid } from "../../schemas/errors.js";
import { MemoryClient, type LogEntry } from "../client.js";
import { printJson, printLine, readAll, reportFailure, toFailure, type Io } from "./io.js";
import { checkRequest, commaList, defined, resolveGlobals, wholeNumber, type GlobalOptions } from "./options.js";
import { registerReadModelCommands } from "./read-models.js";
import { registerOrgCommands } from "./org.js";
import { registerHydrateCommand } from "./hydrate.js";
import { registerEvalCommand } from "./eval.js";
import { registerAuditCommands } from "./audit.js";
import { registerMcpCommand } from "./mcp.js";
import { registerInitCommand } from "./init.js";
import { registerHookCommands } from "./hook.js";
import { registerWatchCommand } from "./watch.js";
import { registerQuarantineCommand } from "./quarantine.js";

/** Sends one request: checked locally first (nothing is sent when it is invalid), then to the service. */
export async function send<V extends Verb, R>(g: GlobalOptions, verb: V, payload: RequestOf<V>): Promise<R> {
  checkRequest(verb, payload);
  const client = await MemoryClient.connect({ app: g.app, as: g.as, prefix: g.prefix, servers: g.nats });
  try {
    return await client.request<V, R>(verb, payload);
  } finally {
    await client.close().catch(() => undefined);
  }
}

async function bodyFrom(opts: { body?: string; bodyFile?: string }, io: Io): Promise<string> {
  if (opts.body !== undefined && opts.bodyFile !== undefined) throw invalid("give --body or --body-file, not both");
  if (opts.body === "-" || opts.bodyFile === "-") return readAll(io.stdin);
  if (opts.body !== undefined) return opts.body;
  if (opts.bodyFile !== undefined) {
    try {
      return await readFile(opts.bodyFile, "utf8");
    } catch (err) {
      throw invalid(`cannot read --body-file ${opts.bodyFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  throw invalid("propose needs a body: --body <markdown>, --body - (stdin) or --body-file <file>");
}

const quote = (s: string, max = 80): string => JSON.stringify(s.length > max ? `${s.slice(0, max - 1)}…` : s);

/** What changed, in a few words, for the human-readable log. */
function detail(e: LogEntry): string {
  switch (e.type) {
    case "memory.proposed":
      return `v${e.data.version} ${quote(e.data.title)}`;
    case "memory.approved":
      return `v${e.data.version}`;
    case "memory.rejected":
      return `v${e.data.version} reason: ${quote(e.data.reason)}`;
    case "memory.superseded":
      return `${e.data.by ? `by ${e.data.by} ` : ""}reason: ${quote(e.data.reason)}`;
    case "memory.rolled_back":
      return `v${e.data.fromVersion} -> v${e.data.toVersion}`;
    case "session.started":
      return `task: ${quote(e.data.task)}${e.data.branch ? ` branch: ${e.data.branch}` : ""}`;
    case "session.ended":
      return e.data.summary ? `summary: ${quote(e.data.summary)}` : "";
    default: {
      // Event families added later still show what they carry.
      const data = JSON.stringify((e as { data?: unknown }).data ?? {});
      return data === "{}" ? "" : data.length > 120 ? `${data.slice(0, 119)}…` : data;
    }
  }
}

export const logLine = (e: LogEntry): string =>
  [
    String(e.seq).padStart(6),
    e.time,
    e.type.padEnd(18),
    e.aggregateId,
    `${e.actor.kind}:${e.actor.id}`,
    detail(e),
    e.sessionId ? `(session ${e.sessionId})` : "",
  ]
    .filter((part) => part !== "")
    .join("  ");

const GLOBALS_HELP = `
Global options go before or after the command. Environment defaults:
  MEMLEDGER_APP, NATS_URL, MEMLEDGER_AGENT, MEMLEDGER_PREFIX, MEMLEDGER_SESSION.
Exit status: 0 ok, 2 invalid input or usage, 3 conflict, 4 forbidden, 5 not found, 1 anything else.`;

export function buildProgram(io: Io, setExitCode: (code: number) => void): Command {
  const program = new Command("memledger");
  program
    .description("Event-sourced memory ledger for teams of AI agents, over NATS JetStream")
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      // run() prints errors itself, as one line (or JSON with --json).
      outputError: () => undefined,
    })
    .configureHelp({ showGlobalOptions: true })
    .option("--app <name>", "app whose ledger to use (env MEMLEDGER_APP, default \"default\")")
    .option("--nats <url>", "NATS server URL (env NATS_URL, default nats://127.0.0.1:4222)")
    .option("--as <actor>", "who acts: <agent id> or <kind>:<id>, kind agent|human|service (env MEMLEDGER_AGENT, default \"cli\")")
    .option("--prefix <prefix>", "subject and stream prefix (env MEMLEDGER_PREFIX, default \"memledger\")")
    .option("--session <id>", "session id sent with commands (env MEMLEDGER_SESSION)")
    .option("--json", "machine-readable output: one JSON value a line; errors as JSON on stderr")
    .addHelpText("after", GLOBALS_HELP);

  const globals = (cmd: Command): GlobalOptions => resolveGlobals(cmd.optsWithGlobals(), io.env);

  program
    .command("up")
    .description("run the ledger: command service and projections, until SIGINT or SIGTERM")
    .option("--replicas <n>", "replicas for the streams it creates (1 on a single server, 3 in a cluster)", wholeNumber(1))
    .option("--files <dir>", "markdown file store root (env MEMLEDGER_FILES, default .memledger/files)")
    .option("--policy <file>", "who may do what, JSON or YAML (env MEMLEDGER_POLICY; default: everyone may do everything)")
    .option("--embedded", "start nats-server / redis-server from PATH when nothing answers on a loopback URL (default: only for the default URLs)")
    .option("--no-embedded", "never start servers, even for the default URLs")
    .action(async (opts: { replicas?: number; files?: string; policy?: string; embedded?: boolean }, cmd: Command) => {
      // Loaded on use: the runtime pulls in every projection, and most CLI calls are one request.
      const { up } = await import("./up.js");
      const { withEmbedded } = await import("../embedded.js");
      const { readModelConfig } = await import("../read-models.js");
      const g = globals(cmd);
      const log = (line: string) => io.stderr.write(`memledger: ${line}\n`);
      const embedding = { natsUrl: g.nats, redisUrl: readModelConfig(io.env).redisUrl, embedded: opts.embedded, env: io.env, log };
      setExitCode(await withEmbedded(embedding, () => up(g, opts, io)));
    });

  program
    .command("propose")
    .description("propose a new memory, or a new version of one with --memory")
    .requiredOption("--title <text>", "one-line title")
    .option("--body <markdown>", "the body; '-' reads it from stdin")
    .option("--body-file <file>", "read the body from a file ('-': stdin)")
    .option("--scope <scope>", "app, org, agent:<id> or team:<name> (default app)")
    .option("--kind <kind>", "note, fact, decision, convention, procedure or fragile (default note)")
    .option("--tags <a,b>", "tags, comma-separated or repeated", commaList)
    .option("--paths <p,q>", "file paths it concerns, comma-separated or repeated", commaList)
    .option("--importance <n>", "1 to 5 (default 3)", wholeNumber(0))
    .option("--memory <id>", "revise this memory: the proposal becomes its next version")
    .option("--expected-seq <n>", "the memory's sequence as you read it; a stale one is a conflict (exit 3)", wholeNumber(0))
    .option("--key <key>", "idempotency key: retrying with it never proposes twice")
    .action(async (opts, cmd: Command) => {
      const g = globals(cmd);
      const body = await bodyFrom(opts, io);
      const result = await send(g, "propose", defined({
        memoryId: opts.memory,
        title: opts.title,
        body,
        scope: opts.scope,
        kind: opts.kind,
        tags: opts.tags,
        paths: opts.paths,
        importance: opts.importance,
        expectedSeq: opts.expectedSeq,
        key: opts.key,
        sessionId: g.session,
      }));
      printJson(io, result);
    });

  /**
   * A write on one existing memory: `<verb> <id> [verb options] [--expected-seq N] [--key K]`. Each verb
   * adds its own options and maps them onto its payload.
   */
  const memoryWrite = <V extends "approve" | "reject" | "supersede" | "rollback">(
    verb: V,
    description: string,
    withOptions: (c: Command) => Command,
    payloadOf: (opts: Record<string, unknown>) => Record<string, unknown>,
  ) =>
    withOptions(program.command(verb).description(description).argument("<id>", "memory id"))
      .option("--expected-seq <n>", "the memory's sequence as you read it; a stale one is a conflict (exit 3)", wholeNumber(0))
      .option("--key <key>", "idempotency key")
      .action(async (id: string, opts: Record<string, unknown>, cmd: Command) => {
        const g = globals(cmd);
        const payload = defined({ memoryId: id, ...payloadOf(opts), expectedSeq: opts.expectedSeq, key: opts.key, sessionId: g.session });
        printJson(io, await send(g, verb, payload as RequestOf<V>));
      });

  memoryWrite(
    "approve",
    "approve a pending version (default: the pending one) and make it active",
    (c) => c.option("--version <v>", "the version to approve", wholeNumber(1)),
    (o) => ({ version: o.version }),
  );
  memoryWrite(
    "reject",
    "reject a pending version",
    (c) => c.requiredOption("--reason <text>", "why").option("--version <v>", "the version to reject (default: the pending one)", wholeNumber(1)),
    (o) => ({ version: o.version, reason: o.reason }),
  );
  memoryWrite(
    "supersede",
    "retire a memory, optionally naming the one that replaces it",
    (c) => c.option("--by <id>", "the memory that replaces it").requiredOption("--reason <text>", "why"),
    (o) => ({ by: o.by, reason: o.reason }),
  );
  memoryWrite(
    "rollback",
    "make an earlier approved version active again",
    (c) => c.requiredOption("--to-version <v>", "the approved version to restore", wholeNumber(1)),
    (o) => ({ toVersion: o.toVersion }),
  );

  program
    .command("show")
    .description("a memory's current state (or, with --as-of-seq/--as-of, as it stood then, read from the log), every version and its last sequence")
    .argument("<id>", "memory id")
    .option("--as-of-seq <n>", "as the log stood at this stream sequence", wholeNumber(1))
    .option("--as-of <time>", "as the log stood at this time (ISO 8601)")
    .action(async (id: string, opts: { asOfSeq?: number; asOf?: string }, cmd: Command) => {
      const g = globals(cmd);
      if (opts.asOfSeq === undefined && opts.asOf === undefined) {
        printJson(io, await send(g, "show", { memoryId: id }), !g.json);
        return;
      }
      const { showAsOf } = await import("./audit.js");
      printJson(io, await showAsOf(g, id, opts), !g.json);
    });

  program
    .command("log")
    .description("the app's events, oldest first: seq, time, type, aggregate, actor, what changed")
    .option("--memory <id>", "only this memory's events")
    .option("--since-seq <n>", "only events from this sequence on (inclusive)", wholeNumber(0))
    .option("--limit <n>", "at most this many events (default 100)", wholeNumber(1))
    .action(async (opts, cmd: Command) => {
      const g = globals(cmd);
      const entries = await send<"log", LogEntry[]>(g, "log", defined({ memoryId: opts.memory, sinceSeq: opts.sinceSeq, limit: opts.limit }));
      for (const entry of entries) {
        if (g.json) printJson(io, entry);
        else printLine(io, logLine(entry));
      }
    });

  const session = program.command("session").description("agent work sessions: start, end, show");
  const sessionIdOf = (id: string | undefined, g: GlobalOptions, verb: string): string => {
    const sessionId = id ?? g.session;
    if (sessionId === undefined) throw invalid(`session ${verb} needs a session id: an argument, --session or MEMLEDGER_SESSION`);
    return sessionId;
  };

  session
    .command("start")
    .description("start a session; prints its id (with --session, starts that id)")
    .option("--task <text>", "what the session is for")
    .option("--branch <name>", "git branch")
    .option("--worktree <path>", "git worktree")
    .option("--key <key>", "idempotency key: retrying with it never starts two sessions")
    .action(async (opts, cmd: Command) => {
      const g = globals(cmd);
      printJson(io, await send(g, "session_start", defined({ task: opts.task, branch: opts.branch, worktree: opts.worktree, key: opts.key, sessionId: g.session })));
    });

  session
    .command("end")
    .description("end a session")
    .argument("[id]", "session id (default: --session / MEMLEDGER_SESSION)")
    .option("--summary <text>", "what came of it")
    .option("--expected-seq <n>", "the session's sequence as you read it", wholeNumber(0))
    .option("--key <key>", "idempotency key")
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

  program
    .command("auth")
    .description("identity from the broker: nats-server users and permissions from a policy")
    .command("config")
    .description("write a nats-server config (users, permissions, JetStream) and, beside it, a 0600 credentials file; prints no secret")
    .requiredOption("--policy <file>", "the policy whose actors become users (JSON or YAML)")
    .option("--out <file>", "the config to write (default nats.conf); credentials go to <name>.credentials.json beside it")
    .option("--port <n>", "port nats-server listens on (default 4222)", wholeNumber(1))
    .option("--host <addr>", "address nats-server listens on (default 127.0.0.1)")
    .option("--store-dir <dir>", "JetStream store directory (default: jetstream beside the config)")
    .option("--bcrypt-cost <n>", "bcrypt cost of the password hashes in the config (default 8; every login pays it)", wholeNumber(4))
    .action(async (opts: { policy: string; out?: string; port?: number; host?: string; storeDir?: string; bcryptCost?: number }, cmd: Command) => {
      const g = globals(cmd);
      const { writeAuthConfig } = await import("../auth/broker-config.js");
      printJson(io, await writeAuthConfig({ policyFile: opts.policy, out: opts.out, prefix: g.prefix, port: opts.port, host: opts.host, storeDir: opts.storeDir, bcryptCost: opts.bcryptCost }), !g.json);
    });

  registerReadModelCommands(program, io, globals, (g, verb, payload) => send(g, verb as Verb, payload as RequestOf<Verb>));
  registerHydrateCommand(program, io, globals, (g, verb, payload) => send(g, verb as Verb, payload as RequestOf<Verb>));
  registerOrgCommands(program, io, globals, send, run, setExitCode);
  registerEvalCommand(program, io, globals);
  registerAuditCommands(program, io, globals, setExitCode);
  registerMcpCommand(program, io, globals);
  registerInitCommand(program, io, globals);
  registerHookCommands(program, io, globals);
  registerWatchCommand(program, io, globals);
  registerQuarantineCommand(program, io, globals, send);

  return program;
}

/** Parses argv (without node and script), runs the verb, reports any failure; resolves to the exit status. */
export async function run(argv: string[], io: Io): Promise<number> {
  let exitCode = 0;
  const program = buildProgram(io, (code) => {
    exitCode = code;
  });
  try {
    await program.parseAsync(argv, { from: "user" });
    return exitCode;
  } catch (err) {
    // --help, `help` and the like end through exitOverride with status 0.
    if (err instanceof CommanderError && err.exitCode === 0) return 0;
    const failure =
      err instanceof CommanderError && err.code === "commander.help"
        ? toFailure(invalid("missing command; see memledger --help"))
        : toFailure(err);
    const json = program.opts().json === true || argv.includes("--json");
    reportFailure(io, failure, json);
    if (io.env.MEMLEDGER_DEBUG && err instanceof Error && err.stack) io.stderr.write(`${err.stack}\n`);
    return failure.exitCode;
  }
}
