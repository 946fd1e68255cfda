import { hostname } from "node:os";
import type { Command } from "commander";
import { ErrorCode, EXIT_CODE } from "../../../schemas/errors.js";
import type { PhaseName } from "../../../schemas/events.js";
import { PhaseName as PhaseNameSchema } from "../../../schemas/events.js";
import type { CliContext } from "../context.js";
import { printJson, printLine, type Io } from "../io.js";
import { commaList, defined, wholeNumber } from "../options.js";
import { withStore } from "../read-models.js";
import { invalid } from "../../../schemas/errors.js";
import type { DreamResult } from "../../dream/runner.js";
import type { ReviewResult, RunSummary, RunView } from "../../dream/review.js";
import { readRunPages } from "../../client.js";

/**
 * `memledger dream`: consolidation ("dreaming", docs/consolidation.md).
 *
 *   dream [run] [--force] [--dry-run] [--wait]   one run of the app (gates, lock, durable steps)
 *   dream list                                   the app's runs, newest first
 *   dream show RUN                               a run's proposals with their evidence and status
 *   dream accept RUN [PROPOSAL…] [--reason]      accept and apply some or all undecided proposals
 *   dream reject RUN [PROPOSAL…] --reason        reject some or all
 *   dream revert RUN --reason                    undo every applied change of the run
 *
 * `run` works on the log directly (its own connection, like `up`); the review verbs go through the
 * command service (`memledger up`), so the policy decides who may accept, as for the MCP server and the
 * review page.
 */
export function register(program: Command, { io, globals, send, setExitCode }: CliContext): void {
  const dream = program.command("dream").description("consolidation: run (gated, locked, resumable), list, show, accept, reject, revert");

  dream
    .command("run", { isDefault: true })
    .description("one consolidation run of the app: proposals only, nothing changes until a human accepts (exit 3 when the lock is held)")
    .option("--force", "skip the time and session gates (never the lock)")
    .option("--dry-run", "print the proposals; append nothing, take no lock")
    .option("--wait", "wait for the lock instead of exiting when another runner holds it")
    .option("--wait-timeout <ms>", "with --wait: give up after this long", wholeNumber(1))
    .option("--min-hours <h>", "gate: hours since the last completed run (env MEMLEDGER_DREAM_MIN_HOURS, default 24)", Number)
    .option("--min-sessions <n>", "gate: sessions ended since the last run (env MEMLEDGER_DREAM_MIN_SESSIONS, default 5)", wholeNumber(0))
    .option("--repo <dir>", "prune: repository to check memories' paths against (env MEMLEDGER_DREAM_REPO_DIR)")
    .option("--phases <list>", "only these phases (comma separated): prune, merge, refresh, learn, reindex", commaList)
    .option("--lock-ttl <ms>", "how long a silent holder keeps the lock (env MEMLEDGER_DREAM_LOCK_TTL_MS, default 30000)", wholeNumber(500))
    .action(async (opts, cmd: Command) => {
      const g = globals(cmd);
      const { runDream } = await import("../../dream/runner.js");
      const { PHASES, dreamPhases } = await import("../../dream/phases/index.js");
      const { dreamSettingsFromEnv, dreamLockTtlFromEnv } = await import("../../dream/settings.js");
      const { dreamEmbedder } = await import("../../dream/embedder.js");
      if (opts.minHours !== undefined && !(Number.isFinite(opts.minHours) && opts.minHours >= 0)) throw invalid("--min-hours: a number of hours, 0 or more");
      const settings = dreamSettingsFromEnv(io.env, { minHoursSinceLastRun: opts.minHours, minSessionsSinceLastRun: opts.minSessions, repoDir: opts.repo });
      const phases =
        opts.phases === undefined
          ? dreamPhases()
          : (opts.phases as string[]).map((name) => {
              const parsed = PhaseNameSchema.safeParse(name);
              const phase = parsed.success ? PHASES[parsed.data as PhaseName] : undefined;
              if (!phase) throw invalid(`--phases: unknown phase '${name}'; known: ${Object.keys(PHASES).join(", ")}`);
              return phase;
            });
      const result = await withStore(g, async (store) =>
        runDream(
          {
            nc: store.nc,
            store,
            embedder: await dreamEmbedder(store.nc, store.names.prefix, io.env),
            lock: { ttlMs: opts.lockTtl ?? dreamLockTtlFromEnv(io.env) },
            pauseAt: pauseHook(io),
            onProgress: g.json ? undefined : (line) => io.stderr.write(`${line}\n`),
          },
          { app: g.app, phases, settings, force: opts.force === true, dryRun: opts.dryRun === true, wait: opts.wait === true, waitTimeoutMs: opts.waitTimeout, holder: `${hostname()}-${process.pid}` },
        ),
      );
      if (g.json) printJson(io, result);
      else printRunResult(io, result);
    });

  dream
    .command("list")
    .description("the app's runs, newest first")
    .option("--limit <n>", "at most this many", wholeNumber(1), 20)
    .action(async (opts: { limit: number }, cmd: Command) => {
      const g = globals(cmd);
      const runs = await send<"dream_list", RunSummary[]>(g, "dream_list", { limit: opts.limit });
      if (g.json) return printJson(io, runs);
      if (runs.length === 0) return printLine(io, `no consolidation runs in ${g.app}`);
      for (const r of runs) {
        const counts = Object.entries(r.proposals).map(([phase, n]) => `${phase} ${n}`).join(", ") || "no proposals";
        printLine(io, `${r.runId}  ${r.status.padEnd(9)}  ${r.trigger?.kind ?? "?"}  started ${r.startedAt ?? "?"}  ${counts}`);
      }
    });

  dream
    .command("show")
    .description("a run's proposals with their evidence and status")
    .argument("<run>", "run id")
    .action(async (runId: string, _opts, cmd: Command) => {
      const g = globals(cmd);
      const run = await readRunPages((request) => send<"dream_show", RunView>(g, "dream_show", request), runId);
      if (g.json) printJson(io, run);
      else printRun(io, run);
    });

  dream
    .command("accept")
    .description("accept and apply proposals of a run (all undecided ones when none is named); exit 3 when any is refused")
    .argument("<run>", "run id")
    .argument("[proposals...]", "proposal ids (default: every undecided proposal)")
    .option("--reason <text>", "why")
    .action(async (runId: string, proposalIds: string[], opts: { reason?: string }, cmd: Command) => {
      const g = globals(cmd);
      report(io, g.json, setExitCode, await send<"dream_accept", ReviewResult>(g, "dream_accept", defined({ runId, proposalIds, reason: opts.reason })));
    });

  dream
    .command("reject")
    .description("reject proposals of a run (all undecided ones when none is named)")
    .argument("<run>", "run id")
    .argument("[proposals...]", "proposal ids (default: every undecided proposal)")
    .requiredOption("--reason <text>", "why (required)")
    .action(async (runId: string, proposalIds: string[], opts: { reason: string }, cmd: Command) => {
      const g = globals(cmd);
      report(io, g.json, setExitCode, await send<"dream_reject", ReviewResult>(g, "dream_reject", { runId, proposalIds, reason: opts.reason }));
    });

  dream
    .command("revert")
    .description("undo every applied change of a run with compensating memory events (nothing is deleted)")
    .argument("<run>", "run id")
    .requiredOption("--reason <text>", "why (required)")
    .action(async (runId: string, opts: { reason: string }, cmd: Command) => {
      const g = globals(cmd);
      report(io, g.json, setExitCode, await send<"dream_revert", ReviewResult>(g, "dream_revert", { runId, reason: opts.reason }));
    });
}

