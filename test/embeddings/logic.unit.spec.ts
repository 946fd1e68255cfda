import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { MemledgerError } from "../../schemas/errors.js";
import { naming } from "../../events/subjects.js";
import { chunk, dot, embedInBatches, isZeroVector, l2Normalize } from "../../services/embeddings/embedder.js";
import {
  backoffDelayMs,
  embeddingsEndpoint,
  isRetryableStatus,
  openAiModelId,
  parseEmbeddingsResponse,
  parseRetryAfterMs,
} from "../../services/embeddings/openai-compatible.js";
import { decodeVector, embeddingCacheKey, encodeVector, mapBounded } from "../../services/embeddings/cache.js";
import { embedderConfigFromEnv, embedderFromConfig, embedderFromEnv } from "../../services/embeddings/config.js";
import { OpenAiCompatibleEmbedder } from "../../services/embeddings/openai-compatible.js";
import { UseLiteEmbedder } from "../../services/embeddings/use-lite.js";

const codeOf = async (promise: Promise<unknown> | (() => unknown)): Promise<string> => {
  try {
    await (typeof promise === "function" ? promise() : promise);
  } catch (err) {
    expect(err).toBeInstanceOf(MemledgerError);
    return (err as MemledgerError).code;
  }
  throw new Error("expected a MemledgerError, nothing was thrown");
};

describe("vector helpers", () => {
  it("normalises to unit length and keeps direction", () => {
    const v = l2Normalize([3, 4]);
    expect([...v]).toEqual([expect.closeTo(0.6, 6), expect.closeTo(0.8, 6)]);
    expect(dot(v, v)).toBeCloseTo(1, 6);
  });

  it("refuses zero and non-finite model output as internal errors", async () => {
    expect(await codeOf(() => l2Normalize([0, 0]))).toBe("internal");
    expect(await codeOf(() => l2Normalize([1, Number.NaN]))).toBe("internal");
  });

  it("chunks by batch size and refuses a non-positive one", async () => {
    expect(chunk([1, 2, 3, 4, 5], 2)).toEqual([[1, 2], [3, 4], [5]]);
    expect(await codeOf(() => chunk([1], 0))).toBe("invalid");
  });
});

describe("embedInBatches: the Embedder contract every backend shares", () => {
  const options = { batchSize: 2, dimensions: 2, resolveDimensions: async () => 2, modelId: "m" };

  it("splits non-blank texts into batches, keeps input order, gives blanks zero vectors", async () => {
    const batches: string[][] = [];
    const out = await embedInBatches(
      ["a", "", "bb", "  \n", "ccc"],
      async (batch) => {
        batches.push(batch);
        return batch.map((t) => [t.length, 1]);
      },
      options,
    );
    expect(batches).toEqual([["a", "bb"], ["ccc"]]);
    expect(out).toHaveLength(5);
    expect(isZeroVector(out[1]!)).toBe(true);
    expect(isZeroVector(out[3]!)).toBe(true);
    expect(out[1]).toHaveLength(2);
    for (const [i, len] of [[0, 1], [2, 2], [4, 3]] as const) {
      expect(dot(out[i]!, out[i]!)).toBeCloseTo(1, 6);
      expect(out[i]![0]! / out[i]![1]!).toBeCloseTo(len, 5);
    }
  });

  it("never calls the backend for an all-blank input and sizes zeros from resolveDimensions", async () => {
    let calls = 0;
    const out = await embedInBatches(["", " "], async () => (calls++, []), { ...options, dimensions: undefined, resolveDimensions: async () => 7 });
    expect(calls).toBe(0);
    expect(out.map((v) => v.length)).toEqual([7, 7]);
  });

  it("fails loudly when the backend drops a row or changes width", async () => {
    expect(await codeOf(embedInBatches(["a", "b"], async () => [[1, 0]], options))).toBe("internal");
    expect(await codeOf(embedInBatches(["a", "b"], async () => [[1, 0], [1, 0, 0]], { ...options, dimensions: undefined }))).toBe("internal");
  });
});

