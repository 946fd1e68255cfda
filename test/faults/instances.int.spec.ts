import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { KV } from "@nats-io/kv";
import { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { claimsProjection, liveClaims, type RedisClaimsTarget } from "../../projections/claims/index.js";
import { filesProjection, treeHash } from "../../projections/files/index.js";
import type { ProjectedEvent, ProjectionScope, ProjectionTarget } from "../../projections/projection.js";
import type { EventStore } from "../../services/event-store.js";
import { LeaderLease, openLeaseBucket, type LeaseHandlers } from "../../services/leader-lease.js";
import { ProjectionRunner, readStatuses } from "../../services/projection-runner.js";
import { ProjectionSupervisor } from "../../services/projection-supervisor.js";
import { sharedStores } from "../../services/shared-stores.js";
import { Presence, listInstances, loadInstanceId, openInstancesBucket, type InstanceConfig } from "../../services/instance.js";
import { spawnSync } from "node:child_process";
import { AckPolicy } from "@nats-io/jetstream";
import { eventually } from "../support/eventually.js";
import { REDIS_URL, deleteRedisKeys, startLedger, type Ledger } from "../support/env.js";
import { newDisk, recordingProjection } from "../support/recording-projection.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every key under the prefix with its type and value: what "nothing changed in Redis" compares. */
async function redisSnapshot(redis: Redis, prefix: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 500);
    cursor = next;
    for (const key of keys) out[key] = (await redis.dumpBuffer(key))?.toString("base64") ?? "";
  } while (cursor !== "0");
  return out;
}

async function eventsOf(store: EventStore, stream: string): Promise<ProjectedEvent[]> {
  const events: ProjectedEvent[] = [];
  await store.replay(stream, {}, (batch) => {
    events.push(...batch);
  });
  return events;
}

