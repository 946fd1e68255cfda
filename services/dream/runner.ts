import { hostname } from "node:os";
import type { NatsConnection } from "@nats-io/transport-node";
import { v5 as uuidv5 } from "uuid";
import { fastUuidv7, CommandHandler, type CommandContext } from "../command-handler.js";
import { runDecider, nextPhase, type RunState } from "../../commands/run.js";
import { proposalDecider } from "../../commands/proposal.js";
import { Evidence, ProposedChange, type PhaseName, type RunTrigger, type TranscriptRef } from "../../schemas/events.js";
import { conflict, internal, invalid, isMemledgerError, ConflictReason } from "../../schemas/errors.js";
import type { Actor } from "../../schemas/primitives.js";
import type { EventStore } from "../event-store.js";
import { openTranscripts, readTranscript as readTranscriptBytes } from "../transcripts.js";
import type { Embedder } from "../../projections/embedder.js";
import { DEFAULT_DREAM_SETTINGS, type DreamSettings, type DreamView, type Phase, type PhaseContext, type ProposalDraft } from "./phase.js";
import { readDreamView } from "./view.js";
import { readGates, readRuns, resumableRun, type Gates } from "./gates.js";
import { DreamLock, type DreamLockOptions } from "./lock.js";
import { PHASES, PHASE_ORDER, dreamPhases } from "./phases/index.js";

/**
 * One consolidation run (issue 13): gates, lock, durable steps, the run's events.
 *
 *   gates (scheduled runs: time since the last completed dream run, sessions ended since; --force skips them)
 *   lock  (KV lease `dream.<app>`, renewed while running, released at the end; a second runner waits or exits)
 *   run.started (asOfSeq = the stream's last sequence: every phase reads the log as of it)
 *   per phase: proposal.made per draft (id derived from run, phase and key; expected sequence 0), run.step_completed
 *   run.completed, then a core NATS signal `<prefix>.signal.<app>.consolidated` { runId, proposals }
 *
 * Durable steps: every event of a run has an id derived from the run (its start excepted) and goes through
 * the CommandHandler, so a runner killed at any point and started again finds the run started and not
 * completed, resumes it at its next phase with the run's own asOfSeq and start time, and re-proposing a
 * phase's drafts replays the ones already written instead of writing them twice.
 *
 * A run reads the log and writes nothing but its own events: memories change only when a human accepts
 * a proposal (services/dream/review.ts).
 */

/** Who writes a run's events. */
export const DREAM_ACTOR: Actor = Object.freeze({ kind: "service", id: "dream" });

// Namespace of every id a run derives (proposal ids, event ids of steps and of applied changes).
const DREAM_NAMESPACE = "a7c5f0f4-3f5e-4d7b-9a43-4a2d3f1f6c21";

/** A proposal's id: the same run, phase and key always name the same proposal (a resumed step cannot duplicate it). */
export const proposalIdOf = (runId: string, phase: PhaseName, key: string): string => uuidv5(`${runId}\u0000${phase}\u0000${key}`, DREAM_NAMESPACE);

/** A derived event id (of a step, of an applied or compensating change): retried, it is found applied. */
export const derivedEventId = (...parts: string[]): string => uuidv5(parts.join("\u0000"), DREAM_NAMESPACE);

export interface DreamDeps {
  nc: NatsConnection;
  store: EventStore;
  /** Default: a handler of its own on `store`. */
  handler?: CommandHandler;
  /** Default: services/dream/view.ts. */
  readView?: (store: EventStore, app: string, asOfSeq: number) => Promise<DreamView>;
  /** Default: the transcripts object store. */
  readTranscript?: (ref: TranscriptRef) => Promise<string>;
  embedder?: Embedder;
  now?: () => Date;
  /**
   * Called after each durable point of a run ("started", "proposal:<phase>:<n>", "step:<phase>",
   * "completed"): tests pause there to kill the process (the CLI wires MEMLEDGER_DREAM_PAUSE_AT to it).
   */
  pauseAt?: (point: string) => Promise<void>;
  lock?: Omit<DreamLockOptions, "wait" | "waitTimeoutMs" | "signal">;
  /** Progress lines for the operator (phase started, proposals, resumed). */
  onProgress?: (line: string) => void;
}