describe("cache encoding", () => {
  it("keys by sha256(modelId \\0 text) in hex, so a model change or a text change misses", () => {
    const key = embeddingCacheKey("use-lite-512@0.2.0", "hello");
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    expect(embeddingCacheKey("use-lite-512@0.2.0", "hello")).toBe(key);
    expect(embeddingCacheKey("other", "hello")).not.toBe(key);
    // The separator keeps ("ab","c") and ("a","bc") apart.
    expect(embeddingCacheKey("ab", "c")).not.toBe(embeddingCacheKey("a", "bc"));
  });

  it("keys every text as the cache always has (a Hash object fed the model id, a NUL and the text), so entries already stored still hit", () => {
    const asStored = (modelId: string, text: string) => createHash("sha256").update(modelId).update("\0").update(text).digest("hex");
    // Pinned: a change of formula would turn every warm cache cold.
    expect(embeddingCacheKey("use-lite-512@0.2.0", "hello")).toBe(asStored("use-lite-512@0.2.0", "hello"));
    expect(embeddingCacheKey("m@1", "hello")).toBe("a773c22ab35293969b2b0232a214d0d9c28815e32dfb99c2e8ed49f5bc61f30b");
    const texts = ["", "plain", "é ü 日本語 🦀", "line\nbreak\ttab\u0000nul", "lone \ud800 high", "\udc00 lone low first", "x".repeat(100_000)];
    const models = ["use-lite-512@0.2.0", "ends with a lone high \ud83e", ""];
    for (const modelId of models) for (const text of texts) expect(embeddingCacheKey(modelId, text), `${modelId} / ${text.slice(0, 20)}`).toBe(asStored(modelId, text));
  });

  it("stores Float32 little-endian and reads back the same floats", () => {
    const v = new Float32Array([1, -0.5, 3.25e-8, 0.1]);
    const bytes = encodeVector(v);
    expect(bytes).toHaveLength(16);
    expect([...bytes.subarray(0, 4)]).toEqual([0x00, 0x00, 0x80, 0x3f]); // 1.0f, little-endian
    expect(decodeVector(bytes)).toEqual(v);
    // A view into a larger buffer at an odd offset decodes too (KV values are such views).
    const padded = new Uint8Array(17);
    padded.set(bytes, 1);
    expect(decodeVector(padded.subarray(1))).toEqual(v);
    // Read in place only when the bytes own their whole buffer (on this little-endian host); a view into
    // a larger buffer (a socket chunk) is copied, so the vector does not keep the chunk alive.
    expect(decodeVector(padded.subarray(1))!.buffer).not.toBe(padded.buffer);
    const owned = Uint8Array.from(bytes);
    expect(decodeVector(owned)!.buffer).toBe(owned.buffer);
    const aligned = new Uint8Array(32);
    aligned.set(bytes, 16);
    expect(decodeVector(aligned.subarray(16))!.buffer).not.toBe(aligned.buffer);
    expect(decodeVector(new Uint8Array(0))).toBeUndefined();
    expect(decodeVector(new Uint8Array(6))).toBeUndefined();
  });

  it("bounds concurrency and keeps result order", async () => {
    let inFlight = 0;
    let peak = 0;
    const out = await mapBounded([5, 1, 4, 2, 3, 0], 2, async (n) => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      await new Promise((r) => setImmediate(r));
      inFlight--;
      return n * 10;
    });
    expect(out).toEqual([50, 10, 40, 20, 30, 0]);
    expect(peak).toBe(2);
  });

  it("names the bucket from the prefix", () => {
    expect(naming("acme").embeddingCacheBucket()).toBe("acme_embeddings");
  });
});

