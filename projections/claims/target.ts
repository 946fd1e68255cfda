import { randomBytes } from "node:crypto";
import { Redis, type ChainableCommander } from "ioredis";
import type { ClaimState } from "../../commands/claim.js";
import { ConflictReason, conflict, invalid, isMemledgerError, unavailable } from "../../schemas/errors.js";
import type { Checkpoint, ProjectedEvent, ProjectionDefinition, ProjectionScope, ProjectionTarget } from "../projection.js";
import { claimKeys, type ClaimKeys, type GenerationKeys } from "./keys.js";
import { portableDefinition } from "../portable.js";
import { monitorRedis } from "./redis-health.js";
import { ClaimsMaterializer } from "./materialize.js";
import { isClaimEvent, parseState, planBatch, type RedisCommand } from "./model.js";

export interface ClaimsProjectionOptions {
  /** An ioredis client (the projection opens its own connection with `duplicate()`) or a Redis URL. */
  redis: Redis | string;
  /** Every key lives under `<keyPrefix>:<app>:`. Readers must be given the same prefix. */
  keyPrefix: string;
}

const newGeneration = (): string => `${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`;

const connectionOf = (redis: Redis | string): Redis =>
  monitorRedis(typeof redis === "string" ? new Redis(redis, { maxRetriesPerRequest: 3 }) : redis.duplicate());

/** Deletes every key matching `pattern` with SCAN + UNLINK (never KEYS: it blocks the server). */
export async function unlinkMatching(redis: Redis, pattern: string): Promise<number> {
  let cursor = "0";
  let removed = 0;
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 500);
    cursor = next;
    if (keys.length > 0) removed += await redis.unlink(...keys);
  } while (cursor !== "0");
  return removed;
}

/**
 * One generation of the claims read model in Redis. A live (visible) target folds events into pending
 * commands (reading each touched claim's stored state once); `commit` writes them and the checkpoint in
 * one MULTI/EXEC, watching the checkpoint (and the generation pointer), so a second writer or a promote
 * that replaced this generation makes the commit fail instead of writing into the void.
 *
 * A fresh (invisible) target folds in memory instead (materialize.ts) and, at commit, writes each key's
 * final value once, in pipelines ahead of the checkpoint's MULTI: it is invisible until promoted and never
 * resumed (a failed rebuild starts another generation), so readers can never see a half-written commit,
 * and a rebuild costs one write per claim and per set rather than about fifteen per event.
 */
/** Arguments per pipeline when a fresh target writes what it materialized (an MSET of 1,000 keys has 2,000). */
const PIPELINE_ARGS = 40_000;
/** Pipelines sent and not yet answered: enough to keep Redis busy, few enough to bound the client's buffers. */
const PIPELINES_IN_FLIGHT = 4;

/**
 * Raises the app's fence to a leader's token unless a higher one is there: one atomic step, so of two
 * leaders fencing at once the newer token always ends up recorded. Returns the token recorded now.
 */
const RAISE_FENCE = `
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local token = tonumber(ARGV[1])
if current > token then return current end
redis.call('SET', KEYS[1], ARGV[1])
return token`;

/** The key holding the highest leader token seen for an app (across generations: a rebuild keeps it). */
export const fenceKey = (keys: ClaimKeys): string => `${keys.root}:fence`;

export class RedisClaimsTarget implements ProjectionTarget {
  private pending: RedisCommand[] = [];
  private readonly states = new Map<string, ClaimState>();
  private readonly materializer: ClaimsMaterializer | undefined;
  private appliedSeq: number;
  private closed = false;
  /** Set by `fence`: commits are refused once the app's fence holds a higher token (a newer leader). */
  private fenceToken: number | undefined;

  constructor(
    private readonly redis: Redis,
    readonly keys: ClaimKeys,
    readonly generationKeys: GenerationKeys,
    private current: Checkpoint,
    /** Live targets are what readers see; a fresh one becomes visible when promoted. */
    public visible: boolean,
  ) {
    this.appliedSeq = current.seq;
    if (!visible) this.materializer = new ClaimsMaterializer(generationKeys);
  }

  get checkpoint(): Checkpoint {
    return this.current;
  }

  get generation(): string {
    return this.generationKeys.generation;
  }

  /** True when applied events wait for `commit`. */
  get dirty(): boolean {
    return this.appliedSeq !== this.current.seq;
  }

