import { InvalidArgumentError, type Command } from "commander";
import ms from "ms";
import type { z } from "zod";
import { DEFAULT_PREFIX, Prefix } from "../../events/subjects.js";
import { REQUESTS, type RequestOf, type Verb } from "../../schemas/commands.js";
import { invalid } from "../../schemas/errors.js";
import { AppName, Id, type Actor } from "../../schemas/primitives.js";
import { RETRIEVAL_MODES, type RetrievalMode } from "../../schemas/retrieval.js";
import type { AsOf } from "../audit/history.js";
import { parseActor } from "../client.js";
import { DEFAULT_NATS_URL } from "../nats.js";

/** The options every verb accepts, before or after it, with their environment defaults applied and checked. */
export interface GlobalOptions {
  app: string;
  nats: string;
  as: Actor;
  prefix: string;
  session: string | undefined;
  json: boolean;
}

export interface RawGlobalOptions {
  app?: string;
  nats?: string;
  as?: string;
  prefix?: string;
  session?: string;
  json?: boolean;
}

const nonEmpty = (s: string | undefined): string | undefined => (s === undefined || s === "" ? undefined : s);

export function resolveGlobals(raw: RawGlobalOptions, env: NodeJS.ProcessEnv): GlobalOptions {
  const app = raw.app ?? nonEmpty(env.MEMLEDGER_APP) ?? "default";
  const appOk = AppName.safeParse(app);
  if (!appOk.success) throw invalid(`--app '${app}': ${appOk.error.issues[0]?.message}`);
  const prefix = raw.prefix ?? nonEmpty(env.MEMLEDGER_PREFIX) ?? DEFAULT_PREFIX;
  const prefixOk = Prefix.safeParse(prefix);
  if (!prefixOk.success) throw invalid(`--prefix '${prefix}': ${prefixOk.error.issues[0]?.message}`);
  const session = raw.session ?? nonEmpty(env.MEMLEDGER_SESSION);
  if (session !== undefined) {
    const sessionOk = Id.safeParse(session);
    if (!sessionOk.success) throw invalid(`--session '${session}': ${sessionOk.error.issues[0]?.message}`);
  }
  return {
    app,
    nats: raw.nats ?? nonEmpty(env.NATS_URL) ?? DEFAULT_NATS_URL,
    as: parseActor(raw.as ?? nonEmpty(env.MEMLEDGER_AGENT) ?? "cli"),
    prefix,
    session,
    json: raw.json === true,
  };
}

/** A commander argument parser for whole numbers; anything else is a usage error (exit 2), sent nowhere. */
export const wholeNumber =
  (min: number) =>
  (value: string): number => {
    const n = /^\s*\d+\s*$/.test(value) ? Number(value) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`expected a whole number, ${min} or more`);
    return n;
  };

/** `a,b` or repeated flags (`--tags a --tags b`); blanks dropped. */
export const commaList = (value: string, previous: string[] | undefined): string[] => [
  ...(previous ?? []),
  ...value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0),
];

/** Request fields named by the flag that sets them, so an error names what the user typed. */
const FLAG: Record<string, string> = {
  memoryId: "memory id",
  title: "--title",
  body: "--body",
  scope: "--scope",
  kind: "--kind",
  tags: "--tags",
  paths: "--paths",
  importance: "--importance",
  expectedSeq: "--expected-seq",
  key: "--key",
  sessionId: "--session",
  version: "--version",
  toVersion: "--to-version",
  reason: "--reason",
  by: "--by",
  task: "--task",
  branch: "--branch",
  worktree: "--worktree",
  summary: "--summary",
  sinceSeq: "--since-seq",
  limit: "--limit",
};

/**
 * Checks a request against the same schema the service applies, so bad input fails here with the
 * flag's name, before any connection is made; the service checks again anyway.
 */
