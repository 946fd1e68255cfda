import { describe, expect, it } from "vitest";
import { dot, isZeroVector } from "../../services/embeddings/embedder.js";
import { UseLiteEmbedder, USE_LITE_MODEL_ID } from "../../services/embeddings/use-lite.js";

// The real embedded model, from the installed package's weights (nothing is downloaded).
describe("USE-lite embedder", () => {
  const embedder = new UseLiteEmbedder({ batchSize: 4 });

  it("gives one 512-d unit vector per text, in order, named by model and version", async () => {
    const texts = ["The deploy failed because the database migration timed out.", "I like green tea.", "NATS JetStream stores events."];
    const vectors = await embedder.embed(texts);
    expect(embedder.modelId).toBe(USE_LITE_MODEL_ID);
    expect(embedder.dimensions).toBe(512);
    expect(vectors).toHaveLength(3);
    for (const v of vectors) {
      expect(v).toBeInstanceOf(Float32Array);
      expect(v).toHaveLength(512);
      expect(Math.sqrt(dot(v, v))).toBeCloseTo(1, 5);
    }
    // Order is kept: each text matches its own vector best.
    const again = await embedder.embed([texts[2]!, texts[0]!]);
    expect(dot(again[0]!, vectors[2]!)).toBeGreaterThan(0.999);
    expect(dot(again[1]!, vectors[0]!)).toBeGreaterThan(0.999);
  });

  it("puts a paraphrase closer than an unrelated sentence", async () => {
    const [anchor, paraphrase, unrelated] = await embedder.embed([
      "The build broke because the database migration timed out.",
      "A slow database migration hit its timeout and made the build fail.",
      "My grandmother grows tomatoes in her garden every summer.",
    ]);
    const close = dot(anchor!, paraphrase!);
    const far = dot(anchor!, unrelated!);
    expect(close).toBeGreaterThan(far + 0.1);
  });

  it("embeds the same in batches as one by one (batches of 4 over 10 texts, so a partial last batch too)", async () => {
    const texts = Array.from({ length: 10 }, (_, i) => `Note ${i}: the agent ${["fixed", "broke", "reviewed", "deployed"][i % 4]} service ${i * 7} after ${"many ".repeat(i)}tries.`);
    const batched = await embedder.embed(texts);
    for (let i = 0; i < texts.length; i++) {
      const [single] = await embedder.embed([texts[i]!]);
      const maxDiff = Math.max(...single!.map((x, d) => Math.abs(x - batched[i]![d]!)));
      expect(maxDiff).toBeLessThan(1e-4);
    }
  });

  it("gives blank texts zero vectors without dropping or shifting rows", async () => {
    const texts = ["first sentence about cats", "", "   ", "last sentence about dogs"];
    const vectors = await embedder.embed(texts);
    expect(vectors).toHaveLength(4);
    expect(isZeroVector(vectors[1]!)).toBe(true);
    expect(isZeroVector(vectors[2]!)).toBe(true);
    expect(vectors[1]).toHaveLength(512);
    const [cats, dogs] = await embedder.embed([texts[0]!, texts[3]!]);
    expect(dot(vectors[0]!, cats!)).toBeGreaterThan(0.999);
    expect(dot(vectors[3]!, dogs!)).toBeGreaterThan(0.999);
    expect(await embedder.embed([""])).toEqual([new Float32Array(512)]);
    expect(await embedder.embed([])).toEqual([]);
  });
});