  async apply(events: readonly ProjectedEvent[]): Promise<void> {
    this.requireOpen();
    if (this.materializer) {
      const unseen = events.filter((e) => e.seq > this.appliedSeq);
      this.materializer.fold(unseen);
      if (unseen.length > 0) this.appliedSeq = unseen[unseen.length - 1]!.seq;
      return;
    }
    const ids = [
      ...new Set(
        events.filter((e) => e.seq > this.appliedSeq && isClaimEvent(e.event) && !this.states.has(e.event.aggregateId)).map((e) => e.event.aggregateId),
      ),
    ];
    const loaded = new Map<string, ClaimState>();
    if (ids.length > 0) {
      const stored = await this.redis.mget(...ids.map((id) => this.generationKeys.state(id)));
      ids.forEach((id, i) => loaded.set(id, parseState(stored[i] ?? null)));
    }
    const plan = planBatch(this.generationKeys, events, this.appliedSeq, (id) => this.states.get(id) ?? loaded.get(id) ?? parseState(null));
    for (const [id, state] of plan.states) this.states.set(id, state);
    for (const command of plan.commands) this.pending.push(command);
    this.appliedSeq = plan.lastSeq;
  }

  /**
   * A fresh target's materialized keys, in pipelines (their order within a key is kept), at most
   * PIPELINES_IN_FLIGHT at a time. The commands are generated as they are sent: built all at once and
   * handed to the client together, 1M events' keys were several hundred MB of command arrays and
   * client buffers at the moment of commit, the rebuild's peak.
   */
  private async writeMaterialized(): Promise<void> {
    const inFlight = new Set<Promise<void>>();
    let failure: Error | undefined;
    const send = (pipeline: ChainableCommander) => {
      const done = pipeline.exec().then(
        (result) => {
          const failed = result?.find(([err]) => err !== null);
          if (failed) failure ??= unavailable(`claims projection: Redis refused a write: ${(failed[0] as Error).message}`);
        },
        (err: unknown) => {
          failure ??= err instanceof Error ? err : new Error(String(err));
        },
      );
      const tracked = done.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
    };
    let pipeline = this.redis.pipeline();
    let queued = 0;
    for (const [command, ...args] of this.materializer!.materialize()) {
      pipeline.call(command, ...args);
      queued += args.length;
      if (queued < PIPELINE_ARGS) continue;
      send(pipeline);
      pipeline = this.redis.pipeline();
      queued = 0;
      while (inFlight.size >= PIPELINES_IN_FLIGHT) await Promise.race(inFlight);
      if (failure) break;
    }
    if (queued > 0 && !failure) send(pipeline);
    // Every pipeline settles before a failure is thrown: nothing of this commit is still being written
    // when the caller resets the target.
    await Promise.all(inFlight);
    if (failure) throw failure;
  }

  /**
   * Writes as the leader holding `token` (services/leader-lease.ts): records it as the app's fence, or
   * throws `conflict` when a newer leader's token is recorded already. From then on each commit checks,
   * inside its WATCH/MULTI, that the fence still holds this token: once a newer leader raised it, the
   * commit is refused and nothing is written, however long this process was paused.
   */
  async fence(token: number): Promise<void> {
    this.requireOpen();
    const recorded = Number(await this.redis.eval(RAISE_FENCE, 1, fenceKey(this.keys), String(token)));
    if (recorded !== token) throw this.fenced(token, recorded);
    this.fenceToken = token;
  }

  private fenced(token: number, recorded: number) {
    return conflict(`claims projection: fenced: leader token ${token} was superseded by token ${recorded} (another instance took the lease over)`, {
      reason: ConflictReason.fenced,
      token,
      fence: recorded,
    });
  }

