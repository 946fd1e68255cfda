import type { Redis } from "ioredis";

/**
 * One account of whether Redis answers, shared by every ioredis client of the process. An ioredis client
 * without an `error` listener prints "[ioredis] Unhandled error event" and a stack trace on every failed
 * reconnect (268 of them in 25 s with Redis down); with one, it reconnects quietly. Each client is
 * monitored here, and listeners hear only transitions per URL, so `memledger up` can say once that Redis
 * is down and once that it is back, however many clients noticed.
 */

export type RedisHealth = { url: string; state: "down"; error: Error } | { url: string; state: "up" };
type Listener = (health: RedisHealth) => void;

const states = new Map<string, "down" | "up">();
const listeners = new Set<Listener>();

function transition(health: RedisHealth): void {
  const previous = states.get(health.url);
  if (previous === health.state) return;
  states.set(health.url, health.state);
  // The first "up" is no news; "up" after "down" is.
  if (health.state === "up" && previous === undefined) return;
  for (const listener of listeners) listener(health);
}

/** Where a client connects, as one spelling for every client of the same server. */
export const redisAddress = (redis: Redis): string => `redis://${redis.options.host ?? "127.0.0.1"}:${redis.options.port ?? 6379}`;

/** Attaches the error and ready listeners every client needs; returns the client. */
export function monitorRedis<R extends Redis>(redis: R): R {
  const url = redisAddress(redis);
  redis.on("error", (error: Error) => transition({ url, state: "down", error }));
  redis.on("ready", () => transition({ url, state: "up" }));
  return redis;
}

/** Hears every down/up transition from now on; returns the unsubscribe function. */
export function onRedisHealth(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** Whether Redis at this URL is known to be down right now. */
export const redisKnownDown = (url: string): boolean => states.get(url) === "down";