export interface DreamOptions {
  app: string;
  /** Default: a scheduled dream (forced when `force`). */
  trigger?: RunTrigger;
  /** Default: the registered phases (services/dream/phases/index.ts) but `candidates`, in order. */
  phases?: readonly Phase[];
  settings?: Partial<DreamSettings>;
  /** Skip the time and session gates (never the lock). */
  force?: boolean;
  /** Run the phases and return their drafts; append nothing, take no lock. */
  dryRun?: boolean;
  /** The lock's holder (the instance id). */
  holder?: string;
  /** Wait for the lock instead of failing with `lock_held`. */
  wait?: boolean;
  waitTimeoutMs?: number;
  /** A fixed id for a new run (a session-end review derives it from the session); default a fresh UUIDv7. */
  runId?: string;
  signal?: AbortSignal;
}

export interface DraftOut {
  phase: PhaseName;
  key: string;
  proposalId: string | null;
  change: ProposalDraft["change"];
  evidence: ProposalDraft["evidence"];
  reason: string;
}

export type DreamResult =
  | { status: "gated"; app: string; gates: Gates }
  | { status: "dry_run"; app: string; gates: Gates; asOfSeq: number; proposals: DraftOut[] }
  | {
      status: "completed";
      app: string;
      runId: string;
      /** True when this call finished a run an earlier (killed) runner started. */
      resumed: boolean;
      gates: Gates | null;
      asOfSeq: number;
      proposals: { phase: PhaseName; proposalId: string; key: string; replayed: boolean }[];
      counts: Partial<Record<PhaseName, number>>;
    };

export const dreamSettings = (settings: Partial<DreamSettings> = {}): DreamSettings => ({ ...DEFAULT_DREAM_SETTINGS, ...settings });

/** The settings as `run.started` records them: flat values, never the LLM's API key. */
export function recordedSettings(settings: DreamSettings): Record<string, string | number | boolean | null> {
  return {
    minHoursSinceLastRun: settings.minHoursSinceLastRun,
    minSessionsSinceLastRun: settings.minSessionsSinceLastRun,
    repoDir: settings.repoDir,
    neverRetrievedDays: settings.neverRetrievedDays,
    mergeSimilarity: settings.mergeSimilarity,
    learnMinSessions: settings.learnMinSessions,
    llmUrl: settings.llm?.url ?? null,
    llmModel: settings.llm?.model ?? null,
    llmGuidanceFile: settings.llm?.guidanceFile ?? null,
  };
}

function phaseByName(name: PhaseName, given: readonly Phase[]): Phase {
  const phase = given.find((p) => p.name === name) ?? PHASES[name];
  if (!phase) throw internal(`the run needs phase ${name}, which this runner does not have (registered: ${Object.keys(PHASES).join(", ") || "none"})`);
  return phase;
}

/** Checks a draft against the schema before anything is appended, naming the phase that made it. */
function checkDraft(phase: PhaseName, draft: ProposalDraft): ProposalDraft {
  const change = ProposedChange.safeParse(draft.change);
  const evidence = Evidence.safeParse(draft.evidence);
  if (!change.success || !evidence.success || typeof draft.key !== "string" || draft.key.length === 0) {
    const issue = (!change.success ? change.error.issues[0] : !evidence.success ? evidence.error.issues[0] : undefined)?.message ?? "bad key";
    throw internal(`phase ${phase} made a draft that fails the schema (key ${JSON.stringify(draft.key)}): ${issue}`);
  }
  return draft;
}

async function defaultTranscriptReader(deps: DreamDeps): Promise<(ref: TranscriptRef) => Promise<string>> {
  let store: Awaited<ReturnType<typeof openTranscripts>> | undefined;
  return async (ref) => {
    store ??= await openTranscripts(deps.nc, deps.store.names);
    return new TextDecoder().decode(await readTranscriptBytes(store, ref));
  };
}