describe("leader leases and fencing (shared read models)", () => {
  let ledger: Ledger;
  let store: EventStore;
  let scope: ProjectionScope;
  let kv: KV;
  let redis: Redis;
  const leases: LeaderLease[] = [];
  const targets: ProjectionTarget[] = [];
  const noop: LeaseHandlers = { onAcquired: async () => undefined, onLost: async () => undefined };

  beforeEach(async () => {
    ledger = await startLedger();
    store = ledger.service.store;
    scope = { prefix: ledger.prefix, app: ledger.app, stream: store.names.appStream(ledger.app) };
    kv = await openLeaseBucket(ledger.nc, store.names);
    redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  });

  afterEach(async () => {
    for (const lease of leases.splice(0)) await lease.stop();
    for (const target of targets.splice(0)) await target.close();
    redis.disconnect();
    await deleteRedisKeys(ledger.prefix);
    await ledger.cleanup();
  });

  const lease = (id: string, options: { ttlMs: number; renewEveryMs?: number }, handlers = noop) => {
    const l = new LeaderLease(kv, "claims.redis.s", { id, host: "test" }, handlers, options);
    leases.push(l);
    return l;
  };

  it("one contender leads; while it renews nobody takes over; when it stops it hands the lease over at once, with a higher token", async () => {
    const a = lease("a", { ttlMs: 1_200, renewEveryMs: 200 });
    const b = lease("b", { ttlMs: 1_200, renewEveryMs: 200 });
    await a.start();
    await b.start();
    expect([a.role, b.role]).toEqual(["leader", "follower"]);
    expect(b.leader).toBe("a");
    const first = a.token!;

    await sleep(2_400); // two lease lengths of renewals
    expect([a.role, b.role]).toEqual(["leader", "follower"]);

    await a.stop(); // gives the lease back: b takes over without waiting for a lapse
    await eventually("b to lead after a released", () => (b.role === "leader" ? true : undefined), 5_000);
    expect(b.token!).toBeGreaterThan(first);
  });

  it("a paused former leader cannot write after the takeover: its claims commit is refused and Redis is unchanged", async () => {
    const client = ledger.client("agent-a");
    await client.claim("t1", { ttlMs: 600_000 });
    await client.claim("t2", { ttlMs: 600_000 });
    await client.release("t1", { done: true });
    await client.claim("t3", { ttlMs: 600_000 });
    const events = await eventsOf(store, scope.stream);
    const half = events.slice(0, 2);
    const rest = events.slice(2);
    const claims = claimsProjection({ redis: REDIS_URL, keyPrefix: `${ledger.prefix}:claims` });

    // A acquires, fences the store with its token and commits what it applied; then its renewals stop.
    let targetA: RedisClaimsTarget | undefined;
    const a = lease("a", { ttlMs: 500, renewEveryMs: 3_600_000 }, {
      onAcquired: async (token) => {
        targetA = await claims.openLive(scope);
        targets.push(targetA);
        await targetA.fence(token);
      },
      onLost: async () => undefined,
    });
    await a.start();
    const tokenA = a.token!;
    await targetA!.apply(half);
    await targetA!.commit(half.at(-1)!.seq);

    let targetB: RedisClaimsTarget | undefined;
    const b = lease("b", { ttlMs: 500, renewEveryMs: 100 }, {
      onAcquired: async (token) => {
        targetB = await claims.openLive(scope);
        targets.push(targetB);
        await targetB.fence(token);
      },
      onLost: async () => undefined,
    });
    await b.start();
    await eventually("b to take the lapsed lease over", () => (b.role === "leader" && targetB ? true : undefined), 10_000);
    expect(b.token!).toBeGreaterThan(tokenA);
    expect(a.held()).toBe(false); // by its own clock A knows; the store must refuse it even if it ignored that

    const before = await redisSnapshot(redis, ledger.prefix);
    await targetA!.apply(rest);
    await expect(targetA!.commit(events.at(-1)!.seq)).rejects.toThrow(/fenced: leader token \d+ was superseded/);
    expect(await redisSnapshot(redis, ledger.prefix)).toEqual(before);
    // Nor can it fence the store again with its old token.
    await expect(targetA!.fence(tokenA)).rejects.toThrow(/fenced/);
    expect(await redisSnapshot(redis, ledger.prefix)).toEqual(before);

    // The new leader continues from the shared checkpoint.
    expect(targetB!.checkpoint.seq).toBe(half.at(-1)!.seq);
    await targetB!.apply(rest);
    await targetB!.commit(events.at(-1)!.seq);
    const live = await liveClaims(redis, `${ledger.prefix}:claims`, ledger.app, { now: Date.now() });
    expect(live.map((c) => c.name).sort()).toEqual(["t2", "t3"]);
  });

  it("a file store fenced by a newer leader refuses the former leader's commit and its tree is unchanged", async () => {
    const client = ledger.client("agent-a");
    const first = await client.propose({ title: "first note", body: "one" });
    await client.propose({ title: "second note", body: "two" });
    const events = await eventsOf(store, scope.stream);
    const root = await mkdtemp(join(tmpdir(), "memledger-fence-"));
    try {
      const files = filesProjection({ root });
      const former = await files.openLive(scope);
      targets.push(former);
      await (former as unknown as { fence(t: number): Promise<void> }).fence(5);
      await former.apply(events.filter((e) => e.seq <= first.seq));
      await former.commit(first.seq);

      const leader = await files.openLive(scope);
      targets.push(leader);
      await (leader as unknown as { fence(t: number): Promise<void> }).fence(9);
      const before = await treeHash(join(root, ledger.app), { includeHidden: true });
      await former.apply(events);
      await expect(former.commit(events.at(-1)!.seq)).rejects.toThrow(/fenced: leader token 5 was superseded by token 9/);
      expect(await treeHash(join(root, ledger.app), { includeHidden: true })).toBe(before);
      await expect((former as unknown as { fence(t: number): Promise<void> }).fence(5)).rejects.toThrow(/fenced/);

      await leader.apply(events);
      await leader.commit(events.at(-1)!.seq);
      expect(leader.checkpoint.seq).toBe(events.at(-1)!.seq);
    } finally {
      await rm(root, { recursive: true, force: true });
      await rm(`${root}.gen`, { recursive: true, force: true });
    }
  });
});

