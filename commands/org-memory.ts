import type { DomainEventOf, MemoryEvent, MemoryPromotionAccepted, MemoryPromotionRejected, OrgProvenance } from "../schemas/events.js";
import { ConflictReason, conflict } from "../schemas/errors.js";
import type { Scope } from "../schemas/primitives.js";
import type { AppliedEvent, Decider } from "./decider.js";
import { memoryDecider, type MemoryCommand, type MemoryState } from "./memory.js";

/**
 * The org's memories, as the curator writes them: the memory decider's rules, with one addition an agent
 * can never send: a proposal carries the provenance of the promotion that made it (which app memory,
 * which version, which request). Provenance is attached here, by the trusted writer, never read from a
 * command an agent sent (the command service only ever uses `memoryDecider`).
 */
export type OrgMemoryCommand =
  | (Extract<MemoryCommand, { type: "propose" }> & { provenance: OrgProvenance })
  | Extract<MemoryCommand, { type: "approve" }>;

export const orgMemoryDecider: Decider<OrgMemoryCommand, MemoryEvent, MemoryState> = {
  aggregate: "memory",
  initialState: memoryDecider.initialState,
  decide(command, state) {
    if (command.type === "approve") return memoryDecider.decide(command, state);
    const { provenance, ...propose } = command;
    const decided = memoryDecider.decide({ ...propose, scope: "org" }, state) as Extract<DomainEventOf<MemoryEvent>, { type: "memory.proposed" }>;
    return { type: decided.type, data: { ...decided.data, provenance } };
  },
  evolve: memoryDecider.evolve,
  // Everything in the org stream is in scope org, whatever a command says.
  scopeOf: () => "org",
  outcomeOf: memoryDecider.outcomeOf,
};

/** The curator's decision on one promotion request; written once, on the promotion's own subject. */
export type PromotionDecisionEvent = MemoryPromotionAccepted | MemoryPromotionRejected;
export type PromotionDecisionCommand = DomainEventOf<PromotionDecisionEvent> & { scope: Scope };

export interface PromotionDecisionState {
  decided: PromotionDecisionEvent["type"] | null;
  applied: Record<string, AppliedEvent>;
}

/**
 * One decision per promotion: the first stands. The policy (services/curator/policy.ts) has already
 * decided what to say; this only refuses a second decision, so a redelivered request cannot change it.
 */
export const promotionDecisionDecider: Decider<PromotionDecisionCommand, PromotionDecisionEvent, PromotionDecisionState> = {
  aggregate: "memory",
  initialState: () => ({ decided: null, applied: {} }),
  decide(command, state) {
    if (state.decided !== null) {
      throw conflict(`promotion ${command.data.promotionId} was decided already (${state.decided})`, { reason: ConflictReason.already_promoted });
    }
    const { scope: _scope, ...decided } = command;
    return decided as DomainEventOf<PromotionDecisionEvent>;
  },
  evolve: (state, event) =>
    state.applied[event.id] ? state : { decided: state.decided ?? event.type, applied: { ...state.applied, [event.id]: { type: event.type, version: null } } },
  scopeOf: (command) => command.scope,
  outcomeOf: (state, eventId) => state.applied[eventId],
};
