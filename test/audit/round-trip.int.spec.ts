import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { naming } from "../../events/subjects.js";
import { claimsProjection, claimsReader } from "../../projections/claims/index.js";
import { filesProjection, listFiles } from "../../projections/files/index.js";
import { openSearchIndex, retrieve, searchProjection } from "../../projections/search/index.js";
import type { ProjectionDefinition } from "../../projections/projection.js";
import { exportLedger, importLedger, parseExport } from "../../services/audit/portability.js";
import { hydrateAsOf, searchAsOf } from "../../services/audit/time-travel.js";
import { EventStore } from "../../services/event-store.js";
import { rebuildProjections } from "../../services/projection-runner.js";
import { deleteRedisKeys, REDIS_URL, startLedger, type Ledger } from "../support/env.js";

/**
 * Issue 12: export, then import into an empty app, gives every read model the source has: the same file
 * tree (the files projection run over both apps), the same search results (ids in the same order, for
 * several queries, from the search projection and from an as-of read), the same claims and open tasks
 * (the claims projection in Redis, read back), and the same hydration pack, all equal modulo the app name.
 */
describe("export and import: every read model of the copy equals the source's", () => {
  let ledger: Ledger;
  let store: EventStore;
  let dir: string;
  let redis: Redis;
  const source = "rt1";
  const copy = "rt2";
  const QUERIES = ["retry webhooks", "stripe backoff", "tenant queue", "billing migration", "lock deploy"];

  beforeAll(async () => {
    ledger = await startLedger({ app: source });
    store = await EventStore.open(ledger.nc, naming(ledger.prefix));
    dir = await mkdtemp(join(tmpdir(), "memledger-rt-"));
    redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
    const coder = ledger.client("coder-1");
    const bob = ledger.client("bob");
    const alice = ledger.client("human:alice");
    const a = await coder.propose({ title: "Retry webhooks three times", body: "Stripe webhooks retry 3 times.", tags: ["payments"], paths: ["src/payments/webhook.ts"], git: { branch: "fix/retries", worktree: "/w" } });
    await alice.approve(a.memoryId);
    await coder.propose({ memoryId: a.memoryId, title: "Retry webhooks five times", body: "Stripe webhooks retry 5 times with exponential backoff.", paths: ["src/payments/webhook.ts"] });
    await alice.approve(a.memoryId);
    await alice.rollback(a.memoryId, 1);
    const b = await coder.propose({ title: "Queue names are per tenant", body: "tenant-<id> queue names.", scope: "team:payments" });
    await alice.approve(b.memoryId);
    const c = await coder.propose({ title: "Billing migration is fragile", body: "Never run the billing migration twice.", kind: "fragile", paths: ["src/billing"] });
    await alice.approve(c.memoryId);
    const d = await coder.propose({ title: "Old deploy lock rule", body: "Lock deploy before release." });
    await alice.approve(d.memoryId);
    await alice.supersede(d.memoryId, "replaced by the release checklist");
    const e = await coder.propose({ title: "Stripe sandbox keys", body: "Use the sandbox keys in tests." });
    await alice.reject(e.memoryId, "secrets do not belong here");
    const s = await bob.propose({ title: "Bob's scratch: backoff ideas", body: "Stripe backoff: jitter?", scope: "agent:bob" });
    await alice.approve(s.memoryId);
    // Claims: an open task claimed and renewed, a lock held, a task done, a lock released.
    await alice.openTask("t-webhooks", { title: "Fix webhook retries", priority: 1 });
    await coder.claim("t-webhooks", { ttlMs: 3_600_000 });
    await coder.renew("t-webhooks", { ttlMs: 3_600_000 });
    await bob.claim("infra/deploy.yaml", { kind: "lock", ttlMs: 3_600_000 });
    await bob.claim("t-done", { ttlMs: 3_600_000 });
    await bob.release("t-done", { done: true });
    await coder.claim("src/billing/run.ts", { kind: "lock", ttlMs: 3_600_000 });
    await coder.release("src/billing/run.ts", { kind: "lock" });
    // Sessions, and a pack whose receipt is recorded.
    const { sessionId } = await coder.startSession({ task: "webhooks" });
    await coder.hydrate({ task: "retry webhooks", sessionId });
    await coder.endSession(sessionId, { summary: "done" });
    await ledger.service.flushExposure();

    const lines: string[] = [];
    await exportLedger(store, source, (line) => void lines.push(line));
    const imported = await importLedger(store, copy, parseExport(lines.join("")));
    expect(imported.imported).toBe(lines.length - 1);
  });

  afterAll(async () => {
    redis?.disconnect();
    await deleteRedisKeys(ledger.prefix).catch(() => undefined);
    await ledger?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  const scopeOf = (app: string) => ({ prefix: ledger.prefix, app, stream: store.names.appStream(app) });
  const rebuild = (definition: ProjectionDefinition, app: string) => rebuildProjections(store, [definition], scopeOf(app));
  /** The tree's hash with the app's name written as APP (MEMORY.md's heading and the files name it). */
  async function normalizedTreeHash(root: string, app: string): Promise<{ hash: string; files: string[] }> {
    const hash = createHash("sha256");
    const files = await listFiles(join(root, app));
    for (const file of files) {
      const content = (await readFile(join(root, app, file), "utf8")).replaceAll(app, "APP");
      hash.update(`${file.length}:${file}${content.length}:${content}`);
    }
    return { hash: hash.digest("hex"), files };
  }

  it("the files projection renders the same tree for both", async () => {
    const trees = [];
    for (const app of [source, copy]) {
      const root = join(dir, `files-${app}`);
      await rebuild(filesProjection({ root }), app);
      trees.push(await normalizedTreeHash(root, app));
    }
    expect(trees[0]!.files.length).toBeGreaterThan(5);
    expect(trees[1]!.files).toEqual(trees[0]!.files);
    expect(trees[1]!.hash).toBe(trees[0]!.hash);
  });

  it("search gives the same ids in the same order, from the search projection and as of the last event", async () => {
    const indexes = [];
    for (const app of [source, copy]) {
      const searchDir = join(dir, `search-${app}`);
      await rebuild(searchProjection({ dir: searchDir }), app);
      indexes.push(await openSearchIndex(searchDir, app));
    }
    let nonEmpty = 0;
    for (const query of QUERIES) {
      const [a, b] = await Promise.all(indexes.map(async (index) => (await retrieve([index], query, { k: 10, mode: "bm25" })).map((h) => [h.memoryId, h.version, h.score])));
      expect(b, query).toEqual(a);
      const [x, y] = await Promise.all([source, copy].map(async (app) => (await searchAsOf(store, app, query, {}, { k: 10, mode: "bm25", readable: () => true, noSnapshot: true })).hits.map((h) => h.memoryId)));
      expect(y, query).toEqual(x);
      expect(x, query).toEqual(a!.map(([id]) => id));
      if (a!.length > 0) nonEmpty++;
    }
    expect(nonEmpty).toBeGreaterThanOrEqual(4);
  });

  it("the claims projection holds the same live claims and open tasks", async () => {
    const keyPrefix = `${ledger.prefix}:claims`;
    const reader = claimsReader({ redis, keyPrefix });
    const now = Date.now();
    const read = async (app: string) => {
      await rebuild(claimsProjection({ redis: REDIS_URL, keyPrefix }), app);
      return { live: await reader.liveClaims(app, { now }), tasks: await reader.openTasks(app, { now }) };
    };
    const a = await read(source);
    const b = await read(copy);
    expect(a.live.map((c) => c.name).sort()).toEqual(["infra/deploy.yaml", "t-webhooks"]);
    expect(a.tasks.map((t) => t.name)).toEqual(["t-webhooks"]);
    expect(JSON.stringify(b).replaceAll(copy, "APP")).toBe(JSON.stringify(a).replaceAll(source, "APP"));
  });

  it("hydration builds the same pack for both", async () => {
    const input = { agent: "coder-1", task: "retry webhooks", branch: "fix/retries", paths: ["src/billing/run.ts"], budget: 4000, readable: () => true };
    const [a, b] = await Promise.all([source, copy].map((app) => hydrateAsOf(store, app, input, {}, { noSnapshot: true })));
    expect(a!.pack.markdown).toContain("Billing migration is fragile");
    expect(b!.pack.markdown.replaceAll(copy, "APP")).toBe(a!.pack.markdown.replaceAll(source, "APP"));
  });
});