  async commit(seq: number): Promise<void> {
    this.requireOpen();
    if (seq <= this.current.seq && this.pending.length === 0 && this.appliedSeq === this.current.seq) return;
    if (seq < this.appliedSeq) throw invalid(`claims projection: commit(${seq}) is behind applied sequence ${this.appliedSeq}`);
    if (this.materializer) {
      try {
        await this.writeMaterialized();
      } catch (err) {
        this.reset();
        throw err;
      }
    }
    const { checkpoint } = this.generationKeys;
    const watched = this.visible ? [checkpoint, this.keys.pointer] : [checkpoint];
    // A fenced target also watches the fence: a newer leader raising it before EXEC aborts this commit.
    if (this.fenceToken !== undefined) watched.push(fenceKey(this.keys));
    await this.redis.watch(...watched);
    try {
      const [stored, pointer, fence] = await Promise.all([
        this.redis.get(checkpoint),
        this.redis.get(this.keys.pointer),
        this.fenceToken !== undefined ? this.redis.get(fenceKey(this.keys)) : null,
      ]);
      if (this.fenceToken !== undefined && Number(fence ?? 0) !== this.fenceToken) throw this.fenced(this.fenceToken, Number(fence ?? 0));
      if (Number(stored ?? 0) !== this.current.seq) {
        throw conflict(`claims projection: checkpoint of generation ${this.generation} is ${stored ?? 0}, not ${this.current.seq}: another writer`, {
          reason: ConflictReason.checkpoint_moved,
        });
      }
      if (this.visible && pointer !== this.generation) {
        throw conflict(`claims projection: generation ${this.generation} was replaced by ${pointer}: reopen`, { reason: ConflictReason.generation_replaced });
      }
      const transaction = this.redis.multi();
      for (const [command, ...args] of this.pending) transaction.call(command, ...args);
      transaction.set(checkpoint, String(seq));
      const result = await transaction.exec();
      if (result === null) throw conflict("claims projection: the checkpoint or generation moved during commit", { reason: ConflictReason.checkpoint_moved });
      const failed = result.find(([err]) => err !== null);
      if (failed) throw unavailable(`claims projection: Redis refused a write: ${(failed[0] as Error).message}`);
    } catch (err) {
      await this.redis.unwatch().catch(() => undefined);
      // What was applied but not written is dropped: the caller re-feeds from the durable checkpoint.
      this.reset();
      throw err;
    }
    this.current = { seq, generation: this.generation };
    this.appliedSeq = seq;
    this.pending = [];
    this.states.clear();
  }

  async currentGeneration(): Promise<string> {
    return (await this.redis.get(this.keys.pointer)) ?? "";
  }

  /** Forgets everything applied since the last commit. */
  reset(): void {
    this.pending = [];
    this.states.clear();
    this.appliedSeq = this.current.seq;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.redis.disconnect();
  }

  private requireOpen(): void {
    if (this.closed) throw invalid("claims projection: target is closed");
  }
}

/** The `claims` projection definition, with targets typed as what they are. */
export interface ClaimsProjection extends ProjectionDefinition {
  openLive(scope: ProjectionScope): Promise<RedisClaimsTarget>;
  openFresh(scope: ProjectionScope): Promise<RedisClaimsTarget>;
}

/**
 * The `claims` projection: live claims, what each agent holds, and open tasks by priority, in Redis.
 * Each target opens its own connection (WATCH/MULTI are per connection).
 */
export function claimsProjection(options: ClaimsProjectionOptions): ClaimsProjection {
  const open = async (scope: ProjectionScope, live: boolean): Promise<RedisClaimsTarget> => {
    const redis = connectionOf(options.redis);
    try {
      const keys = claimKeys(options.keyPrefix, scope.app);
      let generation: string;
      if (live) {
        await redis.set(keys.pointer, newGeneration(), "NX");
        generation = (await redis.get(keys.pointer)) ?? "";
      } else {
        generation = newGeneration();
      }
      const generationKeys = keys.generation(generation);
      const seq = live ? Number((await redis.get(generationKeys.checkpoint)) ?? 0) : 0;
      return new RedisClaimsTarget(redis, keys, generationKeys, { seq, generation }, live);
    } catch (err) {
      redis.disconnect();
      throw isMemledgerError(err) ? err : unavailable(`claims projection: Redis: ${(err as Error).message}`);
    }
  };

  return {
    name: "claims",
    consumes: ["claim"],
    // A URL can be passed to a worker thread; a client object cannot.
    portable: typeof options.redis === "string" ? portableDefinition(import.meta.url, "claimsProjection", options) : undefined,
    // Live, every commit is a Redis round trip of its own: 100k events took 15 s to catch up that way.
    catchUpByRebuild: true,
    openLive: (scope) => open(scope, true),
    openFresh: (scope) => open(scope, false),
    async promote(scope, fresh) {
      if (!(fresh instanceof RedisClaimsTarget)) throw invalid("claims projection: can only promote a target it opened");
      if (fresh.dirty) throw invalid("claims projection: commit the fresh target before promoting it");
      const keys = claimKeys(options.keyPrefix, scope.app);
      if (fresh.keys.root !== keys.root) throw invalid(`claims projection: the fresh target belongs to ${fresh.keys.root}, not ${keys.root}`);
      const redis = connectionOf(options.redis);
      try {
        // One atomic flip: readers see the old generation or the new one, never a mix.
        const old = await redis.getset(keys.pointer, fresh.generation);
        fresh.visible = true;
        if (old !== null && old !== fresh.generation) await unlinkMatching(redis, keys.generation(old).pattern);
      } finally {
        redis.disconnect();
      }
    },
  };
}
