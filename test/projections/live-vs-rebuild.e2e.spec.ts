import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { treeHash } from "../../projections/files/index.js";
import { openSearchIndex, searchMemories } from "../../projections/search/index.js";
import { escapeGlob, unlinkMatching } from "../../projections/claims/index.js";
import { rebuildProjection } from "../../services/projection-runner.js";
import { ProjectionSupervisor } from "../../services/projection-supervisor.js";
import { openReadModels, readModelConfig, type ReadModels } from "../../services/read-models.js";
import { dumpApp, manualClock } from "../claims/support.js";
import { NATS_URL, REDIS_URL, startLedger, type Ledger } from "../support/env.js";

const run = promisify(execFile);
const WORKER = path.resolve("test/support/projection-worker.mjs");

/** A workload touching every kind of event the projections fold, with lease expiry by the manual clock. */
async function mixedWorkload(ledger: Ledger, clock: ReturnType<typeof manualClock>): Promise<number> {
  const alice = ledger.client("alice");
  const bob = ledger.client("bob");
  const reviewer = ledger.client("human:rita");
  let last = 0;
  const track = <T extends { seq: number }>(r: T) => ((last = Math.max(last, r.seq)), r);
  const ids: string[] = [];
  for (let i = 0; i < 12; i++) {
    const p = track(await alice.propose({ title: `Note ${i} about StripeWebhookHandler`, body: `Body ${i}: retries are idempotent.`, kind: i % 3 === 0 ? "fragile" : "fact", tags: [`t${i % 4}`], paths: [`src/mod${i % 5}.ts`], importance: (i % 5) + 1 }));
    ids.push(p.memoryId);
    if (i % 4 !== 3) track(await reviewer.approve(p.memoryId));
  }
  track(await alice.propose({ memoryId: ids[0]!, title: "Note 0, revised", body: "Revised body." }));
  track(await reviewer.approve(ids[0]!, { version: 2 }));
  track(await reviewer.rollback(ids[0]!, 1));
  track(await reviewer.reject(ids[3]!, "duplicate"));
  track(await reviewer.supersede(ids[1]!, "replaced", { by: ids[2]! }));
  track(await alice.claim("deploy", { ttlMs: 60_000, priority: 1 }));
  track(await bob.claim("src/payments", { kind: "lock", ttlMs: 60_000 }));
  track(await alice.openTask("write-docs", { title: "Write the docs", priority: 2 }));
  clock.advance(120_000); // alice's lease on deploy expires
  track(await bob.claim("deploy", { ttlMs: 10 * 60_000 }));
  track(await bob.release("src/payments", { kind: "lock" }));
  return last;
}

describe("projections end to end", () => {
  let ledger: Ledger;
  let root: string;
  let models: ReadModels;
  let redis: Redis;
  let clock: ReturnType<typeof manualClock>;

  beforeEach(async () => {
    clock = manualClock(Date.now());
    ledger = await startLedger({ now: clock.now });
    root = await mkdtemp(path.join(tmpdir(), "memledger-e2e-"));
    models = openReadModels(
      ledger.prefix,
      readModelConfig({}, { filesRoot: path.join(root, "files"), searchDir: path.join(root, "search"), redisUrl: REDIS_URL }),
    );
    redis = new Redis(REDIS_URL);
  });

  afterEach(async () => {
    await models.close();
    await unlinkMatching(redis, `${escapeGlob(ledger.prefix)}:*`);
    redis.disconnect();
    await ledger.service.store.jsm.streams.delete(`KV_${ledger.prefix}_projections`).catch(() => undefined);
    await ledger.cleanup();
    await rm(root, { recursive: true, force: true });
  });

  const QUERIES = ["StripeWebhookHandler", "revised body", "src/mod3.ts", "idempotent retries"];
  /** What each query finds in the search index readers use now (the live one, or the one just promoted). */
  const searchResults = async () => {
    const index = models.search.index(ledger.app) ?? (await openSearchIndex(models.config.searchDir, ledger.app));
    return QUERIES.map((q) => searchMemories(index, q, { k: 10 }).map((h) => [h.memoryId, h.version, h.score.toFixed(6)]));
  };
  const snapshot = async () => ({
    files: await treeHash(path.join(root, "files", ledger.app)),
    redis: await dumpApp(redis, `${ledger.prefix}:claims`, ledger.app),
    search: await searchResults(),
  });

  it("live read models equal the ones rebuilt from sequence 0, file tree hash and Redis contents alike", async () => {
    const supervisor = new ProjectionSupervisor(ledger.service.store, models.definitions, { batchSize: 4 });
    const last = await mixedWorkload(ledger, clock);
    await supervisor.start();
    expect(await supervisor.waitFor(ledger.app, last)).toBe(true);
    const live = await snapshot();
    expect(Object.keys(live.redis).length).toBeGreaterThan(3);
    expect(live.search[0]!.length).toBeGreaterThan(3);

    const scope = { prefix: ledger.prefix, app: ledger.app, stream: ledger.service.store.names.appStream(ledger.app) };
    for (const definition of models.definitions) await rebuildProjection(ledger.service.store, definition, scope);
    const rebuilt = await snapshot();
    expect(rebuilt).toEqual(live);

    // Readers keep working after the switch: the live runners moved to the new generations.
    const more = await ledger.client("alice").propose({ title: "After the rebuild", body: "still projected" });
    expect(await supervisor.waitFor(ledger.app, more.seq)).toBe(true);
    expect((await snapshot()).files).not.toBe(rebuilt.files);
    await supervisor.stop();
  });

  it("a projection process killed mid-stream resumes to the same final state as an uninterrupted run", async () => {
    if (!existsSync("dist/services/projection-runner.js")) throw new Error("dist/ is missing: run `npm run build` (npm test does)");
    const last = await mixedWorkload(ledger, clock);
    const env = { ...process.env, NATS_URL };
    const killed = await run("node", [WORKER, ledger.prefix, ledger.app, root, REDIS_URL, "9", String(last)], { env }).then(
      () => 0,
      (err: { code?: number }) => err.code,
    );
    expect(killed).toBe(17);
    const partial = await snapshot();
    await run("node", [WORKER, ledger.prefix, ledger.app, root, REDIS_URL, "0", String(last)], { env });
    const resumed = await snapshot();
    expect(resumed).not.toEqual(partial);

    // The reference: a clean run from zero into a fresh generation.
    const scope = { prefix: ledger.prefix, app: ledger.app, stream: ledger.service.store.names.appStream(ledger.app) };
    for (const definition of models.definitions) await rebuildProjection(ledger.service.store, definition, scope);
    expect(await snapshot()).toEqual(resumed);
  });
});
