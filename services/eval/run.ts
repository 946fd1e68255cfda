import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { isStreamOfPrefix, naming, Prefix } from "../../events/subjects.js";
import { retrieve, searchProjection, vectorSetup, type RetrievalMode, type SearchIndex } from "../../projections/search/index.js";
import type { VectorBackendConfig } from "../../projections/vectors/backend.js";
import { internal, invalid, unavailable } from "../../schemas/errors.js";
import { MemoryClient } from "../client.js";
import { CommandService } from "../command-service.js";
import { cachedEmbedder, mapBounded, type CachedEmbedder } from "../embeddings/cache.js";
import type { Embedder } from "../embeddings/embedder.js";
import { EventStore } from "../event-store.js";
import { connectNats, isStreamNotFound } from "../nats.js";
import { ProjectionRunner } from "../projection-runner.js";
import { memoryOfDoc, memoryScopeOf, scopeMapping, type Dataset, type DocContextOptions } from "./dataset.js";
import { aggregate, scoreQuery, type Aggregate, type EvaluatedQuery } from "./metrics.js";

/**
 * `memledger eval`: loads a corpus as memories through the real pipeline, searches each query within its
 * scope and scores the rankings against the qrels.
 *
 *   1. A temporary ledger: a fresh prefix (`mleval<hex>`) with its own command service in this process.
 *   2. Each doc is proposed (keyed by its doc id, so a retried proposal is the same memory and one event)
 *      and approved, through MemoryClient requests to that service: commands, deciders, events on JetStream.
 *   3. The search projection (BM25 and, for vector modes, the vector channel behind the embedding cache)
 *      runs in a ProjectionRunner over the app stream until it has applied the last event.
 *   4. Every query is retrieved from the live index with `scope = team:<its scope value>` per mode, and
 *      the memory ids mapped back to doc ids (the proposal replies give memoryId per key).
 *   5. The temporary prefix is removed: its streams, its KV buckets, the snapshot directory. The
 *      embedding cache lives under `cachePrefix` instead (default kept: vectors are keyed by model and
 *      text, so a re-run reads them instead of calling the model); with `keepCache: false` it is put under
 *      the temporary prefix and removed with it.
 */

export type EvalMode = RetrievalMode;

export interface EvalOptions {
  /** NATS URL(s); default NATS_URL, then nats://127.0.0.1:4222. */
  servers?: string | undefined;
  modes: readonly EvalMode[];
  /** Results retrieved per query: max(k, 10), so recall@10 and nDCG@10 are always defined. */
  k?: number;
  excludeCategories?: readonly string[];
  /** Keep embeddings in `<cachePrefix>_embeddings` across runs (default true). */
  keepCache?: boolean;
  /** Whose embedding cache bucket to use when keeping it. */
  cachePrefix?: string;
  /** The model; default the USE-lite embedder, as `up` by default (only built when a mode needs vectors). */
  embedder?: Embedder | (() => Embedder);
  /** Where vectors live during the run; default embedded Orama (exact search, nothing to clean up). */
  vectors?: VectorBackendConfig;
  context?: DocContextOptions;
  /** Fusion parameters passed to retrieve(). */
  rrfK?: number | undefined;
  weights?: { bm25?: number; vector?: number } | undefined;
  /** Commands in flight while loading. */
  concurrency?: number;
  /** Progress lines (stderr in the CLI). */
  onProgress?: (line: string) => void;
  /** Test hook: the temporary prefix's name, told before anything is created. */
  onPrefix?: (prefix: string) => void;
}

export interface ModeReport extends Aggregate {
  /** Queries with no relevant doc in the qrels: not scored. */
  skipped: number;
}

export interface EvalResult {
  /** mode → metrics; what `--json` prints. */
  report: Record<string, ModeReport>;
  timings: { loadSeconds: number; projectSeconds: number; searchSeconds: Record<string, number>; totalSeconds: number };
  docs: number;
  queries: number;
  embedding: { hits: number; misses: number } | null;
}

export const EVAL_APP = "eval";
const LOADER = "agent:eval-loader";
const REVIEWER = "human:eval-reviewer";

