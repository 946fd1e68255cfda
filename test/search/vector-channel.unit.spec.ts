import { afterEach, describe, expect, it } from "vitest";
import type { Embedder } from "../../projections/embedder.js";
import type { IndexedMemory } from "../../projections/search/memory-records.js";
import { VectorChannel } from "../../projections/search/vector-channel.js";
import { HnswVectorIndex } from "../../projections/vectors/hnsw-vectors.js";
import type { VectorPoint } from "../../projections/vectors/vector-index.js";
import { WordHashEmbedder } from "./support.js";

/**
 * VectorChannel.write with an embedder that hands vectors over as they come (embedEach, as a
 * CachedEmbedder does): the points are written in chunks while they arrive, in whatever order, and the
 * index ends up exactly as with the one-array `embed`.
 */

/** The word-hash model, streaming its answers last position first (no order may be relied on). */
class StreamingWordHash extends WordHashEmbedder implements Embedder {
  async embedEach(texts: readonly string[], each: (index: number, vector: Float32Array) => void | Promise<void>): Promise<void> {
    const vectors = await this.embed(texts);
    for (let i = vectors.length - 1; i >= 0; i--) await each(i, vectors[i]!);
  }
}

/** A real HNSW index that remembers the size of every upsert it was given. */
class RecordingIndex extends HnswVectorIndex {
  readonly upserts: number[] = [];
  override async upsert(points: readonly VectorPoint[]): Promise<void> {
    this.upserts.push(points.length);
    return super.upsert(points);
  }
}

const memory = (i: number, body = `note ${i} about webhook retries and token ${i % 17} and cache ${i % 5}`): IndexedMemory => ({
  memoryId: `m${String(i).padStart(5, "0")}`,
  version: 1,
  app: "app1",
  scope: "app",
  kind: "note",
  status: "active",
  title: `memory ${i}`,
  body,
  tags: [],
  paths: [],
  importance: 3,
});

describe("vector channel: a write from an embedder that streams", () => {
  const indexes: HnswVectorIndex[] = [];
  afterEach(async () => {
    await Promise.all(indexes.splice(0).map((index) => index.close()));
  });
  const open = () => {
    const index = new RecordingIndex({ dimensions: 64 });
    indexes.push(index);
    return index;
  };

  it("writes the points in chunks as they arrive and ends as the one-array write does", async () => {
    const streamed = open();
    const whole = open();
    const first = new Map<string, IndexedMemory | null>(Array.from({ length: 10 }, (_, i) => [memory(i).memoryId, memory(i)]));
    await new VectorChannel(new StreamingWordHash(), streamed).write(first);
    await new VectorChannel(new WordHashEmbedder(), whole).write(first);

    // 2,500 upserts, a memory whose text is blank (no semantic position: removed), two removals.
    const changes = new Map<string, IndexedMemory | null>();
    for (let i = 10; i < 2510; i++) changes.set(memory(i).memoryId, memory(i));
    const blank = { ...memory(3), title: " ", body: " " };
    changes.set(blank.memoryId, blank);
    changes.set(memory(1).memoryId, null);
    changes.set(memory(2).memoryId, null);

    const stats = await new VectorChannel(new StreamingWordHash(), streamed).write(changes);
    const wholeStats = await new VectorChannel(new WordHashEmbedder(), whole).write(changes);
    expect(stats).toEqual({ embedded: 2501, upserted: 2500, removed: 3 });
    expect(stats).toEqual(wholeStats);

    const chunks = (streamed as RecordingIndex).upserts.slice(1);
    expect(chunks.every((n) => n <= 1024)).toBe(true);
    expect(chunks.reduce((a, b) => a + b, 0)).toBe(2500);
    expect(chunks.length).toBeGreaterThan(2);

    expect(await streamed.count()).toBe(10 - 3 + 2500);
    expect(await streamed.count()).toBe(await whole.count());
    const query = (await new WordHashEmbedder().embed(["webhook retries token 3 cache 2"]))[0]!;
    const hits = async (index: HnswVectorIndex) => (await index.search(query, { k: 20 })).map((hit) => [hit.id, hit.score]);
    expect(await hits(streamed)).toEqual(await hits(whole));
    // Each removed memory's own vector finds everything but it (it would be its own best hit).
    for (const gone of [memory(1), memory(2), memory(3)]) {
      const [own] = await new WordHashEmbedder().embed([`${gone.title}\n\n${gone.body}`]);
      const found = await streamed.search(own!, { k: 10 });
      expect(found).toHaveLength(10);
      expect(found.some((hit) => hit.id === gone.memoryId)).toBe(false);
    }
  });

  it("a failure while vectors arrive rejects the write with it", async () => {
    const index = open();
    const full = new Error("the vector index refused a write");
    let calls = 0;
    index.upsert = async () => {
      if (++calls === 2) throw full;
    };
    const changes = new Map<string, IndexedMemory | null>(Array.from({ length: 3000 }, (_, i) => [memory(i).memoryId, memory(i)]));
    await expect(new VectorChannel(new StreamingWordHash(), index).write(changes)).rejects.toBe(full);
    expect(calls).toBe(2);
  });
});