describe("supervisors of two instances over one Redis", () => {
  let ledger: Ledger;
  let root: string;

  beforeEach(async () => {
    ledger = await startLedger();
    root = await mkdtemp(join(tmpdir(), "memledger-sup-"));
  });

  afterEach(async () => {
    await deleteRedisKeys(ledger.prefix);
    await ledger.cleanup();
    await rm(root, { recursive: true, force: true });
  });

  it("one writes the claims, the other follows (its waitFor reads the shared checkpoint) and leads at once when the first stops; a legacy durable is removed", async () => {
    const store = ledger.service.store;
    const client = ledger.client("agent-a");
    await client.claim("t1", { ttlMs: 600_000 });
    const stream = store.names.appStream(ledger.app);
    // What builds before instances left behind: one shared durable per projection.
    await store.jsm.consumers.add(stream, { durable_name: "projection-claims", ack_policy: AckPolicy.Explicit });
    const kv = await openLeaseBucket(ledger.nc, store.names);
    const supervisor = (id: string) => {
      const shared = sharedStores(ledger.prefix, { redisUrl: REDIS_URL, filesRoot: join(root, id) });
      const claims = claimsProjection({ redis: REDIS_URL, keyPrefix: `${ledger.prefix}:claims` });
      return {
        shared,
        sup: new ProjectionSupervisor(store, [claims, recordingProjection(newDisk())], {
          apps: [ledger.app],
          batchSize: 10,
          leases: { kv, holder: { id, host: "test" }, ttlMs: 6_000 },
          sharedStore: (definition, scope) => shared.of(definition, scope),
        }),
      };
    };
    const a = supervisor("a");
    const b = supervisor("b");
    try {
      await a.sup.start();
      await b.sup.start();
      const role = (s: ProjectionSupervisor) => s.roles().find((r) => r.projection === "claims" && r.app === ledger.app);
      expect(role(a.sup)).toMatchObject({ role: "leader", leader: "a", store: "redis" });
      expect(role(b.sup)).toMatchObject({ role: "follower", leader: "a" });
      // A follower runs no claims runner, but its own (local) projections.
      expect(b.sup.list().map((r) => r.definition.name)).toEqual(["recording"]);
      await expect(store.jsm.consumers.info(stream, "projection-claims")).rejects.toThrow();

      const second = await client.claim("t2", { ttlMs: 600_000 });
      expect(await b.sup.waitFor(ledger.app, second.seq, 20_000)).toBe(true);
      expect(await b.sup.position(ledger.app)).toBeGreaterThanOrEqual(second.seq);

      await a.sup.stop(); // gives its leases back: b leads without waiting for a lapse
      // Sooner than the 6 s lease could lapse: the lease was handed over.
      await eventually("b to lead the claims", () => (role(b.sup)?.role === "leader" ? true : undefined), 5_000);
      const third = await client.release("t1", { done: true });
      expect(await b.sup.waitFor(ledger.app, third.seq, 20_000)).toBe(true);
      const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
      try {
        const live = await liveClaims(redis, `${ledger.prefix}:claims`, ledger.app, { now: Date.now() });
        expect(live.map((c) => c.name)).toEqual(["t2"]);
      } finally {
        redis.disconnect();
      }
    } finally {
      await a.sup.stop();
      await b.sup.stop();
      await a.shared.close();
      await b.shared.close();
    }
  });
});

