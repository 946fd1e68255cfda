import type { DomainEventOf, Evidence, PhaseName, ProposalEvent, ProposedChange, WrittenEvent } from "../schemas/events.js";
import { ConflictReason, conflict, notFound } from "../schemas/errors.js";
import type { Actor } from "../schemas/primitives.js";
import type { AppliedEvent, Decider } from "./decider.js";

/**
 * One change a consolidation run proposed, and its review: made (once: expected sequence 0 under an id
 * derived from the run, the phase and the key), then accepted and applied, or rejected; an applied one
 * may be reverted. Accept and applied are two events because applying writes memory events on other
 * subjects in between: a crash after `proposal.accepted` leaves an accepted proposal that a retry
 * finishes applying (the memory events have derived ids, so nothing is written twice).
 */
export type ProposalCommand =
  | { type: "make"; runId: string; phase: PhaseName; key: string; change: ProposedChange; evidence: Evidence; reason: string }
  | { type: "accept"; reason: string | null }
  | { type: "applied"; events: WrittenEvent[] }
  | { type: "reject"; reason: string }
  | { type: "revert"; events: WrittenEvent[] };

export type ProposalStatus = "unknown" | "pending" | "accepted" | "applied" | "rejected" | "reverted";

export interface ProposalState {
  id: string | null;
  runId: string | null;
  phase: PhaseName | null;
  key: string | null;
  change: ProposedChange | null;
  evidence: Evidence | null;
  reason: string | null;
  status: ProposalStatus;
  madeAt: string | null;
  /** Who decided (accepted or rejected), when, why, and the decision's event id (the causation of what it applied). */
  decision: { actor: Actor; at: string; reason: string | null; eventId: string } | null;
  /** The memory events the accept wrote (the receipt a revert compensates). */
  written: WrittenEvent[];
  /** The memory events the revert wrote. */
  compensated: WrittenEvent[];
  applied: Record<string, AppliedEvent>;
}

export const initialProposalState = (): ProposalState => ({
  id: null,
  runId: null,
  phase: null,
  key: null,
  change: null,
  evidence: null,
  reason: null,
  status: "unknown",
  madeAt: null,
  decision: null,
  written: [],
  compensated: [],
  applied: {},
});

function requireExisting(state: ProposalState): void {
  if (state.id === null) throw notFound("no such proposal");
}

function decideProposal(command: ProposalCommand, state: ProposalState): DomainEventOf<ProposalEvent> {
  switch (command.type) {
    case "make": {
      if (state.id !== null) throw conflict(`proposal ${state.id} was already made`, { reason: ConflictReason.already_proposed });
      const { type: _type, ...data } = command;
      return { type: "proposal.made", data };
    }
    case "accept": {
      requireExisting(state);
      if (state.status !== "pending") {
        throw conflict(`proposal ${state.id} is already ${state.status}`, { reason: ConflictReason.already_decided, status: state.status });
      }
      return { type: "proposal.accepted", data: { runId: state.runId!, reason: command.reason } };
    }
    case "applied": {
      requireExisting(state);
      if (state.status === "applied" || state.status === "reverted") {
        throw conflict(`proposal ${state.id} is already ${state.status}`, { reason: ConflictReason.already_applied, status: state.status });
      }
      if (state.status !== "accepted") throw conflict(`proposal ${state.id} is ${state.status}, not accepted`, { reason: ConflictReason.not_accepted, status: state.status });
      return { type: "proposal.applied", data: { runId: state.runId!, events: command.events } };
    }
    case "reject": {
      requireExisting(state);
      if (state.status !== "pending") {
        throw conflict(`proposal ${state.id} is already ${state.status}`, { reason: ConflictReason.already_decided, status: state.status });
      }
      return { type: "proposal.rejected", data: { runId: state.runId!, reason: command.reason } };
    }
    case "revert": {
      requireExisting(state);
      if (state.status === "reverted") throw conflict(`proposal ${state.id} was already reverted`, { reason: ConflictReason.already_reverted });
      if (state.status !== "applied") throw conflict(`proposal ${state.id} is ${state.status}, not applied`, { reason: ConflictReason.not_applied, status: state.status });
      return { type: "proposal.reverted", data: { runId: state.runId!, events: command.events } };
    }
  }
}

function evolveProposal(state: ProposalState, event: ProposalEvent): ProposalState {
  if (state.applied[event.id]) return state;
  const base = {
    ...state,
    id: state.id ?? event.aggregateId,
    applied: { ...state.applied, [event.id]: { type: event.type, version: null } },
  };
  switch (event.type) {
    case "proposal.made":
      return {
        ...base,
        runId: event.data.runId,
        phase: event.data.phase,
        key: event.data.key,
        change: event.data.change,
        evidence: event.data.evidence,
        reason: event.data.reason,
        status: "pending",
        madeAt: event.time,
      };
    case "proposal.accepted":
      return { ...base, status: "accepted", decision: { actor: event.actor, at: event.time, reason: event.data.reason, eventId: event.id } };
    case "proposal.applied":
      return { ...base, status: "applied", written: event.data.events };
    case "proposal.rejected":
      return { ...base, status: "rejected", decision: { actor: event.actor, at: event.time, reason: event.data.reason, eventId: event.id } };
    case "proposal.reverted":
      return { ...base, status: "reverted", compensated: event.data.events };
  }
}

/**
 * A session-end review's proposals carry their candidate's content: they live in the scope of the session
 * under review (its evidence's one session, services/dream/phases/candidates.ts), read as the candidate is.
 */
const proposalScope = (phase: PhaseName | null, evidence: Evidence | null): string =>
  phase === "candidates" && evidence?.sessions[0] !== undefined ? `session:${evidence.sessions[0]}` : "app";

export const proposalDecider: Decider<ProposalCommand, ProposalEvent, ProposalState> = {
  aggregate: "proposal",
  initialState: initialProposalState,
  decide: decideProposal,
  evolve: evolveProposal,
  scopeOf: (command, state) => (command.type === "make" ? proposalScope(command.phase, command.evidence) : proposalScope(state.phase, state.evidence)),
  outcomeOf: (state, eventId) => state.applied[eventId],
};
