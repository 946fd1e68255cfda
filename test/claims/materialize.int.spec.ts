import { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { claimIdOf } from "../../commands/claim.js";
import { claimKeys, type GenerationKeys } from "../../projections/claims/keys.js";
import { ClaimsMaterializer } from "../../projections/claims/materialize.js";
import { parseState, planBatch } from "../../projections/claims/model.js";
import type { ClaimEvent, LedgerEvent } from "../../schemas/events.js";
import { redisFixture, type RedisFixture, scanKeys } from "./support.js";
import seedrandom from "seedrandom";
import { rawEnvelope } from "../../testing/index.js";

/** Seeded, so the same seed gives the same sequence on every machine and a failure can be replayed. */
const rng = (seed: number): (() => number) => seedrandom(String(seed));

/**
 * Random claim histories over few agents and names, with event times from the past into the future and
 * leases of seconds to minutes: sets get trimmed, emptied, recreated and expire; leases lapse before
 * now or after it; tasks open and finish; holders take over from each other.
 */
function randomHistory(seed: number, count: number): { seq: number; event: LedgerEvent }[] {
  const random = rng(seed);
  const pick = <T>(items: readonly T[]) => items[Math.floor(random() * items.length)]!;
  const agents = ["agent-a", "agent-b", "agent-c", "agent-d"];
  const names: [kind: "task" | "lock", name: string][] = [["task", "t1"], ["task", "t2"], ["task", "t3"], ["lock", "src/a"], ["lock", "src/b"], ["task", "t4"]];
  let time = Date.now() - 30 * 60_000;
  const out: { seq: number; event: LedgerEvent }[] = [];
  for (let i = 0; i < count; i++) {
    time += Math.floor(random() * 60_000);
    const [kind, name] = pick(names);
    const leaseMs = pick([5_000, 60_000, 10 * 60_000, 40 * 60_000]);
    const roll = random();
    const iso = new Date(time).toISOString();
    const base = rawEnvelope({ type: "", data: null }, { id: `e${i}`, correlationId: `e${i}`, aggregateId: claimIdOf(kind, name), time: iso });
    let event: ClaimEvent;
    if (roll < 0.1 && kind === "task") event = { ...base, type: "claim.task_opened", data: { name, title: `Title ${name}`, priority: 1 + Math.floor(random() * 5) } } as ClaimEvent;
    else if (roll < 0.55) {
      const takeover = random() < 0.3 ? { holder: pick(agents), expiresAt: new Date(time - 1000).toISOString() } : null;
      event = { ...base, type: "claim.claimed", data: { kind, name, holder: pick(agents), leaseMs, expiresAt: new Date(time + leaseMs).toISOString(), takeoverOf: takeover, priority: kind === "task" && random() < 0.5 ? 3 : null } } as ClaimEvent;
    } else if (roll < 0.8) event = { ...base, type: "claim.renewed", data: { holder: pick(agents), leaseMs, expiresAt: new Date(time + leaseMs).toISOString() } } as ClaimEvent;
    else event = { ...base, type: "claim.released", data: { holder: pick(agents), done: kind === "task" && random() < 0.3 } } as ClaimEvent;
    out.push({ seq: i + 1, event });
  }
  return out;
}

async function dumpGeneration(redis: Redis, gen: GenerationKeys): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const name of await scanKeys(redis, gen.pattern)) {
    if (name === gen.checkpoint) continue;
    const type = await redis.type(name);
    const value =
      type === "string" ? await redis.get(name) : type === "hash" ? await redis.hgetall(name) : type === "zset" ? await redis.zrange(name, 0, -1, "WITHSCORES") : `<${type}>`;
    out[name.replace(gen.ns, "{G}")] = { type, value, expiresAt: Number(await redis.call("PEXPIRETIME", name)) };
  }
  return out;
}

describe("claims projection: a fresh generation materializes each key once", () => {
  let fx: RedisFixture;
  beforeEach(async () => {
    fx = await redisFixture();
  });
  afterEach(async () => {
    await fx.cleanup();
  });

  for (const seed of [1, 2, 3, 4, 5]) {
    it(`leaves the same keys as the per-event commands of a live target (seed ${seed})`, async () => {
      const events = randomHistory(seed, 300);
      const keys = claimKeys(fx.keyPrefix, "app1");
      const live = keys.generation("live");
      const fresh = keys.generation("fresh");

      // The live way: every event's commands, in order, a few events per transaction.
      const states = new Map<string, ReturnType<typeof parseState>>();
      for (let i = 0; i < events.length; i += 7) {
        const plan = planBatch(live, events.slice(i, i + 7), i, (id) => states.get(id) ?? parseState(null));
        for (const [id, state] of plan.states) states.set(id, state);
        const multi = fx.redis.multi();
        for (const [command, ...args] of plan.commands) multi.call(command, ...args);
        await multi.exec();
      }

      // The fresh way, folded in two halves with a materialize after each (a bounded rebuild commits early).
      const materializer = new ClaimsMaterializer(fresh);
      for (const half of [events.slice(0, 150), events.slice(150)]) {
        materializer.fold(half);
        const pipeline = fx.redis.pipeline();
        for (const [command, ...args] of materializer.materialize()) pipeline.call(command, ...args);
        await pipeline.exec();
      }

      const [a, b] = [await dumpGeneration(fx.redis, live), await dumpGeneration(fx.redis, fresh)];
      expect(Object.keys(a).length).toBeGreaterThan(5);
      expect(b).toEqual(a);
    });
  }
});
