import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { claimIdOf } from "../../commands/claim.js";
import { claimsProjection, type RedisClaimsTarget } from "../../projections/claims/index.js";
import type { ProjectedEvent, ProjectionScope } from "../../projections/projection.js";
import { ErrorCode } from "../../schemas/errors.js";
import type { ClaimEvent } from "../../schemas/events.js";
import { rawEnvelope } from "../../testing/index.js";
import { rejectionOf } from "../ledger/support.js";
import { redisFixture, scanKeys, type RedisFixture } from "./support.js";

/**
 * A fresh (rebuild) target writes what it materialized at commit in pipelines sent as the commands are
 * generated, a few at a time (projections/claims/target.ts writeMaterialized). These histories are
 * larger than the pipelines in flight at once (4 of 40,000 arguments), so the streaming path and its
 * back-pressure are what is exercised, not one pipeline.
 */
const CLAIMS = 20_000;
const HOUR = 3_600_000;

/**
 * One task claim per name, all held by a few agents with leases an hour long: about 21 arguments each, so 20,000
 * claims are 10 pipelines or more.
 */
function claimHistory(count: number): ProjectedEvent[] {
  const now = Date.now();
  return Array.from({ length: count }, (_, i) => {
    const name = `task-${i}`;
    const time = new Date(now - 1000 + i / 100).toISOString();
    const base = rawEnvelope({ type: "", data: null }, { id: `e${i}`, correlationId: `e${i}`, aggregateId: claimIdOf("task", name), time });
    const event = {
      ...base,
      type: "claim.claimed",
      data: { kind: "task", name, holder: `agent-${i % 5}`, leaseMs: HOUR, expiresAt: new Date(now + HOUR).toISOString(), takeoverOf: null, priority: null },
    } as ClaimEvent;
    return { seq: i + 1, subject: "s", event };
  });
}

describe("claims projection: a fresh target's commit streams its keys to Redis", () => {
  let fx: RedisFixture;
  const targets: RedisClaimsTarget[] = [];
  const scope: ProjectionScope = { prefix: "unused", app: "app1", stream: "unused" };

  beforeEach(async () => {
    fx = await redisFixture();
  });
  afterEach(async () => {
    await Promise.allSettled(targets.splice(0).map((t) => t.close()));
    await fx.cleanup();
  });

  const openFresh = async () => {
    const target = await claimsProjection({ redis: fx.redis, keyPrefix: fx.keyPrefix }).openFresh(scope);
    targets.push(target);
    return target;
  };

  it("writes every key of a history larger than the pipelines in flight, then the checkpoint", async () => {
    const events = claimHistory(CLAIMS);
    const target = await openFresh();
    await target.apply(events);
    await target.commit(CLAIMS);

    const gen = target.generationKeys;
    expect(await fx.redis.get(gen.checkpoint)).toBe(String(CLAIMS));
    const states = await scanKeys(fx.redis, `${gen.ns}:state:*`);
    expect(states).toHaveLength(CLAIMS);
    expect(await fx.redis.zcard(gen.live)).toBe(CLAIMS);
    const perAgent = await Promise.all([0, 1, 2, 3, 4].map((a) => fx.redis.zcard(gen.agent(`agent-${a}`))));
    expect(perAgent).toEqual([0, 1, 2, 3, 4].map(() => CLAIMS / 5));
    const last = events.at(-1)!.event as ClaimEvent & { data: { name: string } };
    expect(await fx.redis.hget(gen.claim(last.aggregateId), "name")).toBe(last.data.name);
    expect(target.dirty).toBe(false);
  });

  it("a write Redis refuses fails the commit as unavailable, after every pipeline settled, and writes no checkpoint", async () => {
    const events = claimHistory(CLAIMS);
    const target = await openFresh();
    await target.apply(events);
    // A key of the wrong type where the last claim's lease hash goes: HSET on it fails (WRONGTYPE),
    // in the last pipeline, after the others were sent.
    const gen = target.generationKeys;
    const victim = gen.claim(events.at(-1)!.event.aggregateId);
    await fx.redis.set(victim, "not a hash");

    const error = await rejectionOf(target.commit(CLAIMS));
    expect(error.code).toBe(ErrorCode.unavailable);
    expect(error.message).toMatch(/WRONGTYPE/);
    // No checkpoint: the generation is not committed, and the pointer readers follow was never set.
    expect(await fx.redis.get(gen.checkpoint)).toBeNull();
    expect(await fx.redis.get(target.keys.pointer)).toBeNull();
    expect(await fx.redis.get(victim)).toBe("not a hash");
    // Nothing was still being written when the commit rejected: the key count is stable.
    const written = (await scanKeys(fx.redis, `${gen.ns}:*`)).length;
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect((await scanKeys(fx.redis, `${gen.ns}:*`)).length).toBe(written);
  });
});