/** Runs (or resumes) one consolidation run of `app`. */
export async function runDream(deps: DreamDeps, options: DreamOptions): Promise<DreamResult> {
  const { store } = deps;
  const app = options.app;
  const now = deps.now ?? (() => new Date());
  const settings = dreamSettings(options.settings);
  const force = options.force ?? false;
  const trigger: RunTrigger = options.trigger ?? { kind: "dream", forced: force };
  const phases = options.phases ?? dreamPhases();
  const progress = deps.onProgress ?? (() => undefined);
  const readView = deps.readView ?? readDreamView;
  const readTranscript = deps.readTranscript ?? (await defaultTranscriptReader(deps));
  const scheduled = trigger.kind === "dream";

  if (options.dryRun) {
    const gates = await readGates(store, app, settings, now(), force || !scheduled);
    if (!gates.open) return { status: "gated", app, gates };
    const asOfSeq = await lastSeqIfAny(store, app);
    if (phases.length === 0) throw invalid("no consolidation phases are registered (services/dream/phases/index.ts)");
    const view = await readView(store, app, asOfSeq);
    const out: DraftOut[] = [];
    for (const phase of phases) {
      const drafts = await phase.propose(contextFor(app, "dry-run", trigger, now(), settings, view, readTranscript, deps.embedder, options.signal));
      for (const d of drafts) out.push({ phase: phase.name, key: d.key, proposalId: null, change: d.change, evidence: d.evidence, reason: d.reason });
    }
    return { status: "dry_run", app, gates, asOfSeq, proposals: out };
  }

  const holder = options.holder ?? `${hostname()}-${process.pid}`;
  // A first look without the lock: closed gates and nothing to resume need no lock (the scheduled dream
  // asks every interval). The look that counts is made again once the lock is held.
  if (scheduled && !force && !options.runId) {
    const runs = await readRuns(store, app);
    if (!resumableRun(runs, trigger)) {
      const gates = await readGates(store, app, settings, now(), false, runs);
      if (!gates.open) return { status: "gated", app, gates };
    }
  }
  const lock = await DreamLock.acquire(deps.nc, store.names, app, holder, {
    ...deps.lock,
    wait: options.wait,
    waitTimeoutMs: options.waitTimeoutMs,
    signal: options.signal,
  });
  try {
    const handler = deps.handler ?? new CommandHandler(store);
    const runs = await readRuns(store, app);
    let runId: string;
    let resumed = false;
    let gates: Gates | null = null;
    const fixed = options.runId ? runs.find((r) => r.state.id === options.runId) : undefined;
    const pending = fixed ?? resumableRun(runs, trigger);
    if (fixed && fixed.state.completed) {
      // A fixed-id run that already completed (a retried session-end review): nothing more to do.
      return completedResult(app, fixed.state, true, null, []);
    }
    if (pending) {
      runId = pending.state.id!;
      resumed = true;
      progress(`resuming run ${runId} at ${nextPhase(pending.state) ?? "its completion"}`);
    } else {
      gates = await readGates(store, app, settings, now(), force || !scheduled, runs);
      if (!gates.open) return { status: "gated", app, gates };
      if (phases.length === 0) throw invalid("no consolidation phases are registered (services/dream/phases/index.ts)");
      runId = options.runId ?? fastUuidv7();
      const asOfSeq = await lastSeqOrZero(store, app);
      lock.check();
      await handler.execute(
        runDecider,
        runId,
        {
          type: "start",
          trigger,
          phases: phases.map((p) => p.name).sort((a, b) => PHASE_ORDER.indexOf(a) - PHASE_ORDER.indexOf(b)),
          asOfSeq,
          gates: { lastRunId: gates.lastRunId, lastRunAt: gates.lastRunAt, sessionsSince: gates.sessionsSince, forced: force },
          holder,
          settings: recordedSettings(settings),
        },
        runContext(app, runId, null),
        { isNew: true, eventId: derivedEventId(runId, "started") },
      );
      progress(`run ${runId} started as of sequence ${asOfSeq}`);
      await deps.pauseAt?.("started");
    }

    let run = (await handler.load(runDecider, app, runId)).state;
    const written: { phase: PhaseName; proposalId: string; key: string; replayed: boolean }[] = [];
    let view: DreamView | undefined;
    for (let phaseName = nextPhase(run); phaseName !== null; phaseName = nextPhase(run)) {
      options.signal?.throwIfAborted();
      if (lock.lost.aborted) throw lock.lost.reason;
      const phase = phaseByName(phaseName, phases);
      view ??= await readView(store, app, run.asOfSeq);
      const ctx = contextFor(app, runId, run.trigger!, new Date(run.startedAt!), settings, view, readTranscript, deps.embedder, options.signal);
      const drafts = (await phase.propose(ctx)).map((d) => checkDraft(phaseName!, d));
      const ids = new Set<string>();
      let n = 0;
      for (const draft of drafts) {
        const proposalId = proposalIdOf(runId, phaseName, draft.key);
        if (ids.has(proposalId)) continue; // the same key twice in one phase is one proposal
        ids.add(proposalId);
        lock.check();
        const executed = await handler.execute(
          proposalDecider,
          proposalId,
          { type: "make", runId, phase: phaseName, key: draft.key, change: draft.change, evidence: draft.evidence, reason: draft.reason },
          runContext(app, runId, run.startedEventId),
          { isNew: true, eventId: derivedEventId(proposalId, "made") },
        );
        written.push({ phase: phaseName, proposalId, key: draft.key, replayed: executed.replayed });
        await deps.pauseAt?.(`proposal:${phaseName}:${++n}`);
      }
      lock.check();
      const step = await handler.execute(
        runDecider,
        runId,
        { type: "complete_step", phase: phaseName, proposals: ids.size, report: reportOf(phase, ctx)?.summary || null },
        runContext(app, runId, run.startedEventId),
        { eventId: derivedEventId(runId, "step", phaseName) },
      );
      run = step.state;
      progress(`phase ${phaseName}: ${ids.size} proposal(s)`);
      await deps.pauseAt?.(`step:${phaseName}`);
    }

    if (!run.completed) {
      const counts = Object.fromEntries(run.steps.map((s) => [s.phase, s.proposals])) as Partial<Record<PhaseName, number>>;
      // MEMORY.md as the run's view renders it, from the phase that reports it (reindex), computed again
      // here so a resumed run that did that step before it stopped records it too.
      let index: { lines: number; bytes: number; listed: number; withinLimits: boolean } | null = null;
      for (const name of run.phases) {
        const phase = phases.find((p) => p.name === name) ?? PHASES[name];
        if (!phase || !("report" in phase)) continue;
        view ??= await readView(store, app, run.asOfSeq);
        const report = reportOf(phase, contextFor(app, runId, run.trigger!, new Date(run.startedAt!), settings, view, readTranscript, deps.embedder, options.signal));
        if (report && typeof report.lines === "number" && typeof report.bytes === "number" && typeof report.listed === "number" && typeof report.withinLimits === "boolean") {
          index = { lines: report.lines, bytes: report.bytes, listed: report.listed, withinLimits: report.withinLimits };
        }
      }
      lock.check();
      const completed = await handler.execute(
        runDecider,
        runId,
        { type: "complete", proposals: counts, index },
        runContext(app, runId, run.startedEventId),
        { eventId: derivedEventId(runId, "completed") },
      );
      run = completed.state;
      progress(`run ${runId} completed`);
    }
    await deps.pauseAt?.("completed");
    const result = completedResult(app, run, resumed, gates, written);
    // Not stored: a listener that missed it reads the run from the log.
    deps.nc.publish(store.names.signal(app, "consolidated"), JSON.stringify({ runId, proposals: result.counts }));
    await deps.nc.flush().catch(() => undefined);
    return result;
  } finally {
    await lock.release().catch(() => undefined);
  }
}

