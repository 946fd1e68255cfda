import type { NatsConnection } from "@nats-io/transport-node";
import { portableDefinition } from "../projections/portable.js";
import { searchProjection, vectorSetup, type SearchProjection, type VectorSetup } from "../projections/search/index.js";
import type { VectorBackendConfig } from "../projections/vectors/backend.js";
import { internal } from "../schemas/errors.js";
import type { EmbedderConfig } from "./embeddings/config.js";
import type { Embedder } from "./embeddings/embedder.js";
import { connectNats, type ConnectOptions } from "./nats.js";

/**
 * The search projection described as plain data, so that a rebuild can make the same definition again
 * in a worker thread (projections/portable.ts) and fold and index there, on a core of its own, while
 * the reading thread only reads the log (services/rebuild-threads.ts).
 *
 * The description is the one source of the definition: `openReadModels` builds its search projection
 * from it here, and the worker from the same object there. What cannot cross a thread (a connection, an
 * embedder object handed in by a caller) stays out of it: a definition that needs one of those is not
 * portable and is rebuilt on the caller's thread, as before.
 */

/** An embedder made by calling `factory(options)` of the ES module `module` (tests and benchmarks: a deterministic stand-in for a model). */
export interface EmbedderModule {
  kind: "module";
  module: string;
  factory: string;
  options?: unknown;
}

export interface SearchDescription {
  /** Where snapshots live (SearchProjectionOptions.dir). */
  dir: string;
  /** The vector channel; absent: BM25 only. */
  vectors?: {
    /** Names the embedding cache's KV bucket (`<prefix>_embeddings`) and Qdrant collections. */
    prefix: string;
    backend: VectorBackendConfig;
    embedder: EmbedderConfig | EmbedderModule;
    /**
     * How a thread without the caller's connection reaches NATS for the embedding cache. Absent: the
     * definition is not portable (the caller's connection options are not known here).
     */
    nats?: ConnectOptions;
  };
}

/** What the calling thread already holds; each one given keeps the definition on this thread. */
export interface SearchResources {
  /** The connection for the embedding cache; without it one is opened from `vectors.nats` on first use. */
  nc?: NatsConnection;
  /** The model, instead of the one the description names. */
  embedder?: Embedder;
}

async function embedderOf(described: EmbedderConfig | EmbedderModule): Promise<Embedder> {
  if (described.kind === "module") {
    const module = (await import(described.module)) as Record<string, (options: unknown) => Embedder>;
    const factory = module[described.factory];
    if (typeof factory !== "function") throw internal(`${described.module} exports no function ${described.factory}`);
    return factory(described.options);
  }
  // Imported on first use: a BM25-only rebuild worker never loads the embedders' modules.
  const { embedderFromConfig } = await import("./embeddings/config.js");
  return embedderFromConfig(described);
}

/**
 * The vector setup a description names: the embedder behind the prefix's embedding cache, and the
 * backend. Also what `memledger search` opens for its query vectors (read-models.ts, searchVectorSetup).
 */
export async function openVectorSetup(vectors: NonNullable<SearchDescription["vectors"]>, resources: SearchResources): Promise<VectorSetup> {
  const inner = resources.embedder ?? (await embedderOf(vectors.embedder));
  let nc = resources.nc;
  if (!nc) {
    if (!vectors.nats) throw internal("search vectors: no NATS connection and no connection options for the embedding cache");
    // This thread's own connection (a rebuild worker's): it lives as long as the thread does.
    nc = await connectNats({ ...vectors.nats, name: "memledger-search-rebuild" });
  }
  const { cachedEmbedder } = await import("./embeddings/cache.js");
  return vectorSetup({ embedder: await cachedEmbedder(nc, vectors.prefix, inner), prefix: vectors.prefix, backend: vectors.backend });
}

/** Whether a worker thread can make the same definition from the description alone. */
const isPortable = (description: SearchDescription, resources: SearchResources): boolean =>
  resources.embedder === undefined && (description.vectors === undefined || description.vectors.nats !== undefined);


/**
 * The search projection a description names, portable when the description is all it needs (a rebuild
 * worker then makes it with {@link searchForRebuildWorker}).
 */
export function searchFromDescription(description: SearchDescription, resources: SearchResources = {}): SearchProjection {
  const { vectors } = description;
  return searchProjection({
    dir: description.dir,
    vectors: vectors ? () => openVectorSetup(vectors, resources) : undefined,
    portable: isPortable(description, resources) ? portableDefinition(import.meta.url, "searchForRebuildWorker", description) : undefined,
  });
}

/**
 * The same definition, as a rebuild worker makes it from the description alone. Its fresh target is
 * promoted there and served by another thread (which loads the snapshot), so nothing searches its
 * vectors meanwhile: they are written on a thread of their own (vector-thread.ts) while the worker
 * indexes BM25, instead of after it.
 */
export function searchForRebuildWorker(description: SearchDescription): SearchProjection {
  const { vectors } = description;
  return searchProjection({
    dir: description.dir,
    vectors: vectors ? () => openVectorSetup(vectors, {}) : undefined,
    freshVectors: vectors ? async (at) => (await import("./vector-thread.js")).ThreadedVectorSink.start(vectors, at) : undefined,
  });
}
