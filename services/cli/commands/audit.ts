import { createWriteStream } from "node:fs";
import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { invalid } from "../../../schemas/errors.js";
import type { HistoryEntry } from "../../audit/history.js";
import type { CliContext } from "../context.js";
import { printJson, printLine, readAll } from "../io.js";
import { withStore } from "../read-models.js";
import { asOfOptions, parseAsOf, snapshotOption, wholeNumber, type AsOfOptions, type GlobalOptions } from "../options.js";

/**
 * What auditors run, straight from the log (a read-only user can: nothing here sends a command):
 *   memledger history ID [--as-of-seq N | --as-of TIME]   every version and lifecycle event, with provenance
 *   memledger diff ID V1 V2                               a unified diff of two versions
 *   memledger blame PATH                                  the memories that concern a file or directory
 *   memledger index [--as-of-seq N | --as-of TIME]        the app's MEMORY.md (of that moment)
 *   memledger snapshot [--every N]                        write the as-of snapshots that make those reads fast
 *   memledger export [--since-seq N] [--out FILE]         every event as JSON lines
 *   memledger import FILE                                 append an export into an empty app
 *   memledger exposure ID [--version V]                   the sessions, agents and times shown that memory
 */

const audit = () => Promise.all([import("../../audit/history.js"), import("../../audit/as-of.js"), import("../../audit/portability.js")]).then(([h, a, p]) => ({ ...h, ...a, ...p }));

/** `show ID --as-of-seq N`: the memory folded from its events up to the bound (an auditor's read of the log). */
export async function showAsOf(g: GlobalOptions, id: string, opts: AsOfOptions): Promise<Record<string, unknown>> {
  const asOf = parseAsOf(opts);
  const { memoryHistory } = await audit();
  const { memoryView } = await import("../../../commands/memory.js");
  const history = await withStore(g, (store) => memoryHistory(store, g.app, id, asOf));
  return { ...memoryView(id, history.state, history.seq), asOf: { seq: asOf.seq ?? null, time: asOf.time ?? null } };
}

const who = (e: HistoryEntry): string => `${e.actor.kind}:${e.actor.id}`;

function historyLine(e: HistoryEntry): string {
  const where = [e.sessionId && `session ${e.sessionId}`, e.git?.branch && `branch ${e.git.branch}`, e.git?.worktree && `worktree ${e.git.worktree}`, e.transcriptRef && `transcript ${e.transcriptRef}`]
    .filter(Boolean)
    .join(", ");
  return [
    String(e.seq).padStart(6),
    e.time,
    e.type.padEnd(18),
    who(e),
    e.summary,
    e.reason ? `reason: ${JSON.stringify(e.reason)}` : "",
    where ? `(${where})` : "",
    e.causationId ? `caused by ${e.causationId}` : "",
  ]
    .filter((part) => part !== "")
    .join("  ");
}

