import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { claimIdOf } from "../../commands/claim.js";
import { claimKeys, claimsProjection, claimsReader, liveClaims, openTasks, unlinkMatching, type RedisClaimsTarget } from "../../projections/claims/index.js";
import type { ProjectionScope } from "../../projections/projection.js";
import type { StoredEvent } from "../../services/event-store.js";
import { rejectionOf } from "../ledger/support.js";
import { startLedger, type Ledger } from "../support/env.js";
import { dumpApp, manualClock, redisFixture, type RedisFixture } from "./support.js";

const MIN = 60_000;

describe("claims projection in Redis (real NATS + Redis)", () => {
  let ledger: Ledger;
  let fx: RedisFixture;
  let clock: ReturnType<typeof manualClock>;
  let scope: ProjectionScope;
  const targets: RedisClaimsTarget[] = [];

  beforeEach(async () => {
    // Leases are decided against this clock, and Redis expires keys by its own: start at the real time
    // (whole seconds) and keep leases long, so every lease the scenario leaves live is live in Redis too.
    clock = manualClock(Math.floor(Date.now() / 1000) * 1000);
    fx = await redisFixture();
    ledger = await startLedger({ now: clock.now, claims: claimsReader({ redis: fx.redis, keyPrefix: fx.keyPrefix }) });
    scope = { prefix: ledger.prefix, app: ledger.app, stream: ledger.service.names.appStream(ledger.app) };
  });
  afterEach(async () => {
    await Promise.allSettled(targets.splice(0).map((t) => t.close()));
    await ledger.cleanup();
    await fx.cleanup();
  });

  const projection = () => claimsProjection({ redis: fx.redis, keyPrefix: fx.keyPrefix });
  const open = async (fresh = false) => {
    const target = fresh ? await projection().openFresh(scope) : await projection().openLive(scope);
    targets.push(target);
    return target;
  };
  const storedEvents = (): Promise<StoredEvent[]> => ledger.service.store.readLog(scope.stream, { limit: 10_000 });

  /** Applies events in batches of `size`, committing after each, as a runner would. */
  async function feed(target: RedisClaimsTarget, events: readonly StoredEvent[], size = events.length): Promise<void> {
    for (let i = 0; i < events.length; i += size) {
      const batch = events.slice(i, i + size);
      await target.apply(batch);
      await target.commit(batch.at(-1)!.seq);
    }
  }

  /** A little history: opened, claimed, renewed, taken over, done, released. Returns what it expects to be live. */
  async function scenario() {
    const a = ledger.client("agent-a");
    const b = ledger.client("agent-b");
    const c = ledger.client("agent-c");
    await a.openTask("t-urgent", { title: "Urgent", priority: 1 });
    await b.openTask("t-later", { title: "Later", priority: 4 });
    await b.openTask("t-idle", { priority: 5 });
    await a.claim("t-urgent", { ttlMs: 30 * MIN });
    const lockX = await a.claim("src/x.ts", { kind: "lock", ttlMs: 60 * MIN });
    await b.claim("t-later", { ttlMs: 10 * MIN });
    clock.advance(11 * MIN);
    const later = await c.claim("t-later", { ttlMs: 10 * MIN }); // takes over b's lapsed lease
    const urgent = await a.renew("t-urgent", { ttlMs: 60 * MIN });
    await a.claim("t-done", { priority: 2 });
    await a.release("t-done", { done: true });
    await a.claim("src/y.ts", { kind: "lock" });
    await a.release("src/y.ts", { kind: "lock" });
    return { lockX, later, urgent };
  }

  it("projects who holds what until when, what each agent holds and open tasks, with the checkpoint", async () => {
    const { lockX, later, urgent } = await scenario();
    const events = await storedEvents();
    const target = await open();
    await feed(target, events, 2); // small batches: states are read back from Redis between commits

    const keys = claimKeys(fx.keyPrefix, ledger.app).generation(target.generation);
    const r = fx.redis;
    expect(await r.get(keys.checkpoint)).toBe(String(events.at(-1)!.seq));
    expect(target.checkpoint.seq).toBe(events.at(-1)!.seq);

    const laterId = claimIdOf("task", "t-later");
    expect(await r.hgetall(keys.claim(laterId))).toMatchObject({
      claimId: laterId,
      kind: "task",
      name: "t-later",
      holder: "agent-c",
      expiresAt: later.expiresAt,
      takeoverOf: JSON.stringify({ holder: "agent-b", expiresAt: later.takeoverOf!.expiresAt }),
    });
    expect(await r.exists(keys.claim(claimIdOf("task", "t-done")), keys.claim(claimIdOf("lock", "src/y.ts")))).toBe(0);

    // Agents' sets: b lost t-later to c (and its set vanished with its last member).
    const byExpiry = [lockX, urgent].sort((x, y) => Date.parse(x.expiresAt!) - Date.parse(y.expiresAt!));
    expect(await r.zrange(keys.agent("agent-a"), 0, -1, "WITHSCORES")).toEqual(byExpiry.flatMap((o) => [o.claimId, String(Date.parse(o.expiresAt!))]));
    expect(Number(await r.zscore(keys.agent("agent-a"), urgent.claimId))).toBe(Date.parse(urgent.expiresAt!));
    expect(await r.exists(keys.agent("agent-b"))).toBe(0);
    expect(await r.zrange(keys.agent("agent-c"), 0, -1)).toEqual([laterId]);
    expect(await r.zcard(keys.live)).toBe(3);

    // Open tasks, most urgent first; the done one is gone.
    expect(await r.zrange(keys.openTasks, 0, -1)).toEqual(["task-t-urgent", "task-t-later", "task-t-idle"]);
    expect(await r.exists(keys.task(claimIdOf("task", "t-done")))).toBe(0);

    // Readers.
    const now = clock.ms();
    expect((await liveClaims(r, fx.keyPrefix, ledger.app, { agent: "agent-a", now })).map((c) => c.name).sort()).toEqual(["src/x.ts", "t-urgent"]);
    expect((await liveClaims(r, fx.keyPrefix, ledger.app, { now })).map((c) => c.holder).sort()).toEqual(["agent-a", "agent-a", "agent-c"]);
    // Past t-later's expiry the reader drops it, whatever Redis still holds.
    expect((await liveClaims(r, fx.keyPrefix, ledger.app, { now: Date.parse(later.expiresAt!) })).map((c) => c.name).sort()).toEqual(["src/x.ts", "t-urgent"]);
    expect(await openTasks(r, fx.keyPrefix, ledger.app, { now })).toMatchObject([
      { name: "t-urgent", title: "Urgent", priority: 1, holder: "agent-a", expiresAt: urgent.expiresAt },
      { name: "t-later", title: "Later", priority: 4, holder: "agent-c" },
      { name: "t-idle", title: null, priority: 5, holder: null, expiresAt: null },
    ]);
    expect((await openTasks(r, fx.keyPrefix, ledger.app, { now, unclaimed: true })).map((t) => t.name)).toEqual(["t-idle"]);

    // The same through the command service's queries.
    const client = ledger.client("agent-z");
    expect((await client.claims({ agent: "agent-c" })).map((c) => c.name)).toEqual(["t-later"]);
    expect((await client.tasks({ limit: 2 })).map((t) => t.name)).toEqual(["t-urgent", "t-later"]);
  });

  it("makes keys expire with the lease (PEXPIRETIME), moving the expiry on renewal", async () => {
    const a = ledger.client("agent-a");
    const claimed = await a.claim("src/z.ts", { kind: "lock", ttlMs: 20 * MIN });
    const target = await open();
    await feed(target, await storedEvents());
    const keys = claimKeys(fx.keyPrefix, ledger.app).generation(target.generation);
    const pexpiretime = async (key: string) => Number(await fx.redis.call("PEXPIRETIME", key));

    expect(await pexpiretime(keys.claim(claimed.claimId))).toBe(Date.parse(claimed.expiresAt!));
    expect(await pexpiretime(keys.agent("agent-a"))).toBe(Date.parse(claimed.expiresAt!));
    expect(await pexpiretime(keys.live)).toBe(Date.parse(claimed.expiresAt!));
    const pttl = await fx.redis.pttl(keys.claim(claimed.claimId));
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(20 * MIN);
    expect(await pexpiretime(keys.checkpoint)).toBe(-1);
    expect(await pexpiretime(keys.state(claimed.claimId))).toBe(-1);

    clock.advance(5 * MIN);
    const renewed = await a.renew("src/z.ts", { kind: "lock", ttlMs: 60 * MIN });
    await feed(target, (await storedEvents()).filter((e) => e.seq > target.checkpoint.seq));
    expect(await pexpiretime(keys.claim(claimed.claimId))).toBe(Date.parse(renewed.expiresAt!));
    expect(await pexpiretime(keys.agent("agent-a"))).toBe(Date.parse(renewed.expiresAt!));

    // A lease that lapsed before it reached Redis leaves no claim key behind.
    const lapsed = ledger.client("agent-b");
    clock.advance(-2 * 24 * 60 * MIN);
    await lapsed.claim("src/old.ts", { kind: "lock", ttlMs: MIN });
    await feed(target, (await storedEvents()).filter((e) => e.seq > target.checkpoint.seq));
    expect(await fx.redis.exists(keys.claim(claimIdOf("lock", "src/old.ts")))).toBe(0);
    expect(await fx.redis.exists(keys.agent("agent-b"))).toBe(0);
  });

  it("applies idempotently: events at or below the checkpoint change nothing", async () => {
    await scenario();
    const events = await storedEvents();
    const target = await open();
    await feed(target, events);
    const before = await dumpApp(fx.redis, fx.keyPrefix, ledger.app);
    await feed(target, events);
    await feed(target, events.slice(3), 2);
    expect(await dumpApp(fx.redis, fx.keyPrefix, ledger.app)).toEqual(before);
    expect(target.checkpoint.seq).toBe(events.at(-1)!.seq);
  });

  it("restores the same contents when every key is deleted and the log is re-applied from sequence 0", async () => {
    await scenario();
    const events = await storedEvents();
    const first = await open();
    await feed(first, events, 3);
    const before = await dumpApp(fx.redis, fx.keyPrefix, ledger.app);
    expect(Object.keys(before).length).toBeGreaterThan(10);

    await first.close();
    await unlinkMatching(fx.redis, claimKeys(fx.keyPrefix, ledger.app).pattern);
    expect(await dumpApp(fx.redis, fx.keyPrefix, ledger.app)).toEqual({});

    const again = await open();
    expect(again.checkpoint.seq).toBe(0);
    expect(again.generation).not.toBe(first.generation);
    await feed(again, events);
    expect(await dumpApp(fx.redis, fx.keyPrefix, ledger.app)).toEqual(before);
  });

  it("rebuilds into a fresh generation that readers see only once promoted; the old one is deleted", async () => {
    const { urgent } = await scenario();
    const events = await storedEvents();
    const live = await open();
    await feed(live, events);
    const before = await dumpApp(fx.redis, fx.keyPrefix, ledger.app);
    const keys = claimKeys(fx.keyPrefix, ledger.app);

    const fresh = await open(true);
    await feed(fresh, events, 4);
    expect(await fx.redis.get(keys.pointer)).toBe(live.generation);
    expect(await live.currentGeneration()).toBe(live.generation);

    await projection().promote(scope, fresh);
    expect(await fx.redis.get(keys.pointer)).toBe(fresh.generation);
    expect(await fresh.currentGeneration()).toBe(fresh.generation);
    expect(await dumpApp(fx.redis, fx.keyPrefix, ledger.app)).toEqual(before);
    const [, oldKeys] = await fx.redis.scan("0", "MATCH", keys.generation(live.generation).pattern, "COUNT", 10_000);
    expect(oldKeys).toEqual([]);
    expect((await liveClaims(fx.redis, fx.keyPrefix, ledger.app, { agent: "agent-a", now: clock.ms() })).map((c) => c.claimId)).toContain(urgent.claimId);

    // The replaced live target must not write into the void.
    await ledger.client("agent-a").release("t-urgent", { done: true });
    const next = (await storedEvents()).filter((e) => e.seq > live.checkpoint.seq);
    await live.apply(next);
    const refused = await rejectionOf(live.commit(next.at(-1)!.seq));
    expect(refused.code).toBe("conflict");
    // The promoted one carries on.
    await feed(fresh, next);
    expect((await openTasks(fx.redis, fx.keyPrefix, ledger.app, { now: clock.ms() })).map((t) => t.name)).toEqual(["t-later", "t-idle"]);
  });

  it("refuses a commit when another writer moved the checkpoint", async () => {
    await ledger.client("agent-a").claim("contended");
    const events = await storedEvents();
    const one = await open();
    const two = await open();
    expect(two.generation).toBe(one.generation);
    await one.apply(events);
    await two.apply(events);
    await one.commit(events.at(-1)!.seq);
    expect((await rejectionOf(two.commit(events.at(-1)!.seq))).details).toMatchObject({ reason: "checkpoint_moved" });
  });
});
