import type { Embedder } from "../embedder.js";
import { isZeroVector } from "../embedder.js";
import { MAX_SEARCH_K, isPersistentVectorIndex, type VectorFilter, type VectorIndex, type VectorPoint } from "../vectors/vector-index.js";
import type { ChannelHit } from "./fulltext-channel.js";
import type { IndexedMemory } from "./memory-records.js";
import { asList, type RetrievalFilter } from "./retrieval-filter.js";

/**
 * The semantic channel: one vector per active memory (the embedding of its active version's text) in
 * a VectorIndex, beside the BM25 channel and fed by the same index changes.
 *
 * Embedding is the slow step (USE-lite: about 10 notes of 70 words a second), so the channel never
 * embeds one memory at a time: the search index collects the changes of a whole applied batch and
 * `write` embeds every upserted text in one embedder call. The embedder is meant to be a
 * CachedEmbedder, so a text already embedded (by an earlier generation, another process, a rebuild)
 * costs a KV read, not a model call.
 */

/** What is embedded for a memory: everything a reader might describe it by. */
export function embeddingTextOf(memory: Pick<IndexedMemory, "title" | "body" | "tags" | "paths">): string {
  return [memory.title, memory.body, memory.tags.join(" "), memory.paths.join(" ")].filter((part) => part.trim().length > 0).join("\n\n");
}

/** The vector-index filter for the fields it evaluates exactly; the rest is checked on the candidates. */
export function vectorFilterOf(filter: RetrievalFilter): VectorFilter | undefined {
  const pushed: VectorFilter = {};
  if (filter.app !== undefined) pushed.app = filter.app;
  const scopes = asList(filter.scope);
  if (scopes && scopes.length > 0) pushed.scope = [...scopes];
  const kinds = asList(filter.kind);
  if (kinds && kinds.length > 0) pushed.kind = [...kinds] as VectorFilter["kind"] & string[];
  if (filter.status !== undefined) pushed.status = filter.status;
  return Object.keys(pushed).length > 0 ? pushed : undefined;
}

/** What to do with each memory whose indexed version changed in a batch: its new view, or null to remove it. */
export type VectorChanges = ReadonlyMap<string, IndexedMemory | null>;

export interface VectorWriteStats {
  /** Texts handed to the embedder (a CachedEmbedder answers most from its cache). */
  embedded: number;
  upserted: number;
  removed: number;
}

/**
 * Where a fresh search index sends its vector changes when they are written elsewhere than on its own
 * thread (services/vector-thread.ts: a thread of their own, so that a rebuild's vectors are read and
 * stored while this thread indexes BM25), instead of a VectorChannel. Nothing searches through it: the
 * index is promoted in a thread that serves no reader, and whoever serves it loads the vectors `save`
 * wrote beside its snapshot.
 */
export interface VectorSink {
  readonly modelId: string;
  /** As VectorChannel.write: resolves once every change is in the index, rejects with what failed. */
  write(changes: VectorChanges): Promise<VectorWriteStats>;
  /** Writes the vectors to `dir`, labelled, as a persistent vector index saves (nothing for an external one). */
  save(dir: string, label: string): Promise<void>;
  close(): Promise<void>;
}

/** Points per vector-index upsert while a write's vectors arrive. */
const UPSERT_CHUNK = 1024;

export class VectorChannel {
  constructor(
    readonly embedder: Embedder,
    readonly index: VectorIndex,
  ) {}

  get modelId(): string {
    return this.embedder.modelId;
  }

  /** Saves with the projection's snapshot when the index lives in this process (Orama, HNSW); Qdrant persists itself. */
  get persistent(): boolean {
    return isPersistentVectorIndex(this.index);
  }

  async count(): Promise<number> {
    return this.index.count();
  }

  /**
   * Applies one batch's net changes: every upserted text embedded in a single embedder call, written to
   * the index as the vectors come when the embedder hands them over one at a time (embedEach).
   */
  async write(changes: VectorChanges): Promise<VectorWriteStats> {
    const upserts: IndexedMemory[] = [];
    const removals: string[] = [];
    for (const [memoryId, view] of changes) {
      if (view) upserts.push(view);
      else removals.push(memoryId);
    }
    const points: VectorPoint[] = [];
    let upserted = 0;
    const flush = async () => {
      const chunk = points.splice(0);
      upserted += chunk.length;
      if (chunk.length > 0) await this.index.upsert(chunk);
    };
    // A promise only when a chunk is written, not one per vector (the embedder waits for what it returns).
    const place = (index: number, vector: Float32Array): void | Promise<void> => {
      const memory = upserts[index]!;
      // A blank text embeds to the zero vector, which has no direction: such a memory has no semantic
      // position, so it is kept out of the vector channel (BM25 still finds it by its words).
      if (isZeroVector(vector)) return void removals.push(memory.memoryId);
      points.push({ id: memory.memoryId, vector, payload: payloadOf(memory, this.modelId) });
      // Written as they come, a chunk at a time: a rebuild's 80k vectors are never all held at once.
      if (points.length >= UPSERT_CHUNK) return flush();
    };
    const texts = upserts.map(embeddingTextOf);
    if (texts.length > 0 && this.embedder.embedEach) await this.embedder.embedEach(texts, place);
    else if (texts.length > 0) {
      const vectors = await this.embedder.embed(texts);
      for (let i = 0; i < vectors.length; i++) await place(i, vectors[i]!);
    }
    // Removals and upserts name different memories (one change per memory), so their order is free.
    if (removals.length > 0) await this.index.delete(removals);
    await flush();
    return { embedded: upserts.length, upserted, removed: removals.length };
  }

  /** Empties the index and derives it again from the active memories, in embedder batches of `batch`. */
  async rebuildFrom(memories: readonly IndexedMemory[], batch = 256): Promise<void> {
    await this.index.clear();
    for (let start = 0; start < memories.length; start += batch) {
      await this.write(new Map(memories.slice(start, start + batch).map((memory) => [memory.memoryId, memory])));
    }
  }

  /** The query's embedding, or null for a query without text (it has no direction to search in). */
  async embedQuery(query: string): Promise<Float32Array | null> {
    if (query.trim().length === 0) return null;
    const [vector] = await this.embedder.embed([query]);
    return vector && !isZeroVector(vector) ? vector : null;
  }

  /** Memory ids nearest to `vector`, best first; `limit` is capped at what a vector index may return. */
  async search(vector: Float32Array, filter: RetrievalFilter, limit: number): Promise<ChannelHit[]> {
    if (limit <= 0) return [];
    const pushed = vectorFilterOf(filter);
    const hits = await this.index.search(vector, { k: Math.min(limit, MAX_SEARCH_K), ...(pushed ? { filter: pushed } : {}) });
    return hits.map((hit) => ({ memoryId: hit.id, score: hit.score }));
  }

  async close(): Promise<void> {
    await this.index.close();
  }
}

function payloadOf(memory: IndexedMemory, modelId: string): VectorPoint["payload"] {
  return {
    app: memory.app,
    scope: memory.scope,
    kind: memory.kind,
    status: memory.status,
    version: memory.version,
    tags: memory.tags,
    paths: memory.paths,
    modelId,
  };
}