const seconds = (since: number): number => (performance.now() - since) / 1000;

/** Deletes every stream of a prefix: event streams, KV buckets and object stores (isStreamOfPrefix). */
export async function removePrefix(nc: NatsConnection, prefix: string): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const doomed: string[] = [];
  for await (const name of jsm.streams.names()) {
    if (isStreamOfPrefix(prefix, name)) doomed.push(name);
  }
  for (const name of doomed) {
    // Gone already is fine: on a signal the interrupted run's own cleanup may race this one.
    await jsm.streams.delete(name).catch((err: unknown) => {
      if (!isStreamNotFound(err)) throw err;
    });
  }
}

export async function runEval(dataset: Dataset, options: EvalOptions): Promise<EvalResult> {
  const started = performance.now();
  if (options.modes.length === 0) throw invalid("no mode to evaluate");
  const k = Math.max(options.k ?? 10, 10);
  const keepCache = options.keepCache ?? true;
  const cachePrefix = options.cachePrefix ?? "memledger_eval";
  if (keepCache && !Prefix.safeParse(cachePrefix).success) throw invalid(`bad cache prefix '${cachePrefix}'`);
  const needsVectors = options.modes.some((mode) => mode !== "bm25");
  const progress = options.onProgress ?? (() => undefined);
  const scopes = scopeMapping([...dataset.corpus.map((d) => d.scope), ...dataset.queries.map((q) => q.scope)]);

  const prefix = `mleval${randomBytes(5).toString("hex")}`;
  options.onPrefix?.(prefix);
  progress(`temporary prefix ${prefix} (removed at the end)`);
  const nc = await connectNats({ servers: options.servers, name: `memledger-eval-${prefix}`, reconnect: false });
  const dir = await mkdtemp(join(tmpdir(), "memledger-eval-"));
  // Interrupted (Ctrl-C, a CI timeout): still remove the temporary prefix before exiting.
  let service: CommandService | undefined;
  let runner: ProjectionRunner | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    progress(`${signal}: removing ${prefix}`);
    // Stop writing first: a command still in flight must not land after its stream was deleted.
    void (async () => {
      await service?.stop().catch(() => undefined);
      await runner?.stop().catch(() => undefined);
      await removePrefix(nc, prefix).catch((err: unknown) => progress(`cleanup of ${prefix}: ${(err as Error).message}`));
      await rm(dir, { recursive: true, force: true });
    })().finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  let embedder: CachedEmbedder | undefined;
  try {
    service = await CommandService.start(nc, { prefix, onError: (err) => progress(`command service: ${(err as Error).message}`) });
    const store = await EventStore.open(nc, naming(prefix));
    const stream = await store.ensureAppStream(EVAL_APP);

    // 2. Load: propose (keyed by doc id) then approve, `concurrency` docs in flight.
    const loadStarted = performance.now();
    const loader = new MemoryClient(nc, { app: EVAL_APP, as: LOADER, prefix, timeoutMs: 60_000 });
    const reviewer = new MemoryClient(nc, { app: EVAL_APP, as: REVIEWER, prefix, timeoutMs: 60_000 });
    const previous = new Map<string, string[]>();
    const memories = dataset.corpus.map((doc) => {
      const earlier = previous.get(doc.scope) ?? [];
      const memory = memoryOfDoc(doc, scopes.get(doc.scope)!, options.context, earlier);
      earlier.push(doc.text);
      if (earlier.length > 8) earlier.shift();
      previous.set(doc.scope, earlier);
      return memory;
    });
    const docOfMemory = new Map<string, string>();
    let loaded = 0;
    await mapBounded(memories, options.concurrency ?? 64, async (memory) => {
      const proposed = await loader.propose({ key: memory.key, title: memory.title, body: memory.body, scope: memory.scope as `team:${string}`, kind: "note" });
      docOfMemory.set(proposed.memoryId, memory.key);
      await reviewer.approve(proposed.memoryId, { key: "approve" });
      if (++loaded % 1000 === 0) progress(`loaded ${loaded}/${memories.length} docs`);
    });
    const loadSeconds = seconds(loadStarted);
    progress(`loaded ${memories.length} docs as memories in ${loadSeconds.toFixed(1)} s`);

    // 3. Project: the search projection (with its vector channel) until it has applied the last event.
    const projectStarted = performance.now();
    if (needsVectors) {
      const inner = typeof options.embedder === "function" ? options.embedder() : options.embedder ?? (await defaultEmbedder());
      embedder = await cachedEmbedder(nc, keepCache ? cachePrefix : prefix, inner);
    }
    const search = searchProjection({
      dir,
      snapshotEveryEvents: Number.MAX_SAFE_INTEGER,
      snapshotIntervalMs: Number.MAX_SAFE_INTEGER,
      vectors: embedder ? vectorSetup({ embedder, prefix, backend: options.vectors ?? { kind: "orama" } }) : undefined,
    });
    runner = new ProjectionRunner(store, search, { prefix, app: EVAL_APP, stream }, {
      batchSize: 1000,
      onError: (err) => progress(`search projection: ${(err as Error).message}`),
    });
    await runner.start();
    const last = await store.lastSeq(stream);
    const ticker = setInterval(() => progress(`projected ${runner!.position}/${last} events`), 10_000);
    try {
      if (!(await runner.waitFor(last, 60 * 60_000))) throw unavailable(`the search projection did not reach seq ${last}`);
    } finally {
      clearInterval(ticker);
    }
    const projectSeconds = seconds(projectStarted);
    progress(`projected ${last} events in ${projectSeconds.toFixed(1)} s`);
    const index = search.index(EVAL_APP);
    if (!index) throw internal("the search projection opened no index for the eval app");
    if (index.indexedCount !== memories.length) throw internal(`${index.indexedCount} memories indexed, expected ${memories.length}`);

    // 4. Search and score.
    const scored = dataset.queries.filter((q) => (dataset.qrels.get(q.id)?.size ?? 0) > 0);
    const skipped = dataset.queries.length - scored.length;
    // One batched embedder call for every query (the model is far faster batched); retrieve() then reads them from the cache.
    if (embedder) await embedder.embed(scored.map((q) => q.text));
    const report: Record<string, ModeReport> = {};
    const searchSeconds: Record<string, number> = {};
    for (const mode of options.modes) {
      const searchStarted = performance.now();
      const evaluated: EvaluatedQuery[] = [];
      for (const query of scored) {
        const ranked = await rankDocs(index, query.text, scopes.get(query.scope) ?? memoryScopeOf(query.scope), mode, k, options, docOfMemory);
        evaluated.push({ category: query.category, scores: scoreQuery(ranked, dataset.qrels.get(query.id)!) });
      }
      searchSeconds[mode] = seconds(searchStarted);
      report[mode] = { ...aggregate(evaluated, options.excludeCategories ?? []), skipped };
      progress(`${mode}: ${scored.length} queries in ${searchSeconds[mode].toFixed(1)} s`);
    }
    const stats = embedder?.stats();
    return {
      report,
      timings: { loadSeconds, projectSeconds, searchSeconds, totalSeconds: seconds(started) },
      docs: memories.length,
      queries: scored.length,
      embedding: stats ? { hits: stats.hits, misses: stats.misses } : null,
    };
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await runner?.stop().catch(() => undefined);
    await service?.stop().catch(() => undefined);
    await removePrefix(nc, prefix).catch((err: unknown) => progress(`cleanup of ${prefix}: ${(err as Error).message}`));
    await nc.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

async function rankDocs(
  index: SearchIndex,
  query: string,
  scope: string,
  mode: EvalMode,
  k: number,
  options: EvalOptions,
  docOfMemory: ReadonlyMap<string, string>,
): Promise<string[]> {
  const hits = await retrieve(index, query, {
    k,
    mode,
    scope,
    ...(options.rrfK !== undefined ? { rrfK: options.rrfK } : {}),
    ...(options.weights ? { weights: options.weights } : {}),
  });
  return hits.map((hit) => docOfMemory.get(hit.memoryId) ?? `memory:${hit.memoryId}`);
}

async function defaultEmbedder(): Promise<Embedder> {
  const { embedderFromEnv } = await import("../embeddings/config.js");
  return embedderFromEnv();
}
