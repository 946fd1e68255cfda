import type { Redis } from "ioredis";
import type { ClaimKind } from "../../schemas/events.js";
import { claimKeys, type GenerationKeys } from "./keys.js";

/** A claim whose lease is live: who holds what until when. */
export interface LiveClaim {
  claimId: string;
  kind: ClaimKind;
  name: string;
  holder: string;
  expiresAt: string;
  claimedAt: string | null;
  leaseMs: number;
  takeoverOf: { holder: string; expiresAt: string } | null;
}

/** A task that is not done, with its live holder if it has one. */
export interface OpenTask {
  claimId: string;
  name: string;
  title: string | null;
  priority: number;
  openedAt: string;
  holder: string | null;
  expiresAt: string | null;
}

/** What the command service asks for its `claims` and `tasks` queries. */
export interface ClaimsReader {
  liveClaims(app: string, options: { agent?: string | undefined; now: number }): Promise<LiveClaim[]>;
  openTasks(app: string, options: { now: number; limit?: number | undefined; unclaimed?: boolean | undefined }): Promise<OpenTask[]>;
}

const toLiveClaim = (hash: Record<string, string>, now: number): LiveClaim | null => {
  if (!hash.claimId || !hash.holder || !hash.expiresAt || !hash.name) return null;
  if (Date.parse(hash.expiresAt) <= now) return null; // lapsed, and Redis has not expired the key yet
  return {
    claimId: hash.claimId,
    kind: hash.kind as ClaimKind,
    name: hash.name,
    holder: hash.holder,
    expiresAt: hash.expiresAt,
    claimedAt: hash.claimedAt || null,
    leaseMs: Number(hash.leaseMs),
    takeoverOf: hash.takeoverOf ? (JSON.parse(hash.takeoverOf) as LiveClaim["takeoverOf"]) : null,
  };
};

/**
 * Reads from the generation readers are pointed at; if a promote flips the pointer mid-read (the old
 * generation's keys are then being deleted), reads again from the new one.
 */
async function inCurrentGeneration<T>(redis: Redis, keyPrefix: string, app: string, empty: T, read: (keys: GenerationKeys) => Promise<T>): Promise<T> {
  const keys = claimKeys(keyPrefix, app);
  for (let attempt = 0; ; attempt++) {
    const generation = await redis.get(keys.pointer);
    if (generation === null) return empty;
    const result = await read(keys.generation(generation));
    if (attempt >= 4 || (await redis.get(keys.pointer)) === generation) return result;
  }
}

async function hashes(redis: Redis, keys: string[]): Promise<Record<string, string>[]> {
  if (keys.length === 0) return [];
  const pipeline = redis.pipeline();
  for (const key of keys) pipeline.hgetall(key);
  const results = (await pipeline.exec()) ?? [];
  return results.map(([err, value]) => {
    if (err) throw err;
    return value as Record<string, string>;
  });
}

/** Live claims of the app (or of one agent), soonest expiry first. `now` is epoch ms. */
export function liveClaims(redis: Redis, keyPrefix: string, app: string, options: { agent?: string | undefined; now: number }): Promise<LiveClaim[]> {
  return inCurrentGeneration(redis, keyPrefix, app, [], async (keys) => {
    const set = options.agent === undefined ? keys.live : keys.agent(options.agent);
    const ids = await redis.zrangebyscore(set, `(${options.now}`, "+inf");
    const found = await hashes(redis, ids.map((id) => keys.claim(id)));
    return found
      .map((hash) => toLiveClaim(hash, options.now))
      .filter((c): c is LiveClaim => c !== null && (options.agent === undefined || c.holder === options.agent));
  });
}

/** Tasks not done, most urgent first (priority 1 first, then oldest), with their live holder if any. */
export function openTasks(
  redis: Redis,
  keyPrefix: string,
  app: string,
  options: { now: number; limit?: number | undefined; unclaimed?: boolean | undefined },
): Promise<OpenTask[]> {
  const limit = options.limit ?? 100;
  return inCurrentGeneration(redis, keyPrefix, app, [], async (keys) => {
    const out: OpenTask[] = [];
    const page = Math.max(limit, 100);
    for (let start = 0; out.length < limit; start += page) {
      const ids = await redis.zrange(keys.openTasks, start, start + page - 1);
      if (ids.length === 0) break;
      const tasks = await hashes(redis, ids.map((id) => keys.task(id)));
      const claims = await hashes(redis, ids.map((id) => keys.claim(id)));
      tasks.forEach((task, i) => {
        if (!task.claimId || !task.name || out.length >= limit) return;
        const claim = toLiveClaim(claims[i] ?? {}, options.now);
        if (options.unclaimed && claim !== null) return;
        out.push({
          claimId: task.claimId,
          name: task.name,
          title: task.title || null,
          priority: Number(task.priority),
          openedAt: task.openedAt ?? "",
          holder: claim?.holder ?? null,
          expiresAt: claim?.expiresAt ?? null,
        });
      });
      if (ids.length < page) break;
    }
    return out;
  });
}

/** A ClaimsReader over one Redis client, for CommandServiceOptions.claims. */
export const claimsReader = (options: { redis: Redis; keyPrefix: string }): ClaimsReader => ({
  liveClaims: (app, query) => liveClaims(options.redis, options.keyPrefix, app, query),
  openTasks: (app, query) => openTasks(options.redis, options.keyPrefix, app, query),
});
