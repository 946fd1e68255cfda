import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { naming } from "../../events/subjects.js";
import { connectNats } from "../../services/nats.js";
import { isZeroVector } from "../../services/embeddings/embedder.js";
import {
  CachedEmbedder,
  cachedEmbedder,
  decodeVector,
  embeddingCacheKey,
  KvVectorStore,
} from "../../services/embeddings/cache.js";
import { OpenAiCompatibleEmbedder } from "../../services/embeddings/openai-compatible.js";
import { UseLiteEmbedder } from "../../services/embeddings/use-lite.js";
import { NATS_URL, uniquePrefix } from "../support/env.js";
import { CountingEmbedder, StandInEmbeddingServer } from "./support.js";

const notes = (n: number, tag = "note"): string[] => Array.from({ length: n }, (_, i) => `${tag} ${i}: agent decided to retry the migration after timeout ${i}`);

describe("CachedEmbedder over a real NATS KV bucket", () => {
  let nc: NatsConnection;
  let prefix: string;

  beforeEach(async () => {
    prefix = uniquePrefix("emb");
    nc = await connectNats({ servers: NATS_URL, name: `test-${prefix}` });
  });
  afterEach(async () => {
    await new Kvm(nc).open(naming(prefix).embeddingCacheBucket()).then((kv) => kv.destroy()).catch(() => undefined);
    await nc.close();
  });

  it("embeds N texts once; the second call embeds 0 and returns identical vectors", async () => {
    const inner = new CountingEmbedder();
    const cached = await cachedEmbedder(nc, prefix, inner);
    const texts = notes(25);

    const first = await cached.embed(texts);
    expect(cached.stats()).toMatchObject({ hits: 0, misses: 25, embedded: 25, embedderCalls: 1 });
    expect(inner.calls).toHaveLength(1);

    const second = await cached.embed(texts);
    expect(cached.stats()).toMatchObject({ hits: 25, misses: 25, embedded: 25, embedderCalls: 1 });
    expect(inner.calls).toHaveLength(1);
    expect(second).toEqual(first);
    expect(first).toEqual(await inner.embed(texts));
  });

  it("embeds only the misses, in one call, and answers in input order", async () => {
    const inner = new CountingEmbedder();
    const cached = await cachedEmbedder(nc, prefix, inner);
    await cached.embed(["b", "d"]);
    const out = await cached.embed(["a", "b", "c", "d", "e"]);
    expect(inner.calls).toEqual([["b", "d"], ["a", "c", "e"]]);
    expect(out).toEqual(await new CountingEmbedder().embed(["a", "b", "c", "d", "e"]));
  });

  it("embeds identical texts within one call once, and gives each caller its own copy", async () => {
    const inner = new CountingEmbedder();
    const cached = await cachedEmbedder(nc, prefix, inner);
    const out = await cached.embed(["same", "other", "same", "same"]);
    expect(inner.calls).toEqual([["same", "other"]]);
    expect(out[0]).toEqual(out[2]);
    expect(out[0]).not.toBe(out[2]);
    out[0]!.fill(0); // a caller scribbling on its result must not change the cache
    expect((await cached.embed(["same"]))[0]).toEqual(out[2]);
  });

  it("keeps the KV entries under sha256(modelId \\0 text) as little-endian Float32 bytes", async () => {
    const inner = new CountingEmbedder("counting@1", 16);
    const cached = await cachedEmbedder(nc, prefix, inner);
    const texts = notes(5);
    const vectors = await cached.embed(texts);

    const kv = await new Kvm(nc).open(naming(prefix).embeddingCacheBucket());
    const keys: string[] = [];
    for await (const key of await kv.keys()) keys.push(key);
    expect(keys.sort()).toEqual(texts.map((t) => embeddingCacheKey("counting@1", t)).sort());
    for (let i = 0; i < texts.length; i++) {
      const entry = await kv.get(embeddingCacheKey("counting@1", texts[i]!));
      expect(entry!.value).toHaveLength(16 * 4);
      expect(decodeVector(entry!.value)).toEqual(vectors[i]);
    }
  });

  it("misses for a different model id on the same bucket", async () => {
    const texts = notes(4);
    const a = new CountingEmbedder("model-a@1");
    const b = new CountingEmbedder("model-b@1");
    await (await cachedEmbedder(nc, prefix, a)).embed(texts);
    const cachedB = await cachedEmbedder(nc, prefix, b);
    const outB = await cachedB.embed(texts);
    expect(b.calls).toEqual([texts]);
    expect(cachedB.stats()).toMatchObject({ hits: 0, misses: 4 });
    expect(outB).toEqual(await b.embed(texts));
  });

  it("a fresh CachedEmbedder (empty LRU) on the same bucket embeds 0: a rebuild with a warm cache never calls the model", async () => {
    const texts = notes(40);
    const first = await (await cachedEmbedder(nc, prefix, new CountingEmbedder())).embed(texts);

    // A second connection stands in for another process: nothing shared but the bucket.
    const nc2 = await connectNats({ servers: NATS_URL, name: `test-${prefix}-2` });
    try {
      const inner = new CountingEmbedder();
      const rebuilt = new CachedEmbedder(inner, await KvVectorStore.open(nc2, prefix));
      expect(await rebuilt.embed(texts)).toEqual(first);
      expect(inner.calls).toHaveLength(0);
      expect(rebuilt.stats()).toEqual({ hits: 40, misses: 0, embedded: 0, embedderCalls: 0, lruHits: 0 });
      // The LRU now answers without the KV.
      await rebuilt.embed(texts.slice(0, 10));
      expect(rebuilt.stats()).toMatchObject({ hits: 50, lruHits: 10, embedderCalls: 0 });
    } finally {
      await nc2.close();
    }
  });

  it("treats an unreadable KV entry as a miss and overwrites it", async () => {
    const inner = new CountingEmbedder();
    const store = await KvVectorStore.open(nc, prefix);
    await store.put(embeddingCacheKey(inner.modelId, "damaged"), new Uint8Array([1, 2, 3]));
    const cached = new CachedEmbedder(inner, store);
    const [vector] = await cached.embed(["damaged"]);
    expect(inner.calls).toEqual([["damaged"]]);
    expect(decodeVector((await store.get(embeddingCacheKey(inner.modelId, "damaged")))!)).toEqual(vector);
  });

  it("gives blank texts zero vectors without storing them or calling the model", async () => {
    const inner = new CountingEmbedder("counting@1", 16);
    const cached = await cachedEmbedder(nc, prefix, inner);
    await cached.embed(["warm"]);
    const out = await cached.embed(["", "warm", "  "]);
    expect(inner.calls).toEqual([["warm"]]);
    expect(out.map((v) => v.length)).toEqual([16, 16, 16]);
    expect([isZeroVector(out[0]!), isZeroVector(out[1]!), isZeroVector(out[2]!)]).toEqual([true, false, true]);
    expect(await cached.embed([])).toEqual([]);
  });

  it("caches the real USE-lite model: same vectors as uncached, zero model calls the second time", async () => {
    const model = new UseLiteEmbedder();
    let modelCalls = 0;
    const counted = { modelId: model.modelId, dimensions: model.dimensions, embed: (t: readonly string[]) => (modelCalls++, model.embed(t)) };
    const texts = ["The deploy failed after the migration timed out.", "Retry the job with a longer lock lease."];
    const cached = await cachedEmbedder(nc, prefix, counted);
    const first = await cached.embed(texts);
    const again = await (await cachedEmbedder(nc, prefix, counted)).embed(texts);
    expect(modelCalls).toBe(1);
    expect(again).toEqual(first);
    expect(first).toEqual(await model.embed(texts));
  });

  it("caches an OpenAI-compatible model under its own id, so a warm rebuild sends no request", async () => {
    const server = await StandInEmbeddingServer.start(8);
    try {
      const texts = notes(6, "remote");
      const make = () => new OpenAiCompatibleEmbedder({ baseUrl: server.baseUrl, model: "stand-in", batchSize: 4 });
      const first = await (await cachedEmbedder(nc, prefix, make())).embed(texts);
      expect(server.requests).toHaveLength(2);
      const again = await (await cachedEmbedder(nc, prefix, make())).embed(texts);
      expect(server.requests).toHaveLength(2);
      expect(again).toEqual(first);
    } finally {
      await server.stop();
    }
  });

  it("fails loudly as unavailable when the KV cannot be read, instead of silently re-embedding", async () => {
    const inner = new CountingEmbedder();
    const cached = await cachedEmbedder(nc, prefix, inner);
    await new Kvm(nc).open(naming(prefix).embeddingCacheBucket()).then((kv) => kv.destroy());
    await expect(cached.embed(["x"])).rejects.toMatchObject({ code: "unavailable" });
    expect(inner.calls).toHaveLength(0);
  });
});
