import { createHash } from "node:crypto";
import type { ClaimEvent, ClaimKind, DomainEventOf } from "../schemas/events.js";
import { ConflictReason, conflict, invalid, notFound } from "../schemas/errors.js";
import type { Actor } from "../schemas/primitives.js";
import { deepFreeze, type AppliedEvent, type Decider } from "./decider.js";

/**
 * Claims and locks: live coordination between agents. One aggregate per task or lock, on the subject
 * `<prefix>.app.<app>.claim.<claimId>`, so optimistic concurrency makes every claim race have exactly
 * one winner.
 *
 * Rules (decided against `now`, which the command carries; the decider never reads a clock):
 * - a lease is live while `now < expiresAt`;
 * - claim: refused (`conflict`, reason `held`) while another agent holds a live lease; a lapsed lease is
 *   taken over, and the new `claim.claimed` records whose lease it took (`takeoverOf`);
 *   claiming what you already hold with a live lease is refused too (`conflict`, reason `already_held`):
 *   extending a lease is `renew`'s job, so a claim never silently means "renew";
 *   re-claiming your own lapsed lease (nobody took it) is a fresh claim;
 *   a task that does not exist yet is opened by its first claim (with the claim's priority);
 *   a done task can never be claimed again (`conflict`, reason `done`);
 * - renew: only the holder, only while the lease is live (a lapsed one is `conflict`, reason `expired`:
 *   claim again instead); the lease restarts at `now` for `ttlMs` (default: the last lease length);
 * - release: only the holder, even after its lease lapsed, as long as nobody took it over;
 *   `done: true` (tasks only) finishes the task for good.
 * A caller who is not the holder gets `conflict` (reason `not_holder` or `not_held`), not `forbidden`:
 * who holds a claim is state that moves under the caller (expiry, takeover), so the answer is "reread",
 * the same as for a stale sequence; `forbidden` stays for what an actor may never do.
 * Every refusal names the holder and expiry (details.holder, details.expiresAt; null when free).
 */
export type ClaimCommand =
  | { type: "open"; name: string; title: string | null; priority: number }
  | { type: "claim"; kind: ClaimKind; name: string; agentId: string; ttlMs: number; now: number; priority: number }
  | { type: "renew"; kind: ClaimKind; name: string; agentId: string; ttlMs: number | null; now: number }
  | { type: "release"; kind: ClaimKind; name: string; agentId: string; done: boolean; now: number };

export interface ClaimState {
  id: string | null;
  kind: ClaimKind | null;
  name: string | null;
  /** Tasks only. */
  title: string | null;
  priority: number | null;
  openedAt: string | null;
  openedBy: Actor | null;
  done: boolean;
  doneAt: string | null;
  doneBy: string | null;
  /** The agent whose lease this is (live or lapsed); null when released or never claimed. */
  holder: string | null;
  leaseMs: number | null;
  claimedAt: string | null;
  expiresAt: string | null;
  takeoverOf: { holder: string; expiresAt: string } | null;
  updatedAt: string | null;
  applied: Record<string, AppliedEvent>;
}

export const initialClaimState = (): ClaimState => ({
  id: null,
  kind: null,
  name: null,
  title: null,
  priority: null,
  openedAt: null,
  openedBy: null,
  done: false,
  doneAt: null,
  doneBy: null,
  holder: null,
  leaseMs: null,
  claimedAt: null,
  expiresAt: null,
  takeoverOf: null,
  updatedAt: null,
  applied: {},
});

export const DEFAULT_LEASE_MS = 10 * 60 * 1000;
export const MAX_LEASE_MS = 24 * 60 * 60 * 1000;
export const DEFAULT_PRIORITY = 3;

/**
 * The aggregate id of a task or lock. Task names are subject-safe ids (`task-<name>`); lock names are
 * paths, so their id is a hash (`lock-<first 40 hex of sha256(name)>`) and the name travels in the events.
 * A lock name arrives here in its normal form (schemas/lock-name.ts, applied by the request schemas), so
 * each path has one spelling and one aggregate; normalising an already normal name changes nothing, so
 * ids of locks stored before keep their names' hashes.
 */
export function claimIdOf(kind: ClaimKind, name: string): string {
  if (kind === "task") return `task-${name}`;
  return `lock-${createHash("sha256").update(name, "utf8").digest("hex").slice(0, 40)}`;
}

export const expiresAtMs = (state: Pick<ClaimState, "expiresAt">): number | null =>
  state.expiresAt === null ? null : Date.parse(state.expiresAt);

