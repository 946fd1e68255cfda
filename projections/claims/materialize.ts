import { foldClaimFields, initialClaimState, type ClaimState } from "../../commands/claim.js";
import type { LedgerEvent } from "../../schemas/events.js";
import type { GenerationKeys } from "./keys.js";
import { isClaimEvent, liveClaimHash, openTaskScore, serializeState, type RedisCommand } from "./model.js";

/**
 * The claims projection for a fresh (invisible) generation: fold every event in memory, write each
 * key's final value once.
 *
 * A live target turns each event into the commands of `claimCommands` (model.ts): about fifteen per
 * claim event, most of them rewriting keys a later event rewrites again. A rebuild only needs what those
 * commands leave behind, so this class keeps, per claim, the folded state (the decider's own fold),
 * and per sorted set (`live`, `agent:<id>`) what Redis would hold after the same commands: members and
 * scores, and the key's expiry. Redis's rules are applied as they are:
 *   - ZREMRANGEBYSCORE -inf <event time> trims lapsed members; a set left empty is deleted with its TTL;
 *   - ZADD on a missing key creates it without TTL; PEXPIREAT NX then sets the TTL, GT only moves it later;
 *   - an expiry at or before now deletes the key at once (Redis does so for PEXPIREAT in the past);
 *   - ZREM of the last member deletes the key.
 * `materialize` then emits, for what changed since the last call: each claim's state, its lease hash
 * when the lease has not lapsed (a lapsed one is deleted by its own PEXPIREAT, so it is simply not
 * written), its task hash and open-task entry, and each changed set whole with its expiry. The keys equal
 * those of replaying `claimCommands` event by event now (test/projections/live-vs-rebuild.e2e.spec.ts compares dumps).
 */
export class ClaimsMaterializer {
  private readonly states = new Map<string, ClaimState>();
  private readonly sets = new Map<string, SimulatedSet>();
  private readonly dirtyClaims = new Set<string>();
  private readonly dirtySets = new Set<string>();
  private readonly agentKeys = new Map<string, string>();
  /** After the first materialize, keys written before may need deleting. */
  private materialized = false;

  constructor(
    private readonly keys: GenerationKeys,
    private readonly now: () => number = Date.now,
  ) {}

  /** Folds events (stream order) that the caller has not folded before. */
  fold(events: readonly { event: LedgerEvent }[]): void {
    const now = this.now();
    for (const { event } of events) {
      if (!isClaimEvent(event)) continue;
      const id = event.aggregateId;
      const before = this.states.get(id);
      // The projection deduplicates by stream sequence, so the decider's applied-event memo is neither
      // kept nor consulted: every state here carries its claim's empty one (serializeState drops it).
      const after = foldClaimFields(before ?? initialClaimState(), event);
      this.states.set(id, after);
      this.dirtyClaims.add(id);
      if (after.id === null) continue;
      this.foldSets(after.id, before?.holder ?? null, after, event.time, now);
    }
  }

  private set(key: string): SimulatedSet {
    let set = this.sets.get(key);
    if (!set) this.sets.set(key, (set = new SimulatedSet()));
    this.dirtySets.add(key);
    return set;
  }

  /**
   * The key of an agent's set, built once per agent: the same string every time, so the maps and sets it
   * keys hash it once, rather than a new concatenation to hash on every event.
   */
  private agentKey(agentId: string): string {
    let key = this.agentKeys.get(agentId);
    if (key === undefined) this.agentKeys.set(agentId, (key = this.keys.agent(agentId)));
    return key;
  }

  /** The sorted-set half of `claimCommands`, on the simulated sets; `time` is the event's. */
  private foldSets(id: string, previousHolder: string | null, after: ClaimState, time: string, now: number): void {
    if (previousHolder !== null && previousHolder !== after.holder) this.set(this.agentKey(previousHolder)).remove(id);
    if (after.holder !== null && after.expiresAt !== null && after.kind !== null && after.name !== null) {
      const at = Date.parse(time); // only a held claim trims, so only its event's time is parsed
      const expiresAtMs = Date.parse(after.expiresAt);
      this.hold(this.set(this.agentKey(after.holder)), id, at, expiresAtMs, now);
      this.hold(this.set(this.keys.live), id, at, expiresAtMs, now);
    } else {
      this.set(this.keys.live).remove(id);
    }
  }

  /** ZREMRANGEBYSCORE -inf at, ZADD, PEXPIREAT NX, PEXPIREAT GT: what `claimCommands` sends each set of a held claim. */
  private hold(set: SimulatedSet, id: string, at: number, expiresAtMs: number, now: number): void {
    set.trim(at);
    set.add(id, expiresAtMs);
    set.expireNx(expiresAtMs, now);
    set.expireGt(expiresAtMs);
  }

