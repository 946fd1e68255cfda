import { access, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { naming } from "../../events/subjects.js";
import { encodeEvent } from "../../events/upcast.js";
import type { ProjectionScope } from "../../projections/projection.js";
import { openSearchIndex, searchMemories, vectorSetup, type SearchIndex } from "../../projections/search/index.js";
import { CachedEmbedder, KvVectorStore } from "../../services/embeddings/cache.js";
import type { Embedder } from "../../services/embeddings/embedder.js";
import { EventStore } from "../../services/event-store.js";
import { connectNats } from "../../services/nats.js";
import { rebuildProjections } from "../../services/projection-runner.js";
import { THREADS_FROM_EVENTS, canRebuildInThread } from "../../services/rebuild-threads.js";
import { searchFromDescription, type SearchDescription } from "../../services/search-definition.js";
import { EventLog } from "../search/events.js";
import { NATS_URL, deleteStreams, uniquePrefix } from "../support/env.js";

const APP = "swapp";
const EMBEDDER = pathToFileURL(path.resolve("test/support/word-hash-embedder.mjs")).href;

interface EmbedderModule {
  wordHashEmbedder: (options?: { dimensions?: number; failWith?: string }) => Embedder;
  embeddedTexts: () => number;
}
const embedderModule = async () => (await import(EMBEDDER)) as EmbedderModule;

/** Memories written, revised, rejected, superseded and rolled back, in two scopes. */
function history(): EventLog {
  const log = new EventLog(APP);
  const topics = ["payment webhook retries", "stripe invoice ledger", "redis cache timeouts", "deploy rollback schema", "idempotency keys"];
  for (let i = 0; i < 60; i++) {
    const id = `mem-${i}`;
    const topic = topics[i % topics.length]!;
    log.write(id, { title: `${topic} (${i})`, body: `What we learned about ${topic}, note ${i}.`, scope: i % 4 === 0 ? "team:web" : "app" });
    if (i % 3 === 0) log.write(id, { title: `${topic}, revised (${i})`, body: `Revised: ${topic} after incident ${i}.` });
    if (i % 7 === 0) log.reject(id, log.propose(id, { title: `rejected idea ${i}`, body: "never approved" }));
    if (i % 11 === 0) log.supersede(id);
    if (i % 13 === 5 && i % 3 === 0) log.rollback(id, 2, 1);
  }
  return log;
}

describe("the search projection rebuilt on a worker thread", () => {
  let prefix: string;
  let nc: NatsConnection;
  let store: EventStore;
  let root: string;
  let scope: ProjectionScope;
  let last: number;

  beforeEach(async () => {
    prefix = uniquePrefix("srwk");
    nc = await connectNats({ servers: NATS_URL, name: `test-${prefix}` });
    store = await EventStore.open(nc, naming(prefix));
    root = await mkdtemp(path.join(tmpdir(), "memledger-search-worker-"));
    const stream = await store.ensureAppStream(APP);
    scope = { prefix, app: APP, stream };
    const names = naming(prefix);
    for (const { event } of history().events) await store.js.publish(names.aggregate(APP, "memory", event.aggregateId), encodeEvent(event));
    last = await store.lastSeq(stream);
  });

  afterEach(async () => {
    await deleteStreams(nc, prefix); // the stream and the embedding cache bucket (KV_<prefix>_embeddings)
    await nc.close();
    await rm(root, { recursive: true, force: true });
  });

  /** As `memledger rebuild` describes it: the embedder by module, NATS by connection options. */
  const description = (dir: string, failWith?: string): SearchDescription => ({
    dir: path.join(root, dir),
    vectors: {
      prefix,
      backend: { kind: "hnsw" },
      embedder: { kind: "module", module: EMBEDDER, factory: "wordHashEmbedder", options: failWith ? { failWith } : {} },
      nats: { servers: NATS_URL },
    },
  });

  /** What a reader of `dir` finds: BM25 hits and nearest vectors for a few queries, over the promoted snapshot. */
  async function readerView(dir: string) {
    const { wordHashEmbedder } = await embedderModule();
    const embedder = wordHashEmbedder();
    const index: SearchIndex = await openSearchIndex(path.join(root, dir), APP, {
      vectors: vectorSetup({ embedder: new CachedEmbedder(embedder, await KvVectorStore.open(nc, prefix)), prefix, backend: { kind: "hnsw" } }),
    });
    const hits = [];
    for (const query of ["payment webhook", "stripe ledger", "rollback schema", "revised incident", "redis cache timeouts"]) {
      const [vector] = await embedder.embed([query]);
      hits.push({
        query,
        bm25: searchMemories(index, query, { k: 10 }).map((h) => [h.memoryId, h.version, h.score.toFixed(9)]),
        nearest: (await index.vectors!.search(vector!, {}, 10)).map((h) => [h.memoryId, h.score.toFixed(6)]),
      });
    }
    return { seq: index.appliedSeq, indexed: index.indexedCount, vectors: await index.vectors!.count(), hits };
  }

  it("gives readers the same BM25 hits and vectors as a rebuild on this thread, through the same embedding cache", async () => {
    const threaded = searchFromDescription(description("threaded"));
    expect(canRebuildInThread(threaded)).toBe(true);
    // This test's stream is short: on a worker whatever its length.
    const result = await rebuildProjections(store, [threaded], scope, { batchSize: 20, threadsFromEvents: 0 });
    expect(result).toMatchObject({ seq: last, events: last });
    // Promoted in the worker: no index was opened in this thread, the snapshot and CURRENT are on disk.
    expect(threaded.index(APP)).toBeUndefined();

    const { embeddedTexts } = await embedderModule();
    const before = embeddedTexts();
    const here = searchFromDescription(description("here"), { nc });
    await rebuildProjections(store, [here], scope, { batchSize: 20, threads: false });
    // Every text was found in the cache the worker filled: the worker embedded into the same bucket.
    expect(embeddedTexts()).toBe(before);

    const view = await readerView("threaded");
    expect(view.seq).toBe(last);
    expect(view.indexed).toBeGreaterThan(40);
    expect(view.vectors).toBe(view.indexed);
    expect(view.hits.every((h) => h.bm25.length > 0 && h.nearest.length > 0)).toBe(true);
    expect(view).toEqual(await readerView("here"));
  });

  it("a failure in the worker (the model refuses, or no such embedder) fails the rebuild with its code, and no generation is made current", async () => {
    const failing = searchFromDescription(description("failing", "unavailable"));
    expect(canRebuildInThread(failing)).toBe(true);
    const rebuild = rebuildProjections(store, [failing], scope, { threadsFromEvents: 0 });
    await expect(rebuild).rejects.toMatchObject({ name: "MemledgerError", code: "unavailable" });
    await expect(rebuild).rejects.toThrow("search (rebuilt on a worker thread): word-hash embedder refuses (unavailable)");
    await expect(access(path.join(root, "failing", APP, "CURRENT"))).rejects.toMatchObject({ code: "ENOENT" });

    // An embedder module that does not export the factory named: the same, said with both names.
    const base = description("nofactory");
    const misnamed = searchFromDescription({ ...base, vectors: { ...base.vectors!, embedder: { kind: "module", module: EMBEDDER, factory: "noSuchEmbedder" } } });
    const refused = rebuildProjections(store, [misnamed], scope, { threadsFromEvents: 0 });
    await expect(refused).rejects.toMatchObject({ name: "MemledgerError", code: "internal" });
    await expect(refused).rejects.toThrow(`${EMBEDDER} exports no function noSuchEmbedder`);
    await expect(access(path.join(root, "nofactory", APP, "CURRENT"))).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("is rebuilt on this thread while a reader here queries its live index, and when the description needs this thread", async () => {
    const live = searchFromDescription({ dir: path.join(root, "live") });
    expect(canRebuildInThread(live)).toBe(true);
    const target = await live.openLive(scope);
    try {
      // A promote on a worker would leave this thread's readers on the old index.
      expect(live.portable).toBeUndefined();
      expect(canRebuildInThread(live)).toBe(false);
    } finally {
      await target.close();
    }

    const { wordHashEmbedder } = await embedderModule();
    // An embedder object cannot cross to another thread; without connection options the worker could not reach NATS.
    expect(searchFromDescription(description("object"), { embedder: wordHashEmbedder() }).portable).toBeUndefined();
    const { nats: _nats, ...withoutConnection } = description("noconn").vectors!;
    expect(searchFromDescription({ dir: path.join(root, "noconn"), vectors: withoutConnection }, { nc }).portable).toBeUndefined();
    // BM25 only needs nothing but the directory.
    const bm25 = searchFromDescription({ dir: path.join(root, "bm25") });
    expect(bm25.portable).toMatchObject({ factory: "searchForRebuildWorker", options: { dir: path.join(root, "bm25") } });
    // By default a short stream keeps search on the reading thread: a worker's start-up costs more than it earns there.
    expect(canRebuildInThread(bm25, THREADS_FROM_EVENTS - 1)).toBe(false);
    expect(canRebuildInThread(bm25, THREADS_FROM_EVENTS)).toBe(true);
  });

  it("a short stream's rebuild keeps search on this thread by default, and gives the same index", async () => {
    const { embeddedTexts } = await embedderModule();
    const onThisThread = searchFromDescription(description("default"));
    const before = embeddedTexts();
    await rebuildProjections(store, [onThisThread], scope);
    // This thread's embedder module embedded every active memory (a fresh cache bucket): the fold ran here.
    expect(embeddedTexts() - before).toBeGreaterThan(40);
    // Promoted here: readers in this process get the index at once.
    expect(onThisThread.index(APP)?.appliedSeq).toBe(last);
    const threaded = searchFromDescription(description("threaded"));
    await rebuildProjections(store, [threaded], scope, { threadsFromEvents: 0 });
    expect(await readerView("default")).toEqual(await readerView("threaded"));
  });
});
