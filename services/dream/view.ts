import { memoryDecider, type MemoryState } from "../../commands/memory.js";
import { sessionDecider, type SessionState } from "../../commands/session.js";
import { isMemoryEvent, type LedgerEvent, type MemoryEvent, type SessionEvent } from "../../schemas/events.js";
import { invalid, isMemledgerError } from "../../schemas/errors.js";
import type { EventStore } from "../event-store.js";
import { isStreamNotFound } from "../nats.js";
import type { DreamView } from "./phase.js";

/**
 * What a consolidation run's phases read: the app as its stream stood at the run's `asOfSeq`, folded with
 * the deciders' own evolve (a memory is "active" or "superseded" exactly as commands decide it), plus the
 * two things no decider keeps: retrievals from exposure receipts, and the last completed dream run.
 *
 * Pure (`foldDreamView`) and read from the log (`readDreamView`), so a resumed step folds the same events
 * into the same view and its phases propose the same keys.
 */

const SESSION_TYPES: ReadonlySet<string> = new Set<SessionEvent["type"]>(["session.started", "session.ended", "session.exposed"]);

const isSessionEvent = (event: LedgerEvent): event is SessionEvent => SESSION_TYPES.has(event.type);

/**
 * Folds `events` (stream order) up to and including `asOfSeq`; later ones and other apps' are ignored.
 * Retrievals count app-origin memories in `session.exposed` receipts (one per receipt that returned it);
 * org memories live in the org stream and are not this app's to consolidate.
 */
export function foldDreamView(app: string, asOfSeq: number, events: Iterable<{ seq: number; event: LedgerEvent }>): DreamView {
  const memories = new Map<string, { state: MemoryState; seq: number }>();
  const sessions = new Map<string, { state: SessionState; seq: number }>();
  const endedSeq = new Map<string, number>();
  const retrievals = new Map<string, { count: number; last: string }>();
  const dreamRuns = new Set<string>();
  let lastRun: DreamView["lastRun"] = null;

  for (const { seq, event } of events) {
    if (seq > asOfSeq || event.app !== app) continue;
    if (isMemoryEvent(event)) {
      const current = memories.get(event.aggregateId);
      memories.set(event.aggregateId, { state: memoryDecider.evolve(current?.state ?? memoryDecider.initialState(), event), seq });
    } else if (isSessionEvent(event)) {
      const current = sessions.get(event.aggregateId);
      const before = current?.state ?? sessionDecider.initialState();
      const state = sessionDecider.evolve(before, event);
      sessions.set(event.aggregateId, { state, seq });
      if (event.type === "session.ended" && before.endedAt === null && state.endedAt !== null) endedSeq.set(event.aggregateId, seq);
      if (event.type === "session.exposed") {
        for (const receipt of event.data.receipts) {
          for (const m of receipt.memories) {
            if (m.origin !== "app") continue;
            const seen = retrievals.get(m.memoryId);
            if (!seen) retrievals.set(m.memoryId, { count: 1, last: receipt.time });
            else {
              seen.count += 1;
              if (Date.parse(receipt.time) > Date.parse(seen.last)) seen.last = receipt.time;
            }
          }
        }
      }
    } else if (event.type === "run.started") {
      if (event.data.trigger.kind === "dream") dreamRuns.add(event.aggregateId);
    } else if (event.type === "run.completed") {
      // Session-end reviews complete runs too; only a dream run resets the gates and "since the last run".
      if (dreamRuns.has(event.aggregateId)) lastRun = { runId: event.aggregateId, completedAt: event.time, completedSeq: seq };
    }
  }

  const since = lastRun?.completedSeq ?? 0;
  const sessionsSinceLastRun = [...endedSeq]
    .filter(([, seq]) => seq > since)
    .sort((a, b) => a[1] - b[1])
    .map(([id]) => id);
  return { app, asOfSeq, memories, sessions, sessionsSinceLastRun, retrievals, lastRun };
}

/**
 * The view read from the app's stream up to `asOfSeq` (the run's recorded bound: events appended after
 * the run started, its own proposals included, are not seen). An app without a stream yet is empty.
 */
export async function readDreamView(store: EventStore, app: string, asOfSeq: number): Promise<DreamView> {
  if (!Number.isInteger(asOfSeq) || asOfSeq < 0) throw invalid(`asOfSeq must be a whole number >= 0, got ${asOfSeq}`);
  const stream = store.names.appStream(app);
  const events: { seq: number; event: LedgerEvent }[] = [];
  if (asOfSeq > 0) {
    try {
      await store.replay(stream, {}, (batch) => {
        for (const stored of batch) if (stored.seq <= asOfSeq) events.push(stored);
      });
    } catch (err) {
      // The store reports a missing stream as not_found (or the client's own error, from a consumer).
      if (!isStreamNotFound(err) && !(isMemledgerError(err) && err.code === "not_found")) throw err;
    }
  }
  return foldDreamView(app, asOfSeq, events);
}
