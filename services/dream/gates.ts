import { fold } from "../../commands/decider.js";
import { runDecider, runStatus, type RunState } from "../../commands/run.js";
import type { RunEvent, RunTrigger } from "../../schemas/events.js";
import { isMemledgerError } from "../../schemas/errors.js";
import type { EventStore, StoredEvent } from "../event-store.js";
import { isStreamNotFound } from "../nats.js";
import type { DreamSettings } from "./phase.js";

/**
 * The gates of a scheduled consolidation run, read from the log only: the time since the last completed
 * `dream` run (session-end reviews do not count) and the sessions that ended since it. `--force` skips
 * both, never the lock.
 */

export interface RunRecord {
  state: RunState;
  /** Stream sequence of the run's first and last events. */
  startedSeq: number;
  lastSeq: number;
  /** Stream sequence of `run.completed`, or null. */
  completedSeq: number | null;
}

const PAGE = 1000;

/** Every event on one subject filter of the app's stream from `sinceSeq`, oldest first; none when there is no stream. */
export async function* readFiltered(store: EventStore, app: string, filterSubject: string, sinceSeq = 1): AsyncGenerator<StoredEvent> {
  const stream = store.names.appStream(app);
  let from = sinceSeq;
  for (;;) {
    let page: StoredEvent[];
    try {
      page = await store.readLog(stream, { filterSubject, sinceSeq: from, limit: PAGE });
    } catch (err) {
      if (isStreamNotFound(err) || (isMemledgerError(err) && err.code === "not_found")) return;
      throw err;
    }
    yield* page;
    if (page.length < PAGE) return;
    from = page.at(-1)!.seq + 1;
  }
}

/** Every run of the app, folded, in the order they started. */
export async function readRuns(store: EventStore, app: string): Promise<RunRecord[]> {
  const byId = new Map<string, { events: RunEvent[]; startedSeq: number; lastSeq: number; completedSeq: number | null }>();
  for await (const stored of readFiltered(store, app, store.names.aggregates(app, "run"))) {
    const event = stored.event as RunEvent;
    let entry = byId.get(event.aggregateId);
    if (!entry) byId.set(event.aggregateId, (entry = { events: [], startedSeq: stored.seq, lastSeq: stored.seq, completedSeq: null }));
    entry.events.push(event);
    entry.lastSeq = stored.seq;
    if (event.type === "run.completed") entry.completedSeq = stored.seq;
  }
  return [...byId.values()]
    .map((e) => ({ state: fold(runDecider, e.events), startedSeq: e.startedSeq, lastSeq: e.lastSeq, completedSeq: e.completedSeq }))
    .filter((r) => r.state.id !== null && r.state.trigger !== null)
    .sort((a, b) => a.startedSeq - b.startedSeq);
}

/** The last completed `dream` run (reverted or not: it ran), or null. */
export function lastCompletedDream(runs: readonly RunRecord[]): RunRecord | null {
  return runs.filter((r) => r.state.trigger?.kind === "dream" && r.completedSeq !== null).sort((a, b) => a.completedSeq! - b.completedSeq!).at(-1) ?? null;
}

const sameTrigger = (a: RunTrigger, b: RunTrigger): boolean =>
  a.kind === b.kind && (a.kind !== "session_end" || (b.kind === "session_end" && a.sessionId === b.sessionId));

/** The newest run of this trigger that started and did not complete: the one a runner resumes. */
export function resumableRun(runs: readonly RunRecord[], trigger: RunTrigger): RunRecord | null {
  return runs.filter((r) => runStatus(r.state) === "running" && sameTrigger(r.state.trigger!, trigger)).at(-1) ?? null;
}

/** Sessions whose `session.ended` was appended after `afterSeq` (each counted once). */
export async function sessionsEndedSince(store: EventStore, app: string, afterSeq: number): Promise<string[]> {
  const ended = new Set<string>();
  for await (const stored of readFiltered(store, app, store.names.aggregates(app, "session"), afterSeq + 1)) {
    if (stored.event.type === "session.ended") ended.add(stored.event.aggregateId);
  }
  return [...ended];
}

export interface Gates {
  lastRunId: string | null;
  lastRunAt: string | null;
  /** Stream sequence of the last run's completion (0 when none). */
  lastRunSeq: number;
  hoursSince: number | null;
  sessionsSince: number;
  forced: boolean;
  /** Whether a scheduled run may start now. */
  open: boolean;
  /** Why not (empty when open). */
  closed: string[];
}

/** Reads the gates and judges them against the settings at `now`. */
export async function readGates(store: EventStore, app: string, settings: Pick<DreamSettings, "minHoursSinceLastRun" | "minSessionsSinceLastRun">, now: Date, force: boolean, runs?: readonly RunRecord[]): Promise<Gates> {
  const last = lastCompletedDream(runs ?? (await readRuns(store, app)));
  const lastRunSeq = last?.completedSeq ?? 0;
  const sessions = await sessionsEndedSince(store, app, lastRunSeq);
  const lastRunAt = last?.state.completed?.at ?? null;
  const hoursSince = lastRunAt === null ? null : (now.getTime() - Date.parse(lastRunAt)) / 3_600_000;
  const closed: string[] = [];
  if (hoursSince !== null && hoursSince < settings.minHoursSinceLastRun) {
    closed.push(`the last run completed ${hoursSince.toFixed(2)} h ago, less than ${settings.minHoursSinceLastRun} h`);
  }
  if (sessions.length < settings.minSessionsSinceLastRun) {
    closed.push(`${sessions.length} session(s) ended since the last run, fewer than ${settings.minSessionsSinceLastRun}`);
  }
  return {
    lastRunId: last?.state.id ?? null,
    lastRunAt,
    lastRunSeq,
    hoursSince,
    sessionsSince: sessions.length,
    forced: force,
    open: force || closed.length === 0,
    closed: force ? [] : closed,
  };
}
