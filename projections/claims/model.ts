import { foldClaimState, initialClaimState, type ClaimState } from "../../commands/claim.js";
import type { ClaimEvent, LedgerEvent } from "../../schemas/events.js";
import type { GenerationKeys } from "./keys.js";

/**
 * The pure half of the claims projection: fold claim events into per-claim state with the decider's own
 * fold (so the read model can never disagree with the write side about who holds what), then derive
 * the Redis commands that make the keys say what the state says. No I/O: testable without Redis.
 */

/** One Redis command as MULTI takes it: name, then arguments. */
export type RedisCommand = [string, ...(string | number)[]];

export const isClaimEvent = (event: LedgerEvent): event is ClaimEvent => event.type.startsWith("claim.");

/** What the projection stores per claim: the state without the applied-event memo (checkpoints do that job). */
export type StoredClaimState = Omit<ClaimState, "applied">;

/**
 * The stored JSON: every field but the memo, in ClaimState's order. Spelled out rather than
 * `const { applied, ...rest } = state`, whose copy took V8's slow path (a third of this function's time);
 * the type makes the list complete (a missing or unknown field does not compile).
 */
export const serializeState = (state: ClaimState): string => {
  const stored: StoredClaimState = {
    id: state.id,
    kind: state.kind,
    name: state.name,
    title: state.title,
    priority: state.priority,
    openedAt: state.openedAt,
    openedBy: state.openedBy,
    done: state.done,
    doneAt: state.doneAt,
    doneBy: state.doneBy,
    holder: state.holder,
    leaseMs: state.leaseMs,
    claimedAt: state.claimedAt,
    expiresAt: state.expiresAt,
    takeoverOf: state.takeoverOf,
    updatedAt: state.updatedAt,
  };
  return JSON.stringify(stored);
};

export const parseState = (json: string | null): ClaimState =>
  json === null ? initialClaimState() : { ...(JSON.parse(json) as StoredClaimState), applied: {} };

/**
 * Folds one event into a claim's state: exactly the decider's evolve, without its deep freeze (nothing
 * here mutates a state, so a rebuild need not pay for freezing every state it folds).
 */
export const foldClaim = (state: ClaimState, event: ClaimEvent): ClaimState => foldClaimState(state, event);

const PRIORITY_WEIGHT = 1e13; // openedAt in ms stays below 1e13 until the year 2286

/** Open tasks sort by priority (1 first), then oldest first. */
export const openTaskScore = (priority: number, openedAt: string): number => priority * PRIORITY_WEIGHT + Date.parse(openedAt);

/**
 * The commands that move Redis from `before` to `after` for one claim. `before` matters only for the
 * previous holder (whose set loses the claim). Sets gain an expiry that only ever moves later
 * (`NX` then `GT`), so a set vanishes once its last lease lapsed; `time` (the event's time, never a
 * wall clock) trims members whose leases had lapsed by then, so replays produce the same keys.
 */
/**
 * The hash readers see for a held claim, expiring with its lease. The one spelling of its fields, for
 * live commits and rebuilds alike: if they differed, a rebuilt generation would not equal the live one.
 */
export function liveClaimHash(keys: GenerationKeys, id: string, state: ClaimState, expiresAtMs: number): RedisCommand[] {
  return [
    [
      "HSET",
      keys.claim(id),
      "claimId", id,
      "kind", state.kind ?? "",
      "name", state.name ?? "",
      "holder", state.holder ?? "",
      "expiresAt", state.expiresAt ?? "",
      "claimedAt", state.claimedAt ?? "",
      "leaseMs", state.leaseMs ?? 0,
      "takeoverOf", state.takeoverOf === null ? "" : JSON.stringify(state.takeoverOf),
    ],
    ["PEXPIREAT", keys.claim(id), expiresAtMs],
  ];
}

export function claimCommands(keys: GenerationKeys, before: ClaimState, after: ClaimState, time: string): RedisCommand[] {
  const id = after.id;
  if (id === null) return [];
  const at = Date.parse(time);
  const commands: RedisCommand[] = [["SET", keys.state(id), serializeState(after)], ["DEL", keys.claim(id)]];

  if (before.holder !== null && before.holder !== after.holder) commands.push(["ZREM", keys.agent(before.holder), id]);

  if (after.holder !== null && after.expiresAt !== null && after.kind !== null && after.name !== null) {
    const expiresAtMs = Date.parse(after.expiresAt);
    commands.push(...liveClaimHash(keys, id, after, expiresAtMs));
    for (const set of [keys.agent(after.holder), keys.live]) {
      commands.push(
        ["ZREMRANGEBYSCORE", set, "-inf", at],
        ["ZADD", set, expiresAtMs, id],
        ["PEXPIREAT", set, expiresAtMs, "NX"],
        ["PEXPIREAT", set, expiresAtMs, "GT"],
      );
    }
  } else {
    commands.push(["ZREM", keys.live, id]);
  }

  if (after.kind === "task") {
    if (after.done || after.name === null || after.priority === null || after.openedAt === null) {
      commands.push(["DEL", keys.task(id)], ["ZREM", keys.openTasks, id]);
    } else {
      commands.push(
        ["HSET", keys.task(id), "claimId", id, "name", after.name, "title", after.title ?? "", "priority", after.priority, "openedAt", after.openedAt],
        ["ZADD", keys.openTasks, openTaskScore(after.priority, after.openedAt), id],
      );
    }
  }
  return commands;
}

/**
 * Folds a batch of events (stream order) into the states it touches and the commands to write,
 * skipping events at or below `afterSeq` and events of other families. `load` supplies the state a
 * claim had before the batch.
 */
export function planBatch(
  keys: GenerationKeys,
  events: readonly { seq: number; event: LedgerEvent }[],
  afterSeq: number,
  load: (claimId: string) => ClaimState,
): { commands: RedisCommand[]; states: Map<string, ClaimState>; lastSeq: number } {
  const states = new Map<string, ClaimState>();
  const commands: RedisCommand[] = [];
  let lastSeq = afterSeq;
  for (const { seq, event } of events) {
    if (seq <= lastSeq) continue;
    lastSeq = seq;
    if (!isClaimEvent(event)) continue;
    const before = states.get(event.aggregateId) ?? load(event.aggregateId);
    const after = foldClaim(before, event);
    commands.push(...claimCommands(keys, before, after, event.time));
    states.set(event.aggregateId, after);
  }
  return { commands, states, lastSeq };
}
