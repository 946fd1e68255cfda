import { v5 as uuidv5 } from "uuid";
import type { DomainEventOf, MemoryEvent, MemoryPromotionAccepted, MemoryPromotionRejected, MemoryPromotionRequested } from "../schemas/events.js";
import { ConflictReason, conflict, notFound } from "../schemas/errors.js";
import type { Actor } from "../schemas/primitives.js";
import type { AppliedEvent, Decider } from "./decider.js";
import { activeVersionOf, initialMemoryState, memoryDecider, type MemoryState } from "./memory.js";

/**
 * Promotion requests, decided on the memory's own subject so a request is ordered with the memory's
 * lifecycle (a promotion of version 2 cannot slip in after version 3 became active: the append names
 * the sequence the decision was made against).
 *
 * One promotion per approved version: the promotion id is derived from app, memory id and version, so
 * asking again for the same version is a `conflict` naming the existing promotion (a keyed retry of the
 * same command is a replay instead, answered from the log like every keyed command). A later version is
 * a new promotion.
 */

export type PromotionCommand = { type: "promote"; reason: string | null };

export interface PromotionRequest {
  promotionId: string;
  version: number;
  reason: string | null;
  requestedBy: Actor;
  requestedAt: string;
  eventId: string;
}

/** The memory as its lifecycle left it, plus the promotions requested for it. */
export interface PromotableMemoryState {
  memory: MemoryState;
  promotions: PromotionRequest[];
}

type PromotableEvent = MemoryEvent | MemoryPromotionRequested;

// A fixed, random namespace: promotion ids are UUIDv5 of (app, memory id, version) inside it.
const PROMOTION_NAMESPACE = "0f4c6d52-93a1-4b8e-b7c2-5d1e9a3f6b70";

/** The one promotion id a memory version can have. Subject-safe, 36 characters whatever the memory id. */
export const promotionIdOf = (app: string, memoryId: string, version: number): string =>
  uuidv5(`${app}\u0000${memoryId}\u0000${version}`, PROMOTION_NAMESPACE);

export const initialPromotableState = (): PromotableMemoryState => ({ memory: initialMemoryState(), promotions: [] });

function decidePromote(command: PromotionCommand, state: PromotableMemoryState): DomainEventOf<MemoryPromotionRequested> {
  const { memory } = state;
  if (memory.id === null || memory.app === null) throw notFound("no such memory");
  if (memory.scope === "org") {
    throw conflict(`memory ${memory.id} is already in scope org`, { reason: ConflictReason.already_org });
  }
  if (memory.superseded) {
    throw conflict(`memory ${memory.id} is superseded; only an approved, active memory can be promoted`, { reason: ConflictReason.superseded });
  }
  const active = activeVersionOf(memory);
  if (!active) {
    throw conflict(`memory ${memory.id} has no approved version; only an approved, active memory can be promoted`, { reason: ConflictReason.not_approved });
  }
  const promotionId = promotionIdOf(memory.app, memory.id, active.version);
  if (state.promotions.some((p) => p.promotionId === promotionId)) {
    throw conflict(`version ${active.version} of memory ${memory.id} was already submitted for promotion (${promotionId})`, {
      reason: ConflictReason.already_promoted,
      promotionId,
      version: active.version,
    });
  }
  return { type: "memory.promotion_requested", data: { promotionId, version: active.version, reason: command.reason } };
}

function evolvePromotable(state: PromotableMemoryState, event: PromotableEvent): PromotableMemoryState {
  if (state.memory.applied[event.id]) return state; // at-least-once delivery: an event applies once
  // The lifecycle fold ignores event types it does not know, and records every applied event id.
  const memory = memoryDecider.evolve(state.memory, event as MemoryEvent);
  if (event.type !== "memory.promotion_requested") return { memory, promotions: state.promotions };
  const request: PromotionRequest = {
    promotionId: event.data.promotionId,
    version: event.data.version,
    reason: event.data.reason,
    requestedBy: event.actor,
    requestedAt: event.time,
    eventId: event.id,
  };
  return { memory, promotions: [...state.promotions, request] };
}

export const promotionDecider: Decider<PromotionCommand, PromotableEvent, PromotableMemoryState> = {
  aggregate: "memory",
  initialState: initialPromotableState,
  decide: decidePromote,
  evolve: evolvePromotable,
  scopeOf: (_command, state) => state.memory.scope ?? "app",
  outcomeOf: (state, eventId): AppliedEvent | undefined => state.memory.applied[eventId],
};

/** A promotion as `show` lists it: the request and, once the curator decided, its decision. */
export interface PromotionView {
  promotionId: string;
  version: number;
  reason: string | null;
  requestedBy: Actor;
  requestedAt: string;
  status: "pending" | "accepted" | "rejected";
  decision:
    | {
        outcome: "created" | "merged" | "rejected";
        orgMemoryId: string | null;
        orgVersion: number | null;
        approved: boolean;
        reasons: { code: string; message: string }[];
        decidedBy: Actor;
        decidedAt: string;
        seq: number;
      }
    | null;
}

/** Joins a request with the decision stored on its promotion subject (null while the curator has not decided). */
export function promotionView(
  request: PromotionRequest,
  decision: { seq: number; event: MemoryPromotionAccepted | MemoryPromotionRejected } | null,
): PromotionView {
  const base = { ...request, status: "pending" as const, decision: null };
  const { eventId: _eventId, ...shown } = base;
  if (!decision) return shown;
  const { event, seq } = decision;
  const common = { reasons: event.data.reasons, decidedBy: event.actor, decidedAt: event.time, seq };
  return event.type === "memory.promotion_accepted"
    ? {
        ...shown,
        status: "accepted",
        decision: { outcome: event.data.outcome, orgMemoryId: event.data.orgMemoryId, orgVersion: event.data.orgVersion, approved: event.data.approved, ...common },
      }
    : { ...shown, status: "rejected", decision: { outcome: "rejected", orgMemoryId: null, orgVersion: null, approved: false, ...common } };
}
