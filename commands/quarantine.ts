import type { DomainEventOf, LedgerQuarantined } from "../schemas/events.js";
import { ConflictReason, conflict } from "../schemas/errors.js";
import type { Scope } from "../schemas/primitives.js";
import type { AppliedEvent, Decider } from "./decider.js";

/**
 * Setting aside one message of a stream that is not a valid event (services/quarantine.ts checks that
 * and supplies what the message is); the aggregate is that stream sequence, so it is quarantined once.
 */
export interface QuarantineCommand {
  type: "quarantine";
  /** `app`, or `org` for the org stream. */
  scope: Scope;
  seq: number;
  subject: string;
  digest: string;
  bytes: number;
  error: string;
  reason: string;
}

export interface QuarantineState {
  /** The quarantine already written for this sequence, if any. */
  quarantined: { seq: number; actor: string; reason: string; time: string } | null;
  applied: Record<string, AppliedEvent>;
}

const initialQuarantineState = (): QuarantineState => ({ quarantined: null, applied: {} });

function decideQuarantine(command: QuarantineCommand, state: QuarantineState): DomainEventOf<LedgerQuarantined> {
  if (state.quarantined) {
    const q = state.quarantined;
    throw conflict(`sequence ${q.seq} is already quarantined (by ${q.actor} at ${q.time}: ${q.reason})`, {
      reason: ConflictReason.already_quarantined,
      seq: q.seq,
      by: q.actor,
    });
  }
  const { seq, subject, digest, bytes, error, reason } = command;
  return { type: "ledger.quarantined", data: { seq, subject, digest, bytes, error, reason } };
}

function evolveQuarantine(state: QuarantineState, event: LedgerQuarantined): QuarantineState {
  if (state.applied[event.id]) return state;
  return {
    quarantined: state.quarantined ?? {
      seq: event.data.seq,
      actor: `${event.actor.kind}:${event.actor.id}`,
      reason: event.data.reason,
      time: event.time,
    },
    applied: { ...state.applied, [event.id]: { type: event.type, version: null } },
  };
}

export const quarantineDecider: Decider<QuarantineCommand, LedgerQuarantined, QuarantineState> = {
  aggregate: "quarantine",
  initialState: initialQuarantineState,
  decide: decideQuarantine,
  evolve: evolveQuarantine,
  scopeOf: (command) => command.scope,
  outcomeOf: (state, eventId) => state.applied[eventId],
};
