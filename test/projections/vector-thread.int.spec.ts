import { access, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { IndexedMemory } from "../../projections/search/index.js";
import { VectorChannel } from "../../projections/search/index.js";
import { HnswVectorIndex } from "../../projections/vectors/hnsw-vectors.js";
import { CachedEmbedder, KvVectorStore } from "../../services/embeddings/cache.js";
import type { Embedder } from "../../services/embeddings/embedder.js";
import { connectNats } from "../../services/nats.js";
import type { SearchDescription } from "../../services/search-definition.js";
import { ThreadedVectorSink } from "../../services/vector-thread.js";
import { NATS_URL, deleteStreams, uniquePrefix } from "../support/env.js";

const APP = "vtapp";
const EMBEDDER = pathToFileURL(path.resolve("test/support/word-hash-embedder.mjs")).href;
const wordHashEmbedder = async (): Promise<Embedder> =>
  ((await import(EMBEDDER)) as { wordHashEmbedder: (options?: object) => Embedder }).wordHashEmbedder();

const topics = ["payment webhook retries", "stripe invoice ledger", "redis cache timeouts", "deploy rollback schema", "idempotency keys"];
const view = (i: number, overrides: Partial<IndexedMemory> = {}): IndexedMemory => ({
  memoryId: `mem-${i}`,
  version: 1 + (i % 3),
  app: APP,
  scope: i % 4 === 0 ? "team:web" : "app",
  kind: "note",
  status: "active",
  title: `${topics[i % topics.length]} (${i})`,
  body: `What we learned about ${topics[i % topics.length]}, note ${i}.`,
  tags: i % 8 === 0 ? ["ops"] : [],
  paths: [],
  importance: 0,
  ...overrides,
});

/**
 * The vector channel of a fresh search index on a thread of its own (services/vector-thread.ts), against
 * the real NATS (the embedding cache) and a real worker thread: what it saves is what a channel on this
 * thread saves, a failure there comes back with its code and leaves nothing saved, and its thread ends.
 */
describe("a vector sink on a thread of its own", () => {
  let prefix: string;
  let nc: NatsConnection | undefined;
  let root: string;
  const open: ThreadedVectorSink[] = [];

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "memledger-vector-thread-"));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });
  afterEach(async () => {
    for (const sink of open.splice(0)) await sink.close();
    if (nc) {
      await deleteStreams(nc, prefix); // the embedding cache bucket (KV_<prefix>_embeddings)
      await nc.close();
      nc = undefined;
    }
  });

  const vectors = (options: object = {}, servers = NATS_URL): NonNullable<SearchDescription["vectors"]> => ({
    prefix,
    backend: { kind: "hnsw" },
    embedder: { kind: "module", module: EMBEDDER, factory: "wordHashEmbedder", options },
    nats: { servers },
  });
  const start = async (options: object = {}) => {
    const sink = await ThreadedVectorSink.start(vectors(options), { app: APP, generation: "g1" });
    open.push(sink);
    return sink;
  };
  /** Every point of a saved directory, as exact searches see them: ids and scores for a few queries. */
  const savedView = async (dir: string) => {
    const index = new HnswVectorIndex({ dimensions: 32 });
    const info = await index.load(dir);
    const embedder = await wordHashEmbedder();
    const answers = [];
    for (const query of ["payment webhook", "redis cache", "rollback schema"]) {
      const [vector] = await embedder.embed([query]);
      answers.push(await index.search(vector!, { k: 100 }));
    }
    const filtered = await index.search((await embedder.embed(["stripe ledger"]))[0]!, { k: 100, filter: { scope: "team:web", tags: ["ops"] } });
    await index.close();
    return { label: info.label, count: info.count, answers, filtered };
  };

  it("saves what a channel on this thread saves, through the same embedding cache, and its thread ends on close", async () => {
    prefix = uniquePrefix("vthr");
    nc = await connectNats({ servers: NATS_URL, name: `test-${prefix}` });
    const sink = await start();
    expect(sink.modelId).toBe("word-hash-module@32");
    const first = new Map(Array.from({ length: 40 }, (_, i) => [`mem-${i}`, view(i)] as const));
    // Then a revision, a removal and a blank text (kept out of the channel: it has no direction).
    const second = new Map<string, IndexedMemory | null>([
      ["mem-3", view(3, { title: "revised", body: "Revised after incident 3." })],
      ["mem-7", null],
      ["mem-50", view(50, { title: " ", body: " ", tags: [] })],
    ]);
    expect(await sink.write(first)).toEqual({ embedded: 40, upserted: 40, removed: 0 });
    expect(await sink.write(second)).toEqual({ embedded: 2, upserted: 1, removed: 2 });
    const there = path.join(root, "there");
    await sink.save(there, "the label");

    // The same changes through a channel here, over the bucket the thread filled: nothing embedded again.
    const model = await wordHashEmbedder();
    let embeddedHere = 0;
    const counting: Embedder = { ...model, modelId: model.modelId, dimensions: model.dimensions, embed: async (texts) => ((embeddedHere += texts.length), model.embed(texts)) };
    const here = new VectorChannel(new CachedEmbedder(counting, await KvVectorStore.open(nc!, prefix)), new HnswVectorIndex({ dimensions: 32 }));
    await here.write(first);
    await here.write(second);
    expect(embeddedHere).toBe(0);
    const hereDir = path.join(root, "here");
    await (here.index as HnswVectorIndex).save(hereDir, "the label");
    await here.index.close();

    const saved = await savedView(there);
    expect(saved.count).toBe(39);
    expect(saved.answers.every((hits) => hits.length === 39)).toBe(true);
    expect(saved.filtered.length).toBeGreaterThan(0);
    expect(saved).toEqual(await savedView(hereDir));

    await sink.close();
    await sink.close(); // idempotent
    await expect(sink.write(first)).rejects.toMatchObject({ name: "MemledgerError", code: "internal", message: "the vector thread has ended" });
  });

  it("a failure there comes back with its code and message; it fails every later call, nothing is saved, and close still ends the thread", async () => {
    prefix = uniquePrefix("vthf");
    nc = await connectNats({ servers: NATS_URL, name: `test-${prefix}` });
    const sink = await start({ failWith: "unavailable" });
    const write = sink.write(new Map([["mem-1", view(1)]]));
    await expect(write).rejects.toMatchObject({ name: "MemledgerError", code: "unavailable", message: "word-hash embedder refuses (unavailable)" });
    const dir = path.join(root, "failed");
    await expect(sink.save(dir, "label")).rejects.toMatchObject({ code: "unavailable" });
    await expect(access(dir)).rejects.toMatchObject({ code: "ENOENT" });
    await sink.close();
    await expect(sink.save(dir, "label")).rejects.toMatchObject({ message: "the vector thread has ended" });
  });

  it("bad input is refused with `invalid` and nothing of the write is stored", async () => {
    prefix = uniquePrefix("vthi");
    nc = await connectNats({ servers: NATS_URL, name: `test-${prefix}` });
    const sink = await start();
    // A scope the vector index refuses, beside a good memory: the whole write is refused.
    const bad = new Map([
      ["mem-1", view(1)],
      ["mem-2", view(2, { scope: "Not A Scope!" })],
    ]);
    await expect(sink.write(bad)).rejects.toMatchObject({ name: "MemledgerError", code: "invalid" });
    const dir = path.join(root, "invalid");
    await expect(sink.save(dir, "label")).rejects.toMatchObject({ code: "invalid" });
    await expect(access(dir)).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("a thread that cannot reach NATS fails to start with `unavailable`", async () => {
    prefix = uniquePrefix("vthn");
    const start = ThreadedVectorSink.start(vectors({}, "nats://127.0.0.1:1"), { app: APP, generation: "g1" });
    await expect(start).rejects.toMatchObject({ name: "MemledgerError", code: "unavailable" });
  });
});