describe("instance presence", () => {
  let ledger: Ledger;
  let dir: string;
  const presences: Presence[] = [];

  beforeEach(async () => {
    ledger = await startLedger();
    dir = await mkdtemp(join(tmpdir(), "memledger-presence-"));
  });

  afterEach(async () => {
    for (const p of presences.splice(0)) await p.stop();
    await ledger.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  const config = (dataDir: string): InstanceConfig => ({ dataDir, heartbeatMs: 200, lapseMs: 1_000, leaseTtlMs: 1_000 });

  it("keeps its id in the data directory, refuses a second live process on it, and lets a crashed one's restart in at once", async () => {
    const names = ledger.service.store.names;
    const first = await Presence.start(ledger.nc, names, config(dir));
    presences.push(first);
    expect(first.id).toBe(await loadInstanceId(dir)); // kept: a restart is the same instance
    await expect(Presence.start(ledger.nc, names, config(dir))).rejects.toThrow(/already running on .* give each instance its own MEMLEDGER_DATA/);

    const other = await Presence.start(ledger.nc, names, config(join(dir, "other")));
    presences.push(other);
    const listed = await listInstances(ledger.nc, names);
    expect(listed.filter((p) => p.state === "live").map((p) => p.id).sort()).toEqual([first.id, other.id].sort());

    // A crash: the entry still looks live, but its process on this host is gone. The restart need not wait.
    const kv = await openInstancesBucket(ledger.nc, names);
    await first.stop();
    presences.splice(presences.indexOf(first), 1);
    const gone = spawnSync(process.execPath, ["-e", ""]).pid!;
    await kv.put(first.id, JSON.stringify({ ...first.info, pid: gone, stoppedAt: undefined, updatedAt: new Date().toISOString() }));
    const started = performance.now();
    const restarted = await Presence.start(ledger.nc, names, config(dir));
    presences.push(restarted);
    expect(performance.now() - started).toBeLessThan(500);
    expect(restarted.id).toBe(first.id);

    // A graceful stop shows as stopped; silence past the lapse as departed.
    await other.stop();
    presences.splice(presences.indexOf(other), 1);
    await eventually("the stopped instance listed as stopped", async () =>
      (await listInstances(ledger.nc, names)).find((p) => p.id === other.id)?.state === "stopped" ? true : undefined,
    );
    await kv.put("i-silent", JSON.stringify({ ...restarted.info, id: "i-silent", updatedAt: new Date(Date.now() - 5_000).toISOString() }));
    expect((await listInstances(ledger.nc, names)).find((p) => p.id === "i-silent")?.state).toBe("departed");
  });
});

describe("prompt shutdown", () => {
  let ledger: Ledger;

  beforeEach(async () => {
    ledger = await startLedger();
  });

  afterEach(async () => {
    await ledger.cleanup();
  });

  it("a runner blocked on a poison event, sleeping in its retry backoff, stops at once and checkpoints nothing past it", async () => {
    const client = ledger.client("agent-p");
    for (let i = 0; i < 5; i++) await client.propose({ title: `note ${i}`, body: `body ${i}` });
    const store = ledger.service.store;
    const scope = { prefix: ledger.prefix, app: ledger.app, stream: store.names.appStream(ledger.app) };
    const disk = newDisk();
    const runner = new ProjectionRunner(store, recordingProjection(disk, (e) => e.seq === 3), scope, { batchSize: 1 });
    await runner.start();
    // Attempt n sleeps 100 * 2^n ms: by attempt 5 the runner sleeps 3.2 s, then 6.4 s.
    await eventually(
      "the runner to retry the poison event five times",
      async () => ((await readStatuses(store)).find((s) => s.projection === "recording")?.blocked?.attempts ?? 0) >= 5 || undefined,
      30_000,
    );
    const started = performance.now();
    await runner.stop();
    const took = performance.now() - started;
    expect(took).toBeLessThan(1_000);
    expect(disk.generations.get(disk.current)!.seq).toBe(2);
    expect(disk.generations.get(disk.current)!.applied).toEqual([1, 2]);
    await store.jsm.streams.delete(`KV_${ledger.prefix}_projections`).catch(() => undefined);
  });
});
