import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { ProjectionTarget } from "../../projections/projection.js";
import { ORG_INDEX_APP, SearchIndex, attachVectorChannel, retrieve, searchProjection, type RetrievalMode, type VectorSource } from "../../projections/search/index.js";
import { EventLog, type ContentInput } from "./events.js";
import { WordHashEmbedder, embeddingCacheFixture, identifierCorpus, type EmbeddingCacheFixture } from "./support.js";

const scope = { prefix: "t", app: "app1", stream: "t_app_app1" };

const ids = (hits: { memoryId: string }[]) => hits.map((hit) => hit.memoryId);

async function feed(target: ProjectionTarget, log: EventLog, batch = 1000): Promise<void> {
  const events = log.after(target.checkpoint.seq);
  for (let i = 0; i < events.length; i += batch) {
    const slice = events.slice(i, i + batch);
    await target.apply(slice);
    await target.commit(slice.at(-1)!.seq);
  }
}

describe("hybrid retrieval over the search projection (embedding cache on real NATS)", () => {
  let cache: EmbeddingCacheFixture;
  let dir: string;
  beforeAll(async () => {
    cache = await embeddingCacheFixture();
    dir = await mkdtemp(join(tmpdir(), "memledger-hybrid-"));
  });
  afterAll(async () => {
    await cache?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  test("an exact identifier ranks first in hybrid mode among ~100 semantically similar notes", async () => {
    const setup = await cache.setup(new WordHashEmbedder());
    const index = new SearchIndex(scope.app, "ident");
    await attachVectorChannel(index, setup, undefined);
    await index.ingest(identifierCorpus().events);
    expect(index.indexedCount).toBe(101);

    const hybrid = await retrieve(index, "StripeWebhookHandler", { k: 5 });
    expect(hybrid[0]?.memoryId).toBe("target");
    expect(hybrid[0]?.identifiersMatched).toBe(1);
    expect(hybrid[0]?.channels.bm25?.rank).toBe(1);
    // The vector channel alone cannot tell the class from notes about the Stripe webhook handler.
    const vectorOnly = await retrieve(index, "StripeWebhookHandler", { k: 5, mode: "vector" });
    expect(vectorOnly[0]?.memoryId).not.toBe("target");
    expect(hybrid[0]!.channels.vector?.rank ?? Infinity).toBeGreaterThan(1);
  });

  test("one embedder call per applied batch; supersede and reject remove from both channels; model id stored; restart loads vectors", async () => {
    const inner = new WordHashEmbedder();
    const setup = await cache.setup(inner);
    const sources: VectorSource[] = [];
    const projection = searchProjection({ dir, snapshotEveryEvents: 1, vectors: setup, onVectors: (_a, _g, source) => sources.push(source) });
    const live = await projection.openLive(scope);
    const log = new EventLog(scope.app);
    for (let i = 0; i < 12; i++) log.write(`m${i}`, { title: `Queue worker note ${i}`, body: `Workers drain queue ${i} with backoff.` });
    log.write("cache", { title: "Cache settings", body: "The cache is redis with a 300 s TTL." });
    log.write("doomed", { title: "Deploy on fridays", body: "Deploys happen on friday evenings." });
    await live.apply(log.events);
    await live.commit(log.lastSeq);
    expect(inner.calls).toHaveLength(1);
    expect(inner.calls[0]).toHaveLength(14);

    const index = projection.index(scope.app)!;
    const both = async (query: string) => ({
      bm25: ids(await retrieve(index, query, { k: 20, mode: "bm25" })),
      vector: ids(await retrieve(index, query, { k: 20, mode: "vector" })),
    });
    expect((await both("friday deploys")).bm25).toContain("doomed");
    expect((await both("friday deploys")).vector[0]).toBe("doomed");

    log.supersede("doomed", "cache");
    log.propose("cache", { title: "Cache settings", body: "The cache is memcached." });
    log.reject("cache", 2);
    await feed(live, log);
    const after = await both("friday deploys");
    expect(after.bm25).not.toContain("doomed");
    expect(after.vector).not.toContain("doomed");
    expect(after.vector).toHaveLength(13);
    expect((await retrieve(index, "memcached", { k: 5, mode: "bm25" })).map((h) => h.memoryId)).toEqual([]);
    expect(await index.vectors!.count()).toBe(13);

    // Every saved vector names the model that made it.
    const points = (await readFile(join(dir, scope.app, `${live.checkpoint.generation}.vectors`, "points.jsonl"), "utf8")).trim().split("\n");
    expect(points).toHaveLength(13);
    for (const line of points) expect(JSON.parse(line).payload.modelId).toBe("word-hash@1");
    await live.close();

    // A new process: the vectors come from the snapshot, nothing is embedded, nothing replayed from zero.
    const freshInner = new WordHashEmbedder();
    const reopened = searchProjection({ dir, vectors: await cache.setup(freshInner), onVectors: (_a, _g, source) => sources.push(source) });
    const again = await reopened.openLive(scope);
    expect(again.checkpoint.seq).toBe(log.lastSeq);
    expect(sources.at(-1)).toBe("snapshot");
    expect(freshInner.calls).toHaveLength(0);
    expect(ids(await retrieve(reopened.index(scope.app)!, "queue worker backoff", { k: 20, mode: "vector" }))).toEqual(
      ids(await retrieve(index, "queue worker backoff", { k: 20, mode: "vector" })),
    );
    await again.close();
  });

  test("a rebuild with a warm cache calls the embedder zero times and gives the same results", async () => {
    const log = identifierCorpus();
    log.supersede("similar3");
    const first = await cache.setup(new WordHashEmbedder("word-hash@rebuild"));
    const projection = searchProjection({ dir: join(dir, "rebuild"), vectors: first });
    const live = await projection.openLive(scope);
    await feed(live, log, 50);
    expect(first.embedder.stats().embedderCalls).toBeGreaterThan(0);
    const queries = ["StripeWebhookHandler", "webhook retries", "dead letters alerts"];
    const answers = async (index: SearchIndex) =>
      Promise.all(queries.map(async (q) => (await retrieve(index, q, { k: 10 })).map((h) => [h.memoryId, h.fused])));
    const before = await answers(projection.index(scope.app)!);

    // As `memledger rebuild search` in another process: a new CachedEmbedder (empty LRU) over the same bucket.
    const second = await cache.setup(new WordHashEmbedder("word-hash@rebuild"));
    const rebuilding = searchProjection({ dir: join(dir, "rebuild"), vectors: second });
    const fresh = await rebuilding.openFresh(scope);
    await feed(fresh, log, 200);
    await rebuilding.promote(scope, fresh);
    const stats = second.embedder.stats();
    expect(stats.embedderCalls).toBe(0);
    expect(stats.misses).toBe(0);
    // Every memory ever active (similar3 too, superseded in a later batch), each a cache hit.
    expect(stats.hits).toBe(101);
    expect(await answers(rebuilding.index(scope.app)!)).toEqual(before);
    await fresh.close();
    await live.close();
  });

  test("org memories are searched with the app's and marked org", async () => {
    const setup = await cache.setup(new WordHashEmbedder());
    const appLog = new EventLog("shop");
    appLog.write("app-note", { title: "Checkout retries", body: "The checkout service retries card payments twice." });
    appLog.write("app-other", { title: "Image resizing", body: "Thumbnails are resized on upload." });
    const orgLog = new EventLog(ORG_INDEX_APP);
    orgLog.write("org-note", { title: "Payment retries policy", body: "Every team retries card payments at most twice.", scope: "org" });
    const app = new SearchIndex("shop", "a");
    const org = new SearchIndex(ORG_INDEX_APP, "o");
    for (const [index, log] of [[app, appLog], [org, orgLog]] as const) {
      await attachVectorChannel(index, setup, undefined);
      await index.ingest(log.events);
    }
    for (const mode of ["bm25", "vector", "hybrid"] as RetrievalMode[]) {
      const hits = await retrieve([app, org], "card payments retries", { k: 5, mode });
      expect(hits.map((h) => [h.memoryId, h.origin]).slice(0, 2).sort()).toEqual([
        ["app-note", "app"],
        ["org-note", "org"],
      ]);
    }
    // The org index alone, and filters that exclude it.
    expect((await retrieve([app, org], "card payments", { k: 5, scope: "org" })).map((h) => h.memoryId)).toEqual(["org-note"]);
    expect((await retrieve([app, org], "card payments", { k: 5, app: "shop" })).every((h) => h.origin === "app")).toBe(true);
  });

  test("filters apply identically to both channels: scope lists, kind, tags (all of), paths (under)", async () => {
    const setup = await cache.setup(new WordHashEmbedder());
    const log = new EventLog(scope.app);
    const note = (id: string, content: Partial<ContentInput>) => log.write(id, { title: `Webhook note ${id}`, body: "Webhook delivery and retries.", ...content });
    note("team", { scope: "team:payments", tags: ["Payments", "webhooks"], paths: ["src/payments/webhook.ts"] });
    note("appwide", { kind: "fact", tags: ["payments"], paths: ["src/payments"] });
    note("agent", { scope: "agent:a1", tags: ["webhooks"], paths: ["src/paymentsx/other.ts"] });
    const index = new SearchIndex(scope.app, "f");
    await attachVectorChannel(index, setup, undefined);
    await index.ingest(log.events);
    const both = async (options: Parameters<typeof retrieve>[2]) =>
      Promise.all((["bm25", "vector"] as const).map(async (mode) => ids(await retrieve(index, "webhook retries", { ...options, mode })).sort()));
    expect(await both({ k: 10, scope: ["team:payments", "agent:a1"] })).toEqual([["agent", "team"], ["agent", "team"]]);
    expect(await both({ k: 10, kind: "fact" })).toEqual([["appwide"], ["appwide"]]);
    expect(await both({ k: 10, tags: ["payments", "WEBHOOKS"] })).toEqual([["team"], ["team"]]);
    expect(await both({ k: 10, paths: ["src/payments"] })).toEqual([["appwide", "team"], ["appwide", "team"]]);
    await expect(retrieve(index, "x", { k: 1, status: "superseded" as "active" })).rejects.toThrow(/active memories only/);
  });

  test("boosts lift candidates touching the given paths or proposed on the branch, and only those", async () => {
    const setup = await cache.setup(new WordHashEmbedder());
    const log = new EventLog(scope.app);
    log.write("plain", { title: "Webhook retries", body: "Webhook retries back off exponentially." });
    // Shares "webhook" with the query but no stem of "retries" (tokens are stemmed: "retry" would match).
    log.write("pathy", { title: "Webhook redelivery settings", body: "Redelivery settings for webhook endpoints.", paths: ["src/payments/webhook.ts"] });
    const index = new SearchIndex(scope.app, "b");
    await attachVectorChannel(index, setup, undefined);
    await index.ingest(log.events);
    const plain = await retrieve(index, "webhook retries", { k: 5 });
    expect(plain[0]?.memoryId).toBe("plain");
    const boosted = await retrieve(index, "webhook retries", { k: 5, boost: { paths: ["src/payments"] } });
    expect(boosted[0]?.memoryId).toBe("pathy");
    expect(boosted[0]!.score).toBeCloseTo(boosted[0]!.fused * 1.25, 12);
    expect(await retrieve(index, "zeppelin", { k: 5, mode: "bm25", boost: { paths: ["src"] } })).toEqual([]);
  });

  test("fusion defaults to BM25 2 : vector 1 at k 20; rrfK and weights override them, a channel left out keeps its default", async () => {
    const setup = await cache.setup(new WordHashEmbedder());
    const log = new EventLog(scope.app);
    log.write("both", { title: "Webhook retries", body: "Webhook retries back off exponentially." });
    log.write("other", { title: "Webhook endpoints", body: "Endpoints are registered per merchant." });
    const index = new SearchIndex(scope.app, "w");
    await attachVectorChannel(index, setup, undefined);
    await index.ingest(log.events);
    const fusedOf = async (options: Partial<Parameters<typeof retrieve>[2]>) => {
      const hits = await retrieve(index, "webhook retries", { k: 5, ...options });
      expect(hits.length).toBe(2);
      for (const hit of hits) expect(hit.channels.bm25 && hit.channels.vector).toBeTruthy();
      return hits.map((hit) => [hit.fused, hit.channels.bm25!.rank, hit.channels.vector!.rank] as const);
    };
    for (const [fused, bm25, vector] of await fusedOf({})) expect(fused).toBeCloseTo(2 / (20 + bm25) + 1 / (20 + vector), 12);
    for (const [fused, bm25, vector] of await fusedOf({ rrfK: 60, weights: { bm25: 1, vector: 1 } })) {
      expect(fused).toBeCloseTo(1 / (60 + bm25) + 1 / (60 + vector), 12);
    }
    for (const [fused, bm25, vector] of await fusedOf({ weights: { vector: 3 } })) expect(fused).toBeCloseTo(2 / (20 + bm25) + 3 / (20 + vector), 12);
  });
});