/** True when someone holds the task or lock with a lease that has not lapsed at `now` (epoch ms). */
export const isLive = (state: Pick<ClaimState, "holder" | "expiresAt">, now: number): boolean =>
  state.holder !== null && (expiresAtMs(state) ?? 0) > now;

const what = (kind: ClaimKind, name: string) => `${kind} ${name}`;

function refuse(state: ClaimState, kind: ClaimKind, name: string, reason: ConflictReason, message: string): never {
  throw conflict(message, { reason, kind, name, holder: state.holder, expiresAt: state.expiresAt });
}

function requireSameTarget(command: { kind: ClaimKind; name: string }, state: ClaimState): void {
  if (state.kind !== null && (state.kind !== command.kind || state.name !== command.name)) {
    // Only a sha256 prefix collision between two lock names gets here.
    throw conflict(`${what(command.kind, command.name)} shares its aggregate with ${what(state.kind, state.name ?? "?")}`, {
      reason: ConflictReason.name_mismatch,
    });
  }
}

function requireHolder(command: { kind: ClaimKind; name: string; agentId: string }, state: ClaimState, verb: string): void {
  const { kind, name, agentId } = command;
  if (state.kind === null) throw notFound(`no ${what(kind, name)}`, { kind, name });
  if (state.done) refuse(state, kind, name, ConflictReason.done, `${what(kind, name)} is done: nothing to ${verb}`);
  if (state.holder === null) refuse(state, kind, name, ConflictReason.not_held, `${what(kind, name)} is not claimed by anyone: nothing to ${verb}`);
  if (state.holder !== agentId) {
    refuse(state, kind, name, ConflictReason.not_holder, `${what(kind, name)} is held by ${state.holder} (lease until ${state.expiresAt}), not by ${agentId}`);
  }
}

type ClaimDomainEvent = DomainEventOf<ClaimEvent>;

function decideClaim(command: ClaimCommand, state: ClaimState): ClaimDomainEvent {
  switch (command.type) {
    case "open": {
      requireSameTarget({ kind: "task", name: command.name }, state);
      if (state.done) refuse(state, "task", command.name, ConflictReason.done, `task ${command.name} is already done`);
      if (state.kind !== null) refuse(state, "task", command.name, ConflictReason.already_open, `task ${command.name} is already open`);
      return { type: "claim.task_opened", data: { name: command.name, title: command.title, priority: command.priority } };
    }
    case "claim": {
      const { kind, name, agentId, now } = command;
      requireSameTarget(command, state);
      if (state.done) refuse(state, kind, name, ConflictReason.done, `${what(kind, name)} is done and cannot be claimed`);
      if (isLive(state, now)) {
        if (state.holder === agentId) {
          refuse(state, kind, name, ConflictReason.already_held, `${agentId} already holds ${what(kind, name)} until ${state.expiresAt}: renew it instead`);
        }
        refuse(state, kind, name, ConflictReason.held, `${what(kind, name)} is held by ${state.holder} until ${state.expiresAt}`);
      }
      const takeoverOf =
        state.holder !== null && state.holder !== agentId && state.expiresAt !== null
          ? { holder: state.holder, expiresAt: state.expiresAt }
          : null;
      return {
        type: "claim.claimed",
        data: {
          kind,
          name,
          holder: agentId,
          leaseMs: command.ttlMs,
          expiresAt: new Date(now + command.ttlMs).toISOString(),
          takeoverOf,
          priority: kind === "task" && state.kind === null ? command.priority : null,
        },
      };
    }
    case "renew": {
      const { kind, name, now } = command;
      requireSameTarget(command, state);
      requireHolder(command, state, "renew");
      if (!isLive(state, now)) {
        refuse(state, kind, name, ConflictReason.expired, `the lease of ${command.agentId} on ${what(kind, name)} lapsed at ${state.expiresAt}: claim it again`);
      }
      const leaseMs = command.ttlMs ?? state.leaseMs ?? DEFAULT_LEASE_MS;
      return { type: "claim.renewed", data: { holder: command.agentId, leaseMs, expiresAt: new Date(now + leaseMs).toISOString() } };
    }
    case "release": {
      const { kind, name } = command;
      requireSameTarget(command, state);
      if (command.done && kind !== "task") throw invalid(`only a task can be done; ${what(kind, name)} is a lock`);
      requireHolder(command, state, "release");
      return { type: "claim.released", data: { holder: command.agentId, done: command.done } };
    }
  }
}