/**
 * What a phase says about its step besides proposals (optional `report(ctx)`, e.g. reindex's MEMORY.md
 * measures): its `summary` becomes the step's report line (cut to one line of the schema's length).
 */
interface PhaseReport {
  summary?: string;
  lines?: number;
  bytes?: number;
  listed?: number;
  withinLimits?: boolean;
}

function reportOf(phase: Phase, ctx: PhaseContext): PhaseReport | null {
  const report = (phase as Phase & { report?: (ctx: PhaseContext) => PhaseReport | null }).report?.(ctx) ?? null;
  if (report?.summary !== undefined) {
    const line = report.summary.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, " ").trim();
    return { ...report, summary: line.length > 2000 ? `${line.slice(0, 1999)}…` : line };
  }
  return report;
}

function completedResult(
  app: string,
  run: RunState,
  resumed: boolean,
  gates: Gates | null,
  proposals: { phase: PhaseName; proposalId: string; key: string; replayed: boolean }[],
): Extract<DreamResult, { status: "completed" }> {
  if (!run.completed) throw conflict(`run ${run.id} has not completed`, { reason: ConflictReason.run_not_completed });
  return { status: "completed", app, runId: run.id!, resumed, gates, asOfSeq: run.asOfSeq, proposals, counts: run.completed.proposals };
}

const runContext = (app: string, runId: string, causationId: string | null): CommandContext => ({
  app,
  actor: DREAM_ACTOR,
  causationId: causationId ?? undefined,
  correlationId: runId,
});

function contextFor(
  app: string,
  runId: string,
  trigger: RunTrigger,
  now: Date,
  settings: DreamSettings,
  view: DreamView,
  readTranscript: (ref: TranscriptRef) => Promise<string>,
  embedder: Embedder | undefined,
  signal: AbortSignal | undefined,
): PhaseContext {
  return { app, runId, trigger, now, settings, view, readTranscript, ...(embedder ? { embedder } : {}), ...(signal ? { signal } : {}) };
}

/** The stream's last sequence, 0 when the app has no stream (a dry run creates nothing). */
async function lastSeqIfAny(store: EventStore, app: string): Promise<number> {
  try {
    return await store.lastSeq(store.names.appStream(app));
  } catch (err) {
    if (isMemledgerError(err) && err.code === "not_found") return 0;
    throw err;
  }
}

async function lastSeqOrZero(store: EventStore, app: string): Promise<number> {
  await store.ensureAppStream(app);
  return store.lastSeq(store.names.appStream(app));
}