export function register(program: Command, { io, globals, setExitCode }: CliContext): void {
  program
    .command("verify")
    .description("replay every stream (or one app's, with --app) and check the log: no missing sequence, every hash and link intact; exit 1 on any problem")
    .action(async (_opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      // Every stream unless an app was named (--app or MEMLEDGER_APP): an auditor checks the whole ledger.
      const named = (cmd.optsWithGlobals() as { app?: string }).app ?? io.env.MEMLEDGER_APP;
      const { verifyLedger } = await import("../../audit/verify.js");
      const reports = await withStore(g, (store) => verifyLedger(store, named === undefined || named === "" ? undefined : g.app));
      let problems = 0;
      for (const r of reports) {
        problems += r.problems.length;
        if (g.json) {
          printJson(io, r);
          continue;
        }
        printLine(io, `${r.stream}: ${r.messages} messages (${r.chained} chained, ${r.unchained} unchained, ${r.quarantined} quarantined): ${r.problems.length === 0 ? "ok" : `${r.problems.length} problems`}`);
        for (const p of r.problems) printLine(io, `  seq ${p.seq}${p.subject ? ` ${p.subject}` : ""}: ${p.kind}: ${p.message}`);
      }
      if (problems > 0) {
        io.stderr.write(`memledger: verify found ${problems} problems in ${reports.filter((r) => r.problems.length > 0).length} of ${reports.length} streams\n`);
        setExitCode(1);
      }
    });

  asOfOptions(
    program
      .command("history")
      .description("every version and lifecycle event of a memory: who, when, from which session, branch and worktree, why")
      .argument("<id>", "memory id"),
  ).action(async (id: string, opts: { asOfSeq?: number; asOf?: string }, cmd: Command) => {
    const g = globals(cmd);
    const asOf = parseAsOf(opts);
    const { memoryHistory } = await audit();
    const history = await withStore(g, (store) => memoryHistory(store, g.app, id, asOf));
    if (g.json) {
      printJson(io, { memoryId: id, app: g.app, seq: history.seq, status: history.state.activeVersion === null ? null : history.state.activeVersion, entries: history.entries, versions: history.state.versions });
      return;
    }
    for (const entry of history.entries) printLine(io, historyLine(entry));
  });

  program
    .command("diff")
    .description("a unified diff of two versions of a memory: title, kind, importance, tags, paths and body")
    .argument("<id>", "memory id")
    .argument("<v1>", "the older version", wholeNumber(1))
    .argument("<v2>", "the newer version", wholeNumber(1))
    .action(async (id: string, v1: number, v2: number, _opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const { memoryHistory, diffVersions } = await audit();
      const history = await withStore(g, (store) => memoryHistory(store, g.app, id));
      const diff = diffVersions(history, v1, v2);
      if (g.json) printJson(io, { memoryId: id, ...diff });
      else io.stdout.write(diff.patch);
    });

  asOfOptions(
    program
      .command("blame")
      .description("the memories that concern a file or directory: every version that named it, newest first")
      .argument("<path>", "a file or directory path"),
  ).action(async (path: string, opts: { asOfSeq?: number; asOf?: string }, cmd: Command) => {
    const g = globals(cmd);
    const asOf = parseAsOf(opts);
    const { blame } = await audit();
    const entries = await withStore(g, (store) => blame(store, g.app, path, asOf));
    for (const e of entries) {
      if (g.json) printJson(io, e);
      else printLine(io, [String(e.seq).padStart(6), e.time, `${e.memoryId} v${e.version}`, JSON.stringify(e.title), e.scope, `${e.actor.kind}:${e.actor.id}`, e.paths.join(", ")].join("  "));
    }
  });

  snapshotOption(asOfOptions(program.command("index").description("the app's MEMORY.md, now or as it stood at a sequence or time"))).action(
    async (opts: AsOfOptions, cmd: Command) => {
      const g = globals(cmd);
      const asOf = parseAsOf(opts);
      const { memoryIndexAsOf } = await audit();
      const index = await withStore(g, (store) => memoryIndexAsOf(store, g.app, asOf, { noSnapshot: opts.snapshot === false }));
      if (g.json) printJson(io, index);
      else io.stdout.write(index.markdown);
    },
  );

  program
    .command("snapshot")
    .description("write the app's missing as-of snapshots (the folded memory records every N events) into the <prefix>_asof bucket: a cache that makes as-of reads fast")
    .option("--every <n>", `events between snapshots (default ${10_000})`, wholeNumber(1))
    .action(async (opts: { every?: number }, cmd: Command) => {
      const g = globals(cmd);
      const { writeSnapshots } = await import("../../audit/snapshots.js");
      const result = await withStore(g, (store) => writeSnapshots(store, g.app, { every: opts.every }));
      if (g.json) printJson(io, { app: g.app, ...result });
      else {
        const from = result.report.snapshotSeq === null ? "the first event" : `the snapshot at ${result.report.snapshotSeq}`;
        printLine(io, `${g.app}: folded ${result.report.folded} events from ${from} to ${result.lastSeq}; wrote ${result.written.length} snapshots${result.written.length ? ` (at ${result.written.map((w) => w.seq).join(", ")})` : ""}`);
        if (result.report.snapshotProblem) io.stderr.write(`memledger: ${result.report.snapshotProblem}; folded from the log instead\n`);
      }
    });

  asOfOptions(
    program
      .command("exposure")
      .description("the sessions, agents and times that were shown a memory (or one version of it) by hydrate or search, from the sessions' receipts")
      .argument("<id>", "memory id")
      .option("--version <v>", "only this version", wholeNumber(1)),
  ).action(async (id: string, opts: { version?: number; asOfSeq?: number; asOf?: string }, cmd: Command) => {
    const g = globals(cmd);
    const asOf = parseAsOf(opts);
    const { exposureOf, exposedSessions } = await import("../../audit/exposure.js");
    const entries = await withStore(g, (store) => exposureOf(store, g.app, id, { version: opts.version, asOf }));
    if (g.json) {
      printJson(io, { memoryId: id, app: g.app, version: opts.version ?? null, sessions: exposedSessions(entries), receipts: entries });
      return;
    }
    for (const e of entries) {
      printLine(
        io,
        [String(e.seq).padStart(6), e.time, `session ${e.sessionId}`, `agent ${e.sessionAgent ?? "?"}`, `by ${e.actor.kind}:${e.actor.id}`, e.verb, `v${e.version}`, `rank ${e.rank}`, e.channel].join("  "),
      );
    }
  });

  program
    .command("export")
    .description("every event of the app (upcast to today's schema) as JSON lines with its stream sequence, header first")
    .option("--since-seq <n>", "from this stream sequence on", wholeNumber(1))
    .option("--out <file>", "write to this file instead of stdout")
    .action(async (opts: { sinceSeq?: number; out?: string }, cmd: Command) => {
      const g = globals(cmd);
      const { exportLedger } = await audit();
      const out: NodeJS.WritableStream = opts.out === undefined ? io.stdout : createWriteStream(opts.out, { mode: 0o600 });
      const write = (line: string) =>
        new Promise<void>((resolve, reject) => {
          if (out.write(line)) resolve();
          else out.once("drain", resolve).once("error", reject);
        });
      const result = await withStore(g, (store) => exportLedger(store, g.app, write, { sinceSeq: opts.sinceSeq }));
      if (opts.out !== undefined) {
        await new Promise<void>((resolve, reject) => {
          out.once("error", reject);
          out.end(() => resolve());
        });
        io.stderr.write(`memledger: exported ${result.events} events of ${g.app} to ${opts.out}\n`);
      }
    });

  program
    .command("import")
    .description("append an export's events into an empty app (--app), preserving their ids and order")
    .argument("<file>", "an export ('-': stdin)")
    .action(async (file: string, _opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const { parseExport, importLedger } = await audit();
      let text: string;
      try {
        text = file === "-" ? await readAll(io.stdin) : await readFile(file, "utf8");
      } catch (err) {
        throw invalid(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
      const exported = parseExport(text);
      const result = await withStore(g, (store) => importLedger(store, g.app, exported));
      if (g.json) printJson(io, { app: g.app, ...result });
      else printLine(io, `imported ${result.imported} events into ${g.app} (last sequence ${result.lastSeq}; ${result.skipped} quarantine records not carried over)`);
    });
}