/**
 * One event's effect on a claim's fields, sharing `applied` with `state` (the caller decides what the memo
 * becomes); never changes `state`. The new state is one object literal in ClaimState's key order (that of
 * `initialClaimState`, which every state and stored state has had since claims exist), not a spread of the
 * old state with overrides: V8 built those on a slow path, a few microseconds per event, as it did for
 * memories (see `memoryStateAfter`).
 */
function claimStateAfter(state: ClaimState, event: ClaimEvent, applied: Record<string, AppliedEvent>): ClaimState {
  let { kind, name, title, priority, openedAt, openedBy, done, doneAt, doneBy, holder, leaseMs, claimedAt, expiresAt, takeoverOf } = state;
  switch (event.type) {
    case "claim.task_opened":
      kind = "task";
      name = event.data.name;
      title = event.data.title;
      priority = event.data.priority;
      openedAt = event.time;
      openedBy = event.actor;
      break;
    case "claim.claimed":
      kind = event.data.kind;
      name = event.data.name;
      // A task's first claim opens it (the claim carries its priority); a later one never reopens it.
      if (event.data.priority !== null && openedAt === null) {
        priority = event.data.priority;
        openedAt = event.time;
        openedBy = event.actor;
      }
      holder = event.data.holder;
      leaseMs = event.data.leaseMs;
      claimedAt = event.time;
      expiresAt = event.data.expiresAt;
      takeoverOf = event.data.takeoverOf;
      break;
    case "claim.renewed":
      leaseMs = event.data.leaseMs;
      expiresAt = event.data.expiresAt;
      break;
    case "claim.released":
      holder = null;
      leaseMs = null;
      claimedAt = null;
      expiresAt = null;
      takeoverOf = null;
      if (event.data.done) {
        done = true;
        doneAt = event.time;
        doneBy = event.data.holder;
      }
      break;
  }
  return {
    id: state.id ?? event.aggregateId,
    kind,
    name,
    title,
    priority,
    openedAt,
    openedBy,
    done,
    doneAt,
    doneBy,
    holder,
    leaseMs,
    claimedAt,
    expiresAt,
    takeoverOf,
    updatedAt: event.time,
    applied,
  };
}

/**
 * Folds one event into a new claim state, sharing every untouched part with the old one and never
 * changing the old one. Written by hand rather than with immer's produce, whose drafting and freezing were
 * most of a claims rebuild's fold. Not frozen: projections fold with this (projections/claims/model.ts);
 * the decider's `evolve` is this, deep-frozen.
 */
export const foldClaimState = (state: ClaimState, event: ClaimEvent): ClaimState => {
  if (state.applied[event.id]) return state; // at-least-once delivery: an event applies once
  return claimStateAfter(state, event, { ...state.applied, [event.id]: { type: event.type, version: null } });
};

/**
 * The fold for a projection that deduplicates by stream sequence itself and stores no applied-event memo:
 * `foldClaimState` with the memo left as it is (neither checked nor grown), so no per-event memo copy.
 */
export const foldClaimFields = (state: ClaimState, event: ClaimEvent): ClaimState => claimStateAfter(state, event, state.applied);

/** The decider's evolve: the fold, deep-frozen as immer's produce left it. */
const evolveClaim = (state: ClaimState, event: ClaimEvent): ClaimState => deepFreeze(foldClaimState(state, event));

export const claimDecider: Decider<ClaimCommand, ClaimEvent, ClaimState> = {
  aggregate: "claim",
  initialState: initialClaimState,
  decide: decideClaim,
  evolve: evolveClaim,
  // Claims coordinate the whole app's agents.
  scopeOf: () => "app",
  outcomeOf: (state, eventId) => state.applied[eventId],
};

/** A claim as queries return it: who holds it until when (null fields when free). */
export interface ClaimView {
  claimId: string;
  kind: ClaimKind;
  name: string;
  holder: string | null;
  expiresAt: string | null;
  claimedAt: string | null;
  leaseMs: number | null;
  takeoverOf: { holder: string; expiresAt: string } | null;
  /** Whether the lease is live at the time the view was made. */
  live: boolean;
  title: string | null;
  priority: number | null;
  done: boolean;
}

export function claimView(state: ClaimState, now: number): ClaimView | null {
  if (state.id === null || state.kind === null || state.name === null) return null;
  return {
    claimId: state.id,
    kind: state.kind,
    name: state.name,
    holder: state.holder,
    expiresAt: state.expiresAt,
    claimedAt: state.claimedAt,
    leaseMs: state.leaseMs,
    takeoverOf: state.takeoverOf,
    live: isLive(state, now),
    title: state.title,
    priority: state.priority,
    done: state.done,
  };
}