/**
 * MEMLEDGER_DREAM_PAUSE_AT=<point> (tests): after that durable point of a run ("started",
 * "proposal:<phase>:<n>", "step:<phase>", "completed") the runner says so on stderr and waits forever,
 * so a test can kill it there.
 */
function pauseHook(io: Io): ((point: string) => Promise<void>) | undefined {
  const at = io.env.MEMLEDGER_DREAM_PAUSE_AT?.trim();
  if (!at) return undefined;
  return async (point) => {
    if (point !== at) return;
    io.stderr.write(`paused at ${point}\n`);
    await new Promise(() => undefined);
  };
}

function report(io: Io, json: boolean, setExitCode: (code: number) => void, result: ReviewResult): void {
  if (json) printJson(io, result);
  else {
    for (const r of result.results) {
      const detail = r.error ? `: ${r.error.message}` : r.events.length > 0 ? ` (${r.events.map((e) => `${e.type} ${e.memoryId}`).join(", ")})` : "";
      printLine(io, `${r.proposalId}  ${r.outcome}${detail}`);
    }
    if (result.results.length === 0) printLine(io, "nothing to decide");
  }
  const refused = result.results.find((r) => r.outcome === "refused");
  if (refused) setExitCode(EXIT_CODE[(refused.error?.code as ErrorCode | undefined) ?? ErrorCode.conflict] ?? EXIT_CODE.conflict);
}

function printRunResult(io: Io, result: DreamResult): void {
  switch (result.status) {
    case "gated":
      printLine(io, `no run: the gates are closed (${result.gates.closed.join("; ")}); --force skips them`);
      return;
    case "dry_run":
      printLine(io, `dry run as of sequence ${result.asOfSeq}: ${result.proposals.length} proposal(s), nothing appended`);
      for (const p of result.proposals) printLine(io, `  [${p.phase}] ${p.change.action} ${p.key}: ${p.reason}`);
      return;
    case "completed": {
      const counts = Object.entries(result.counts).map(([phase, n]) => `${phase} ${n}`).join(", ");
      printLine(io, `run ${result.runId} completed${result.resumed ? " (resumed)" : ""}: ${counts || "no proposals"}`);
      printLine(io, `review: memledger dream show ${result.runId}`);
    }
  }
}

function printRun(io: Io, run: RunView): void {
  printLine(io, `run ${run.runId} (${run.status}), ${run.trigger?.kind ?? "?"} as of sequence ${run.asOfSeq}, started ${run.startedAt ?? "?"}`);
  for (const p of run.proposals) {
    printLine(io, `- ${p.proposalId} [${p.phase}] ${p.change.action} ${p.status}: ${p.reason}`);
    if (p.evidence) printLine(io, `    evidence: ${p.evidence.summary}`);
  }
  if (run.proposals.length === 0) printLine(io, "  no proposals");
}