export function checkRequest<V extends Verb>(verb: V, payload: RequestOf<V>): RequestOf<V> {
  const result = (REQUESTS[verb] as z.ZodType).safeParse(payload);
  if (result.success) return payload;
  const first = result.error.issues[0];
  const field = first?.path[0];
  const where = field === undefined ? "request" : (FLAG[String(field)] ?? first!.path.join("."));
  const index = first && first.path.length > 1 ? ` (item ${String(first.path[1])})` : "";
  throw invalid(`${verb.replace("_", " ")}: ${where}${index}: ${first?.message ?? "invalid"}`, {
    issues: result.error.issues.map((i) => ({ path: i.path.map(String), message: i.message })),
  });
}

/** Drops undefined fields: the request schemas are strict and JSON drops them anyway, but keep it explicit. */
export const defined = <T extends Record<string, unknown>>(o: T): T =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;

/*
 * Flags several commands take, each spelled and parsed here once. A command passes its own help text
 * where the flag means something particular to it (whose sequence, what the key protects).
 */

/** `--key`: the idempotency key of a command. */
export const keyOption = (cmd: Command, help = "idempotency key"): Command => cmd.option("--key <key>", help);

/** `--expected-seq`: optimistic concurrency; a stale sequence is a conflict (exit 3). */
export const expectedSeqOption = (cmd: Command, help: string): Command => cmd.option("--expected-seq <n>", help, wholeNumber(0));

/** `10m`, `90s`, `2h` or plain milliseconds. */
export function leaseMs(value: string): number {
  const parsed = /^\d+$/.test(value) ? Number(value) : ms(value as ms.StringValue);
  if (typeof parsed !== "number" || !Number.isFinite(parsed) || parsed <= 0) {
    throw invalid(`bad duration '${value}': use e.g. 90s, 10m, 2h`);
  }
  return parsed;
}

/** `--ttl`: a lease length. */
export const ttlOption = (cmd: Command, help: string): Command => cmd.option("--ttl <duration>", help, leaseMs);

function retrievalMode(value: string): RetrievalMode {
  if (!(RETRIEVAL_MODES as readonly string[]).includes(value)) throw invalid(`bad mode '${value}': use ${RETRIEVAL_MODES.join(", ")}`);
  return value as RetrievalMode;
}

/** `--mode`: a retrieval mode (bm25, vector, hybrid). */
export const modeOption = (cmd: Command, help = `${RETRIEVAL_MODES.join(", ")} (default hybrid)`): Command => cmd.option("--mode <mode>", help, retrievalMode);

/** `--as-of-seq` and `--as-of`: a read of the log as it stood at a sequence or time; parseAsOf checks them. */
export function asOfOptions(cmd: Command, timeHelp = "as the log stood at this time (ISO 8601, e.g. 2026-11-29T14:00:00Z)"): Command {
  return cmd.option("--as-of-seq <n>", "as the log stood at this stream sequence", wholeNumber(1)).option("--as-of <time>", timeHelp);
}

export interface AsOfOptions {
  asOfSeq?: number;
  asOf?: string;
  /** `--no-snapshot` (commander sets false): fold from the log alone, ignoring the as-of snapshots. */
  snapshot?: boolean;
}

/** `--no-snapshot`: an as-of read folds from the log alone instead of starting at a verified snapshot. */
export const snapshotOption = (cmd: Command): Command => cmd.option("--no-snapshot", "fold from the log alone, ignoring as-of snapshots (slower; trusts nothing but the log)");

/** True when an as-of flag was given (the read goes to the log instead of the live read models). */
export const isAsOf = (opts: AsOfOptions): boolean => opts.asOfSeq !== undefined || opts.asOf !== undefined;

export function parseAsOf(opts: AsOfOptions): AsOf {
  if (opts.asOf !== undefined && Number.isNaN(Date.parse(opts.asOf))) throw invalid(`--as-of '${opts.asOf}': not a time; use ISO 8601 such as 2026-11-29T14:00:00Z`);
  if (opts.asOf !== undefined && opts.asOfSeq !== undefined) throw invalid("give --as-of-seq or --as-of, not both");
  return { seq: opts.asOfSeq, time: opts.asOf === undefined ? undefined : new Date(opts.asOf).toISOString() };
}
