import type { DomainEventOf, ExposureReceipt, SessionEvent, TranscriptRef } from "../schemas/events.js";
import { ConflictReason, conflict, notFound } from "../schemas/errors.js";
import { deepFreeze, type AppliedEvent, type Decider } from "./decider.js";

/** An agent's working session: hydration asks "what changed since my last one", consolidation counts them. */
export type SessionCommand =
  | { type: "start"; agentId: string; task: string; branch: string | null; worktree: string | null }
  | { type: "end"; summary: string | null; transcript?: TranscriptRef | null }
  /** Receipts of what the session was shown (services/audit/exposure.ts); also after it ended. */
  | { type: "expose"; receipts: ExposureReceipt[] };

export interface SessionState {
  id: string | null;
  agentId: string | null;
  task: string | null;
  branch: string | null;
  worktree: string | null;
  startedAt: string | null;
  endedAt: string | null;
  summary: string | null;
  /** The stored transcript the session ended with (services/transcripts.ts), if any. */
  transcript: TranscriptRef | null;
  applied: Record<string, AppliedEvent>;
}

export const initialSessionState = (): SessionState => ({
  id: null,
  agentId: null,
  task: null,
  branch: null,
  worktree: null,
  startedAt: null,
  endedAt: null,
  summary: null,
  transcript: null,
  applied: {},
});

function decideSession(command: SessionCommand, state: SessionState): DomainEventOf<SessionEvent> {
  switch (command.type) {
    case "start":
      if (state.id !== null) throw conflict(`session ${state.id} already started`, { reason: ConflictReason.already_started });
      return {
        type: "session.started",
        data: { agentId: command.agentId, task: command.task, branch: command.branch, worktree: command.worktree },
      };
    case "end":
      if (state.id === null) throw notFound("no such session");
      if (state.endedAt !== null) throw conflict(`session ${state.id} already ended`, { reason: ConflictReason.already_ended });
      // The key only when there is a transcript: a session ended without one is written as v1 data was.
      return { type: "session.ended", data: command.transcript ? { summary: command.summary, transcript: command.transcript } : { summary: command.summary } };
    case "expose":
      // A receipt belongs to a session that exists: its subject's scope is the session's agent's.
      if (state.id === null) throw notFound("no such session");
      return { type: "session.exposed", data: { receipts: command.receipts } };
  }
}

/**
 * Folds one event into a new session state, sharing every untouched part with the old one and never
 * changing the old one; keys keep their places (anything else the state carries is kept), as immer's
 * produce did, which this replaces (its drafting and freezing cost more than the fold). Not frozen, for
 * projections; the decider's `evolve` is this, deep-frozen.
 */
export const foldSessionState = (state: SessionState, event: SessionEvent): SessionState => {
  // Receipts change nothing a session's state says (a no-op): session_show, hydration and every fold read as before.
  if (event.type === "session.exposed") return state;
  if (state.applied[event.id]) return state; // at-least-once delivery: an event applies once
  const next: SessionState = { ...state, id: state.id ?? event.aggregateId };
  if (event.type === "session.started") {
    // Every field of the data, whatever its version, as `Object.assign(draft, event.data, ...)` took them.
    Object.assign(next, event.data, { startedAt: event.time });
  } else if (event.type === "session.ended") {
    next.endedAt = event.time;
    next.summary = event.data.summary;
    next.transcript = event.data.transcript ?? null;
  }
  next.applied = { ...state.applied, [event.id]: { type: event.type, version: null } };
  return next;
};

/** The decider's evolve: the fold, deep-frozen as immer's produce left it. */
const evolveSession = (state: SessionState, event: SessionEvent): SessionState => deepFreeze(foldSessionState(state, event));

export const sessionDecider: Decider<SessionCommand, SessionEvent, SessionState> = {
  aggregate: "session",
  initialState: initialSessionState,
  decide: decideSession,
  evolve: evolveSession,
  scopeOf: (command, state) => `agent:${command.type === "start" ? command.agentId : state.agentId}`,
  outcomeOf: (state, eventId) => state.applied[eventId],
};