  /**
   * Commands that write every key changed since the last call; each key once. Made as they are
   * consumed, so a caller can send them as it goes; consume them all: the changes are only marked
   * written at the end. States go out as MSETs and open tasks as ZADDs of CHUNK keys or members each
   * (a key's own commands stay in order; keys of a fresh generation are written in no particular
   * order, since nobody reads it before its commit): per-key SETs were most of a 1M-event rebuild's
   * commands, and each command is a client object that lives until Redis answers it.
   */
  *materialize(): Generator<RedisCommand, void, void> {
    const now = this.now();
    const again = this.materialized;
    let states: RedisCommand = ["MSET"];
    let openTasks: RedisCommand = ["ZADD", this.keys.openTasks];
    for (const id of this.dirtyClaims) {
      const state = this.states.get(id)!;
      if (state.id === null) continue;
      states.push(this.keys.state(id), serializeState(state));
      if (states.length > 2 * CHUNK) {
        yield states;
        states = ["MSET"];
      }
      if (again) yield ["DEL", this.keys.claim(id)];
      if (state.holder !== null && state.expiresAt !== null && state.kind !== null && state.name !== null) {
        const expiresAtMs = Date.parse(state.expiresAt);
        if (expiresAtMs > now) yield* liveClaimHash(this.keys, id, state, expiresAtMs);
      }
      if (state.kind === "task") {
        if (state.done || state.name === null || state.priority === null || state.openedAt === null) {
          if (again) {
            yield ["DEL", this.keys.task(id)];
            yield ["ZREM", this.keys.openTasks, id];
          }
        } else {
          yield ["HSET", this.keys.task(id), "claimId", id, "name", state.name, "title", state.title ?? "", "priority", state.priority, "openedAt", state.openedAt];
          openTasks.push(openTaskScore(state.priority, state.openedAt), id);
          if (openTasks.length > 2 * CHUNK) {
            yield openTasks;
            openTasks = ["ZADD", this.keys.openTasks];
          }
        }
      }
    }
    if (states.length > 1) yield states;
    if (openTasks.length > 2) yield openTasks;
    for (const key of this.dirtySets) {
      const set = this.sets.get(key)!;
      if (again) yield ["DEL", key];
      if (set.size === 0 || set.expiry === null || set.expiry <= now) continue;
      const members = [...set.members()];
      for (let i = 0; i < members.length; i += CHUNK) {
        const args: (string | number)[] = [];
        for (const [member, score] of members.slice(i, i + CHUNK)) args.push(score, member);
        yield ["ZADD", key, ...args];
      }
      yield ["PEXPIREAT", key, set.expiry];
    }
    this.dirtyClaims.clear();
    this.dirtySets.clear();
    this.materialized = true;
  }
}

/** Keys per MSET, members per ZADD when a set is written whole. */
const CHUNK = 1000;

/**
 * A Redis sorted set with its TTL, as the commands of `claimCommands` leave it. Trims by score use a
 * min-heap with lazy deletion (an entry whose score no longer matches its member is stale), so folding
 * stays O(log n) per event however many members the set holds.
 */
class SimulatedSet {
  private readonly scores = new Map<string, number>();
  private heap: [number, string][] = [];
  expiry: number | null = null;

  get size(): number {
    return this.scores.size;
  }

  members(): IterableIterator<[string, number]> {
    return this.scores.entries();
  }

  private clear(): void {
    this.scores.clear();
    this.heap = [];
    this.expiry = null;
  }

  /** ZREMRANGEBYSCORE key -inf at */
  trim(at: number): void {
    const heap = this.heap;
    while (heap.length > 0 && heap[0]![0] <= at) {
      const [score, member] = this.pop();
      if (this.scores.get(member) === score) this.scores.delete(member);
    }
    // An empty set is already clear (every way to empty one clears it) unless this trim emptied it.
    if (this.scores.size === 0 && (heap.length > 0 || this.expiry !== null)) this.clear();
  }

  /** ZADD key score member (a missing key is created without TTL) */
  add(member: string, score: number): void {
    if (this.scores.size === 0) this.expiry = null;
    this.scores.set(member, score);
    this.push([score, member]);
  }

  /** PEXPIREAT key at NX; an expiry already past deletes the key */
  expireNx(at: number, now: number): void {
    if (this.scores.size === 0 || this.expiry !== null) return;
    if (at <= now) this.clear();
    else this.expiry = at;
  }

  /** PEXPIREAT key at GT (only later than an existing TTL) */
  expireGt(at: number): void {
    if (this.scores.size > 0 && this.expiry !== null && at > this.expiry) this.expiry = at;
  }

  /** ZREM key member */
  remove(member: string): void {
    if (this.scores.delete(member) && this.scores.size === 0) this.clear();
  }

  private push(entry: [number, string]): void {
    const heap = this.heap;
    heap.push(entry);
    for (let at = heap.length - 1; at > 0; ) {
      const parent = (at - 1) >> 1;
      if (heap[parent]![0] <= heap[at]![0]) break;
      [heap[at], heap[parent]] = [heap[parent]!, heap[at]!];
      at = parent;
    }
  }

  private pop(): [number, string] {
    const heap = this.heap;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      for (let at = 0; ; ) {
        const l = 2 * at + 1;
        const r = l + 1;
        let least = at;
        if (l < heap.length && heap[l]![0] < heap[least]![0]) least = l;
        if (r < heap.length && heap[r]![0] < heap[least]![0]) least = r;
        if (least === at) break;
        [heap[at], heap[least]] = [heap[least]!, heap[at]!];
        at = least;
      }
    }
    return top;
  }
}
