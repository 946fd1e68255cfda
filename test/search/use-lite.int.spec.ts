import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { SearchIndex, attachVectorChannel, retrieve } from "../../projections/search/index.js";
import { UseLiteEmbedder } from "../../services/embeddings/use-lite.js";
import { EventLog } from "./events.js";
import { embeddingCacheFixture, identifierCorpus, type EmbeddingCacheFixture } from "./support.js";

/** The same retrieval with the real embedded model (USE-lite, 512-d) behind the NATS KV cache. */
describe("hybrid retrieval with the real USE-lite embedder", () => {
  let cache: EmbeddingCacheFixture;
  beforeAll(async () => {
    cache = await embeddingCacheFixture("uselite");
  });
  afterAll(async () => {
    await cache?.cleanup();
  });

  test("the StripeWebhookHandler note ranks first for its identifier among ~100 similar notes; a repeated query is not embedded again", async () => {
    const setup = await cache.setup(new UseLiteEmbedder());
    const index = new SearchIndex("app1", "uselite");
    await attachVectorChannel(index, setup, undefined);
    await index.ingest(identifierCorpus().events);
    expect(await index.vectors!.count()).toBe(101);

    const hits = await retrieve(index, "StripeWebhookHandler", { k: 5, mode: "hybrid" });
    expect(hits[0]?.memoryId).toBe("target");
    expect(hits[0]?.channels.bm25?.rank).toBe(1);

    const callsBefore = setup.embedder.stats().embedderCalls;
    await retrieve(index, "StripeWebhookHandler", { k: 5, mode: "vector" });
    expect(setup.embedder.stats().embedderCalls).toBe(callsBefore);
  });

  test("the vector channel finds a paraphrase that shares no word (and no stem) with the query", async () => {
    const setup = await cache.setup(new UseLiteEmbedder());
    const log = new EventLog("app1");
    log.write("cats", { title: "Office pets", body: "Our cat sleeps on the keyboard every afternoon." });
    log.write("db", { title: "Database backups", body: "Postgres is dumped to object storage each night." });
    log.write("deploy", { title: "Release train", body: "We ship to production every Thursday after the freeze." });
    const index = new SearchIndex("app1", "paraphrase");
    await attachVectorChannel(index, setup, undefined);
    await index.ingest(log.events);
    const query = "which weekday do new versions go out?";
    expect(await retrieve(index, query, { k: 3, mode: "bm25" })).toEqual([]);
    expect((await retrieve(index, query, { k: 3, mode: "vector" }))[0]?.memoryId).toBe("deploy");
    expect((await retrieve(index, query, { k: 3, mode: "hybrid" }))[0]?.memoryId).toBe("deploy");
  });
});
