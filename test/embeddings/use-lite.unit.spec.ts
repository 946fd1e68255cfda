import { describe, expect, it } from "vitest";
import { dot, isZeroVector } from "../../services/embeddings/embedder.js";
import { UseLiteEmbedder, USE_LITE_MODEL_ID } from "../../services/embeddings/use-lite.js";
import { stopUseLiteThread } from "../../services/embeddings/use-lite-thread.js";

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

describe("USE-lite on its embedding thread", () => {
  const notes = Array.from(
    { length: 32 },
    (_, i) => `Note ${i}: ${"the deploy script retries the database migration with backoff before it gives up and pages the owner of the service, ".repeat(5)}`,
  );

  /** The longest the calling thread went without running a 5 ms timer while `work` ran, and how long it ran. */
  async function longestStall(work: () => Promise<unknown>): Promise<{ stall: number; took: number }> {
    let last = performance.now();
    let stall = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      stall = Math.max(stall, now - last);
      last = now;
    }, 5);
    const started = performance.now();
    try {
      await work();
    } finally {
      clearInterval(timer);
    }
    return { stall: Math.max(stall, performance.now() - last), took: performance.now() - started };
  }

  it("runs there by default and gives the vectors the model gives on the calling thread", async () => {
    const threaded = new UseLiteEmbedder();
    const here = new UseLiteEmbedder({ thread: false });
    expect(threaded.threaded).toBe(true);
    expect(here.threaded).toBe(false);
    const texts = ["The deploy failed because the database migration timed out.", "", "NATS JetStream stores events."];
    const [a, b] = [await threaded.embed(texts), await here.embed(texts)];
    expect(a).toHaveLength(3);
    expect(isZeroVector(a[1]!)).toBe(true);
    for (const i of [0, 2]) expect(Math.max(...a[i]!.map((x, d) => Math.abs(x - b[i]![d]!)))).toBeLessThan(1e-6);
  });

  it("a model call does not hold the calling thread (on the calling thread it does, for the whole call)", async () => {
    const threaded = new UseLiteEmbedder({ batchSize: 32 });
    const here = new UseLiteEmbedder({ batchSize: 32, thread: false });
    await threaded.warmUp();
    await here.warmUp();
    const onThread = await longestStall(() => threaded.embed(notes));
    const onCaller = await longestStall(() => here.embed(notes));
    // Relative, not absolute: the machine's speed varies; what does not is who waits for the model.
    expect(onCaller.stall).toBeGreaterThan(onCaller.took / 2);
    expect(onThread.stall).toBeLessThan(onThread.took / 4);
  }, 120_000);

  it("a stopped thread fails the calls waiting on it as unavailable; the next call starts a new one", async () => {
    const embedder = new UseLiteEmbedder({ batchSize: 8 });
    await embedder.warmUp();
    const waiting = expect(embedder.embed(notes)).rejects.toMatchObject({ code: "unavailable" });
    await new Promise((resolve) => setTimeout(resolve, 20));
    await stopUseLiteThread();
    await waiting;
    const [vector] = await embedder.embed(["NATS JetStream stores events."]);
    expect(vector).toHaveLength(512);
    expect(Math.sqrt(dot(vector!, vector!))).toBeCloseTo(1, 5);
  }, 60_000);
});
