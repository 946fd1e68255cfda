import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { naming } from "../../events/subjects.js";
import { connectNats } from "../../services/nats.js";
import { CachedEmbedder, KvVectorStore, embeddingCacheKey, encodeVector } from "../../services/embeddings/cache.js";
import { NATS_URL, uniquePrefix } from "../support/env.js";
import { CountingEmbedder } from "./support.js";

const texts = (n: number, tag: string): string[] => Array.from({ length: n }, (_, i) => `${tag} ${i}: the webhook retried after timeout ${i}`);

/**
 * A read of many keys (services/embeddings/cache.ts getMany) scans the bucket once instead of asking for
 * each key when they are a good share of it: the answers must be exactly those of one get per key.
 */
describe("the embedding cache read in bulk", () => {
  let nc: NatsConnection;
  let prefix: string;
  let store: KvVectorStore;

  beforeEach(async () => {
    prefix = uniquePrefix("embscan");
    nc = await connectNats({ servers: NATS_URL, name: `test-${prefix}` });
    store = await KvVectorStore.open(nc, prefix);
  });
  afterEach(async () => {
    await new Kvm(nc).open(naming(prefix).embeddingCacheBucket()).then((kv) => kv.destroy()).catch(() => undefined);
    await nc.close();
  });

  /** Fills the bucket with `n` vectors of a model and returns their keys. */
  async function fill(inner: CountingEmbedder, n: number, tag: string): Promise<string[]> {
    const all = texts(n, tag);
    const vectors = await inner.embed(all);
    const keys = all.map((text) => embeddingCacheKey(inner.modelId, text));
    await Promise.all(keys.map((key, i) => store.put(key, encodeVector(vectors[i]!))));
    return keys;
  }

  it("a scan answers exactly what one get per key answers: present keys with their bytes, deleted and unknown keys absent", async () => {
    const keys = await fill(new CountingEmbedder("model@1", 16), 600, "note");
    const kv = await new Kvm(nc).open(naming(prefix).embeddingCacheBucket());
    await kv.delete(keys[3]!);
    await kv.purge(keys[4]!);
    const wanted = [...keys.slice(0, 400), embeddingCacheKey("model@1", "never stored")];
    const scanned = await store.getMany(wanted, 8);
    expect(store.reads).toEqual({ gets: 0, scans: 1 });
    const one = new Map<string, Uint8Array>();
    for (const key of wanted) {
      const bytes = await store.get(key);
      if (bytes) one.set(key, bytes);
    }
    expect(scanned.size).toBe(398);
    expect([...scanned.keys()].sort()).toEqual([...one.keys()].sort());
    for (const [key, bytes] of one) expect(Buffer.from(scanned.get(key)!).equals(Buffer.from(bytes))).toBe(true);
    // Each answer owns its bytes: a kept answer does not hold the socket chunk it arrived in, and a
    // vector is decoded from it in place.
    for (const bytes of scanned.values()) expect([bytes.byteOffset, bytes.buffer.byteLength]).toEqual([0, bytes.byteLength]);
    // Few keys take the per-key path: the same answers.
    const few = await store.getMany(keys.slice(0, 5), 8);
    expect(store.reads).toEqual({ gets: wanted.length + 5, scans: 1 });
    expect([...few.keys()].sort()).toEqual(keys.slice(0, 3).sort());
  });

  it("an empty bucket answers a bulk read with nothing, at once", async () => {
    const keys = texts(400, "absent").map((text) => embeddingCacheKey("model@1", text));
    expect((await store.getMany(keys, 8)).size).toBe(0);
  });

  it("a warm cache serves a large embed call from one scan: no text embedded, the same vectors", async () => {
    const inner = new CountingEmbedder("model@1", 16);
    await fill(inner, 700, "memo");
    const all = texts(700, "memo");
    const expected = await inner.embed(all);
    const before = inner.embeddedTexts;
    const cached = new CachedEmbedder(inner, store);
    const vectors = await cached.embed([...all, "a new text"]);
    expect(store.reads).toEqual({ gets: 0, scans: 1 });
    expect(inner.embeddedTexts - before).toBe(1);
    expect(cached.stats()).toMatchObject({ hits: 700, misses: 1 });
    expect(vectors.slice(0, 700)).toEqual(expected);
  });

  it("embedEach hands every position its vector once, from one scan, as embed answers; what `each` throws stops the read as it is", async () => {
    const inner = new CountingEmbedder("model@1", 16);
    await fill(inner, 700, "each");
    const all = texts(700, "each");
    const input = [...all, "  ", all[5]!, "a new text"];
    const got = new Map<number, Float32Array>();
    await new CachedEmbedder(inner, store).embedEach(input, async (index, vector) => {
      expect(got.has(index)).toBe(false);
      got.set(index, vector);
      await Promise.resolve(); // an async consumer (a vector index write) is waited for
    });
    expect(store.reads).toEqual({ gets: 0, scans: 1 });
    expect(got.size).toBe(input.length);
    const byPosition = [...got.entries()].sort(([a], [b]) => a - b).map(([, vector]) => vector);
    expect(byPosition).toEqual(await new CachedEmbedder(inner, store).embed(input));
    expect(byPosition[700]).toEqual(new Float32Array(16)); // the blank text: a zero vector of the model's width
    expect(got.get(701)).not.toBe(got.get(5)); // a repeated text: its own array at each position
    expect(got.get(701)).toEqual(got.get(5));

    const full = new Error("the vector index refused a write");
    let calls = 0;
    const refused = new CachedEmbedder(inner, store).embedEach(all, () => {
      if (++calls === 10) throw full;
    });
    await expect(refused).rejects.toBe(full);
    expect(calls).toBe(10);
  });

  it("a read larger than the LRU leaves the LRU as it was, and what it hands out is nobody else's", async () => {
    const inner = new CountingEmbedder("model@1", 16);
    await fill(inner, 600, "bulk");
    const all = texts(600, "bulk");
    // 16-d vectors: 64 bytes and a 64-character key each, so this LRU holds 40 of them.
    const cached = new CachedEmbedder(inner, store, { lruMaxBytes: 40 * 128 });
    const few = await cached.embed(all.slice(0, 10));
    expect(store.reads).toEqual({ gets: 10, scans: 0 });

    const many = await cached.embed(all);
    expect(store.reads).toEqual({ gets: 10, scans: 1 });
    expect(many).toEqual(await inner.embed(all));
    // The ten read first are still in the LRU (served without a read, as copies); none of the 600 entered it.
    for (const vector of many) vector.fill(0);
    const again = await cached.embed([...all.slice(0, 10), all[500]!]);
    expect(cached.stats().lruHits).toBe(10 + 10);
    expect(store.reads).toEqual({ gets: 11, scans: 1 });
    expect(again).toEqual(await inner.embed([...all.slice(0, 10), all[500]!]));
    expect(again.slice(0, 10)).toEqual(few);
    // A text repeated within one call gets its own copy at each position.
    const twice = await cached.embed([all[300]!, all[300]!]);
    expect(twice[0]).toEqual(twice[1]);
    expect(twice[0]).not.toBe(twice[1]);
    twice[0]!.fill(0);
    expect(twice[1]).toEqual((await inner.embed([all[300]!]))[0]);
  });
});