describe("OpenAI-compatible request logic", () => {
  it("accepts base URLs with or without /v1 and names the model by host", () => {
    expect(embeddingsEndpoint("http://127.0.0.1:11434").toString()).toBe("http://127.0.0.1:11434/v1/embeddings");
    expect(embeddingsEndpoint("https://api.openai.com/v1/").toString()).toBe("https://api.openai.com/v1/embeddings");
    expect(embeddingsEndpoint("http://gw.local/proxy").toString()).toBe("http://gw.local/proxy/v1/embeddings");
    expect(openAiModelId("http://127.0.0.1:11434", "nomic-embed-text")).toBe("openai:127.0.0.1:11434/nomic-embed-text");
    expect(openAiModelId("https://api.openai.com/v1", "text-embedding-3-small")).toBe("openai:api.openai.com/text-embedding-3-small");
  });

  it("refuses URLs that are not http(s)", async () => {
    expect(await codeOf(() => embeddingsEndpoint("not a url"))).toBe("invalid");
    expect(await codeOf(() => embeddingsEndpoint("ftp://x/"))).toBe("invalid");
  });

  it("retries rate limits and server errors only", () => {
    expect([429, 500, 502, 503, 408].every(isRetryableStatus)).toBe(true);
    expect([400, 401, 403, 404, 413, 422].some(isRetryableStatus)).toBe(false);
  });

  it("backs off exponentially with jitter, honours Retry-After, caps at the maximum", () => {
    const b = { initialBackoffMs: 100, maxBackoffMs: 1_000 };
    expect(backoffDelayMs(0, b, undefined, () => 1)).toBe(100);
    expect(backoffDelayMs(0, b, undefined, () => 0)).toBe(50);
    expect(backoffDelayMs(3, b, undefined, () => 1)).toBe(800);
    expect(backoffDelayMs(10, b, undefined, () => 1)).toBe(1_000);
    expect(backoffDelayMs(0, b, 700, () => 0)).toBe(700);
    expect(backoffDelayMs(0, b, 60_000, () => 0)).toBe(1_000);
    expect(parseRetryAfterMs("2", 0)).toBe(2_000);
    expect(parseRetryAfterMs(new Date(5_000).toUTCString(), 3_000)).toBe(2_000);
    expect(parseRetryAfterMs(null, 0)).toBeUndefined();
    expect(parseRetryAfterMs("soon", 0)).toBeUndefined();
  });

  it("orders rows by index and refuses a short or malformed answer as unavailable", async () => {
    const body = { data: [{ index: 1, embedding: [0, 1] }, { index: 0, embedding: [1, 0] }] };
    expect(parseEmbeddingsResponse(body, 2)).toEqual([[1, 0], [0, 1]]);
    expect(parseEmbeddingsResponse({ data: [{ embedding: [1] }, { embedding: [2] }] }, 2)).toEqual([[1], [2]]);
    expect(await codeOf(() => parseEmbeddingsResponse(body, 3))).toBe("unavailable");
    expect(await codeOf(() => parseEmbeddingsResponse({ data: [{ index: 0, embedding: [1] }, { index: 0, embedding: [1] }] }, 2))).toBe("unavailable");
    expect(await codeOf(() => parseEmbeddingsResponse({ error: "x" }, 1))).toBe("unavailable");
  });
});

describe("configuration", () => {
  it("defaults to the embedded USE-lite model", () => {
    expect(embedderConfigFromEnv({})).toEqual({ kind: "use-lite", batchSize: undefined });
    const embedder = embedderFromEnv({ MEMLEDGER_EMBED_BATCH_SIZE: "8" });
    expect(embedder).toBeInstanceOf(UseLiteEmbedder);
    expect((embedder as UseLiteEmbedder).batchSize).toBe(8);
    expect(embedder.modelId).toBe("use-lite-512@0.2.0");
  });

  it("builds an OpenAI-compatible embedder from the environment", () => {
    const embedder = embedderFromEnv({
      MEMLEDGER_EMBEDDER: "openai",
      MEMLEDGER_EMBED_URL: "http://127.0.0.1:11434",
      MEMLEDGER_EMBED_MODEL: "nomic-embed-text",
      MEMLEDGER_EMBED_API_KEY: "sk-test",
      MEMLEDGER_EMBED_BATCH_SIZE: "16",
      MEMLEDGER_EMBED_DIMENSIONS: "768",
    });
    expect(embedder).toBeInstanceOf(OpenAiCompatibleEmbedder);
    expect(embedder.modelId).toBe("openai:127.0.0.1:11434/nomic-embed-text");
    expect(embedder.dimensions).toBe(768);
    expect((embedder as OpenAiCompatibleEmbedder).batchSize).toBe(16);
  });

  it("refuses incomplete or unknown configurations as invalid, naming what to set", async () => {
    let message = "";
    try {
      embedderFromEnv({ MEMLEDGER_EMBEDDER: "openai" });
    } catch (err) {
      expect((err as MemledgerError).code).toBe("invalid");
      message = (err as Error).message;
    }
    expect(message).toMatch(/MEMLEDGER_EMBED_URL/);
    expect(await codeOf(() => embedderFromEnv({ MEMLEDGER_EMBEDDER: "bert" }))).toBe("invalid");
    expect(await codeOf(() => embedderFromConfig({ kind: "use-lite", batchSize: 0 }))).toBe("invalid");
    expect(await codeOf(() => embedderFromConfig({ kind: "openai", url: "file:///x", model: "m" }))).toBe("invalid");
  });
});
