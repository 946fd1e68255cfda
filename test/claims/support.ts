import { Redis } from "ioredis";
import { claimKeys, escapeGlob, unlinkMatching } from "../../projections/claims/index.js";
import { REDIS_URL, uniquePrefix } from "../support/env.js";

/** A clock the test moves by hand: leases are decided against it, so expiry needs no sleeping. */
export function manualClock(startMs = Date.now()) {
  let now = startMs;
  return {
    now: () => new Date(now),
    ms: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
}

export interface RedisFixture {
  redis: Redis;
  keyPrefix: string;
  cleanup(): Promise<void>;
}

/** A Redis connection and a key prefix no other test uses; cleanup deletes every key under it (SCAN + UNLINK). */
export async function redisFixture(): Promise<RedisFixture> {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 3 });
  const keyPrefix = `${uniquePrefix("claims")}`;
  return {
    redis,
    keyPrefix,
    async cleanup() {
      await unlinkMatching(redis, `${escapeGlob(keyPrefix)}:*`);
      redis.disconnect();
    },
  };
}

export interface DumpedKey {
  type: string;
  value: unknown;
  /** Absolute expiry (PEXPIRETIME), rounded to the second; -1 when the key has none. */
  expiresAt: number;
}

/**
 * Every key of the app's current generation with its value and expiry, with the generation id replaced
 * by `{G}` so two generations (or a rebuild) compare equal when their contents do.
 */
/** Every key matching a pattern, sorted (SCAN, never KEYS). */
export async function scanKeys(redis: Redis, pattern: string): Promise<string[]> {
  const names: string[] = [];
  let cursor = "0";
  do {
    const [next, batch] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 500);
    cursor = next;
    names.push(...batch);
  } while (cursor !== "0");
  return names.sort();
}

export async function dumpApp(redis: Redis, keyPrefix: string, app: string): Promise<Record<string, DumpedKey>> {
  const keys = claimKeys(keyPrefix, app);
  const generation = await redis.get(keys.pointer);
  if (generation === null) return {};
  const gen = keys.generation(generation);
  const names = await scanKeys(redis, gen.pattern);
  const out: Record<string, DumpedKey> = {};
  for (const name of names.sort()) {
    const type = await redis.type(name);
    let value: unknown;
    if (type === "string") value = await redis.get(name);
    else if (type === "hash") value = Object.fromEntries(Object.entries(await redis.hgetall(name)).sort(([a], [b]) => a.localeCompare(b)));
    else if (type === "zset") value = await redis.zrange(name, 0, -1, "WITHSCORES");
    else value = `<${type}>`;
    const pexpiretime = Number(await redis.call("PEXPIRETIME", name));
    out[name.replace(`{${generation}}`, "{G}")] = { type, value, expiresAt: pexpiretime < 0 ? pexpiretime : Math.round(pexpiretime / 1000) };
  }
  return out;
}
