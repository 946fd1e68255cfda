import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { claimsProjection, claimsReader } from "../../projections/claims/index.js";
import type { ProjectionScope } from "../../projections/projection.js";
import { ProjectionRunner, rebuildProjection, statusBucket } from "../../services/projection-runner.js";
import { startLedger, type Ledger } from "../support/env.js";
import { dumpApp, manualClock, redisFixture, type RedisFixture } from "./support.js";

const MIN = 60_000;

// The claims projection under the real runner: durable consumer, acks after commit, rebuild + promote.
describe("claims projection under the projection runner", () => {
  let ledger: Ledger;
  let fx: RedisFixture;
  let runner: ProjectionRunner | undefined;
  const clock = manualClock(Math.floor(Date.now() / 1000) * 1000);

  beforeEach(async () => {
    fx = await redisFixture();
    ledger = await startLedger({ now: clock.now, claims: claimsReader({ redis: fx.redis, keyPrefix: fx.keyPrefix }) });
  });
  afterEach(async () => {
    await runner?.stop();
    await ledger.service.store.jsm.streams.delete(`KV_${statusBucket(ledger.prefix)}`).catch(() => undefined);
    await ledger.cleanup();
    await fx.cleanup();
  });

  it("keeps the claims query current, and a rebuild yields the same contents while the runner carries on", async () => {
    const a = ledger.client("agent-a");
    const b = ledger.client("agent-b");
    await a.openTask("alpha", { priority: 2 });
    const alpha = await a.claim("alpha", { ttlMs: 30 * MIN });
    await b.claim("src/lib/", { kind: "lock", ttlMs: 30 * MIN });

    const scope: ProjectionScope = { prefix: ledger.prefix, app: ledger.app, stream: ledger.service.names.appStream(ledger.app) };
    const definition = claimsProjection({ redis: fx.redis, keyPrefix: fx.keyPrefix });
    runner = new ProjectionRunner(ledger.service.store, definition, scope, { batchSize: 2 });
    await runner.start();
    expect(await runner.waitFor(alpha.seq + 1)).toBe(true);
    expect((await a.claims({ agent: "agent-a" })).map((c) => c.name)).toEqual(["alpha"]);
    // A lock's name is the normal form of its path (schemas/lock-name.ts): "src/lib/" is the lock "src/lib".
    expect((await a.claims()).map((c) => c.name).sort()).toEqual(["alpha", "src/lib"]);

    const before = await dumpApp(fx.redis, fx.keyPrefix, ledger.app);
    const rebuilt = await rebuildProjection(ledger.service.store, definition, scope, { batchSize: 2 });
    expect(rebuilt.seq).toBe(alpha.seq + 1);
    expect(await dumpApp(fx.redis, fx.keyPrefix, ledger.app)).toEqual(before);

    // The live runner notices the new generation and continues on it.
    const done = await a.release("alpha", { done: true });
    expect(await runner.waitFor(done.seq)).toBe(true);
    expect(await a.tasks()).toEqual([]);
    expect((await a.claims()).map((c) => c.holder)).toEqual(["agent-b"]);
  });
});
