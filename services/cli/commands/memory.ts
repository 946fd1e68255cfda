import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import type { RequestOf } from "../../../schemas/commands.js";
import { invalid } from "../../../schemas/errors.js";
import { readLogPages, type LogEntry } from "../../client.js";
import type { CliContext } from "../context.js";
import { printJson, printLine, readAll, type Io } from "../io.js";
import { asOfOptions, commaList, defined, expectedSeqOption, keyOption, wholeNumber, type AsOfOptions } from "../options.js";

/**
 * A memory's lifecycle and reads:
 *   memledger propose / approve / reject / supersede / rollback   the writes
 *   memledger show ID [--as-of-seq N | --as-of TIME]               its state (now, or read from the log)
 *   memledger log                                                  the app's events
 */
export function register(program: Command, { io, globals, send }: CliContext): void {
  keyOption(
    expectedSeqOption(
      program
        .command("propose")
        .description("propose a new memory, or a new version of one with --memory")
        .requiredOption("--title <text>", "one-line title")
        .option("--body <markdown>", "the body; '-' reads it from stdin")
        .option("--body-file <file>", "read the body from a file ('-': stdin)")
        .option("--scope <scope>", "app, org, agent:<id>, team:<name> or session:<id> (a candidate of your open session; default app)")
        .option("--kind <kind>", "note, fact, decision, convention, procedure or fragile (default note)")
        .option("--tags <a,b>", "tags, comma-separated or repeated", commaList)
        .option("--paths <p,q>", "file paths it concerns, comma-separated or repeated", commaList)
        .option("--importance <n>", "1 to 5 (default 3)", wholeNumber(0))
        .option("--memory <id>", "revise this memory: the proposal becomes its next version"),
      STALE_MEMORY_SEQ,
    ),
    "idempotency key: retrying with it never proposes twice",
  ).action(async (opts, cmd: Command) => {
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
    keyOption(expectedSeqOption(withOptions(program.command(verb).description(description).argument("<id>", "memory id")), STALE_MEMORY_SEQ)).action(
      async (id: string, opts: Record<string, unknown>, cmd: Command) => {
        const g = globals(cmd);
        const payload = defined({ memoryId: id, ...payloadOf(opts), expectedSeq: opts.expectedSeq, key: opts.key, sessionId: g.session });
        printJson(io, await send(g, verb, payload as RequestOf<V>));
      },
    );

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

  asOfOptions(
    program
      .command("show")
      .description("a memory's current state (or, with --as-of-seq/--as-of, as it stood then, read from the log), every version and its last sequence")
      .argument("<id>", "memory id"),
    "as the log stood at this time (ISO 8601)",
  ).action(async (id: string, opts: AsOfOptions, cmd: Command) => {
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
      // Paged: one reply holds what fits in a NATS message, and --limit may ask for more.
      const entries = await readLogPages((request) => send<"log", LogEntry[]>(g, "log", request), defined({ memoryId: opts.memory, sinceSeq: opts.sinceSeq, limit: opts.limit }));
      for (const entry of entries) {
        if (g.json) printJson(io, entry);
        else printLine(io, logLine(entry));
      }
    });
}

const STALE_MEMORY_SEQ = "the memory's sequence as you read it; a stale one is a conflict (exit 3)";

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
    case "memory.reinstated":
      return `reason: ${quote(e.data.reason)}`;
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
