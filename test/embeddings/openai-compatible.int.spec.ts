import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createServer } from "node:net";
import { MemledgerError } from "../../schemas/errors.js";
import { dot, isZeroVector } from "../../services/embeddings/embedder.js";
import { OpenAiCompatibleEmbedder, type OpenAiCompatibleOptions } from "../../services/embeddings/openai-compatible.js";
import { hashVector, StandInEmbeddingServer } from "./support.js";

async function rejection(promise: Promise<unknown>): Promise<MemledgerError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(MemledgerError);
    return err as MemledgerError;
  }
  throw new Error("expected the call to fail");
}

describe("OpenAI-compatible embedder against a local stand-in service", () => {
  let server: StandInEmbeddingServer;
  beforeEach(async () => {
    server = await StandInEmbeddingServer.start(8);
  });
  afterEach(async () => {
    await server.stop();
  });

  // Tiny backoff so retries do not slow the suite; the delays themselves are not asserted.
  const make = (options: Partial<OpenAiCompatibleOptions> = {}) =>
    new OpenAiCompatibleEmbedder({ baseUrl: server.baseUrl, model: "stand-in-embed", initialBackoffMs: 1, maxBackoffMs: 5, ...options });

  it("splits into batches, keeps input order despite reordered rows, normalises, learns the width", async () => {
    const embedder = make({ batchSize: 3 });
    const texts = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"];
    const vectors = await embedder.embed(texts);

    expect(server.requests.map((r) => r.body.input)).toEqual([["alpha", "beta", "gamma"], ["delta", "epsilon", "zeta"], ["eta"]]);
    expect(server.requests.every((r) => r.method === "POST" && r.url === "/v1/embeddings" && r.body.model === "stand-in-embed")).toBe(true);
    expect(embedder.dimensions).toBe(8);
    expect(embedder.modelId).toBe(`openai:${new URL(server.baseUrl).host}/stand-in-embed`);
    texts.forEach((text, i) => {
      expect(dot(vectors[i]!, vectors[i]!)).toBeCloseTo(1, 5);
      expect(dot(vectors[i]!, hashVector(text, 8))).toBeGreaterThan(0.9999);
    });
  });

  it("sends the bearer key only when one is configured", async () => {
    await make({ apiKey: "sk-secret-1" }).embed(["with key"]);
    await make().embed(["without key"]);
    expect(server.requests[0]!.headers.authorization).toBe("Bearer sk-secret-1");
    expect(server.requests[1]!.headers.authorization).toBeUndefined();
  });

  it("retries a 500 and a 429, then succeeds with the same batch", async () => {
    server.script.push({ status: 500, body: { error: "boom" } }, { status: 429, body: { error: "slow down" }, headers: { "retry-after": "0" } });
    const vectors = await make().embed(["one", "two"]);
    expect(server.requests).toHaveLength(3);
    expect(server.requests.map((r) => r.body.input)).toEqual([["one", "two"], ["one", "two"], ["one", "two"]]);
    expect(dot(vectors[1]!, hashVector("two", 8))).toBeGreaterThan(0.9999);
  });

  it("gives up after maxRetries with a retryable unavailable error that says what happened", async () => {
    for (let i = 0; i < 3; i++) server.script.push({ status: 503, body: { error: "overloaded" } });
    const err = await rejection(make({ maxRetries: 2 }).embed(["x"]));
    expect(err.code).toBe("unavailable");
    expect(err.message).toMatch(/failed 3 times; last: HTTP 503/);
    expect(err.message).toContain(server.baseUrl);
    expect(err.details.retryable).toBe(true);
    expect(server.requests).toHaveLength(3);
  });

  it("turns a 400 into an invalid error at once, without retrying", async () => {
    server.script.push({ status: 400, body: { error: { message: "input is too long for this model" } } });
    const err = await rejection(make().embed(["a very long text"]));
    expect(err.code).toBe("invalid");
    expect(err.message).toMatch(/HTTP 400.*too long/);
    expect(err.details).toMatchObject({ status: 400, retryable: false });
    expect(server.requests).toHaveLength(1);
  });

  it("turns a 401 into a non-retryable unavailable error that points at the API key, and never prints the key", async () => {
    server.script.push({ status: 401, body: { error: "bad key" } });
    const err = await rejection(make({ apiKey: "sk-do-not-print" }).embed(["x"]));
    expect(err.code).toBe("unavailable");
    expect(err.message).toMatch(/MEMLEDGER_EMBED_API_KEY/);
    expect(JSON.stringify(err.toJSON())).not.toContain("sk-do-not-print");
    expect(server.requests).toHaveLength(1);
  });

  it("refuses an answer with a row missing as unavailable rather than shifting vectors", async () => {
    server.script.push({ status: 200, body: { data: [{ index: 0, embedding: [1, 2, 3, 4, 5, 6, 7, 8] }] } });
    const err = await rejection(make().embed(["a", "b"]));
    expect(err.code).toBe("unavailable");
    expect(err.message).toMatch(/1 vectors for 2 texts/);
  });

  it("refuses vectors whose width differs from the configured one", async () => {
    const err = await rejection(make({ dimensions: 1536 }).embed(["a"]));
    expect(err.code).toBe("invalid");
    expect(err.message).toMatch(/8-dimensional.*1536/);
  });

  it("never sends blank texts, and sizes their zero vectors by probing when the width is unknown", async () => {
    const embedder = make();
    const mixed = await embedder.embed(["", "real text", " "]);
    expect(server.requests.map((r) => r.body.input)).toEqual([["real text"]]);
    expect(mixed.map((v) => v.length)).toEqual([8, 8, 8]);
    expect([isZeroVector(mixed[0]!), isZeroVector(mixed[1]!), isZeroVector(mixed[2]!)]).toEqual([true, false, true]);

    const fresh = make();
    expect(() => fresh.dimensions).toThrow(/not known before its first response/);
    const blanks = await fresh.embed(["", "\t"]);
    expect(blanks).toEqual([new Float32Array(8), new Float32Array(8)]);
    expect(server.requests.at(-1)!.body.input).toEqual(["dimension probe"]);
    expect(fresh.dimensions).toBe(8);
  });

  it("reports a closed port as unavailable after retrying", async () => {
    // A port that was free a moment ago: nothing listens there.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const port = (probe.address() as { port: number }).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const embedder = new OpenAiCompatibleEmbedder({ baseUrl: `http://127.0.0.1:${port}`, model: "m", maxRetries: 1, initialBackoffMs: 1 });
    const err = await rejection(embedder.embed(["x"]));
    expect(err.code).toBe("unavailable");
    expect(err.message).toMatch(/failed 2 times; last: .*ECONNREFUSED/);
  });

  it("times out a hung request and reports it as unavailable", async () => {
    // A server that accepts connections and never answers.
    const sockets = new Set<import("node:net").Socket>();
    const hung = createServer((socket) => sockets.add(socket));
    await new Promise<void>((resolve) => hung.listen(0, "127.0.0.1", resolve));
    try {
      const port = (hung.address() as { port: number }).port;
      const embedder = new OpenAiCompatibleEmbedder({ baseUrl: `http://127.0.0.1:${port}`, model: "m", timeoutMs: 200, maxRetries: 0 });
      const err = await rejection(embedder.embed(["x"]));
      expect(err.code).toBe("unavailable");
      expect(err.message).toMatch(/no answer within 200 ms/);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => hung.close(() => resolve()));
    }
  });
});
