import type { ProjectedEvent } from "../projection.js";
import { FullTextChannel, type ChannelHit, type RetrievalFilter, type SavedFullTextIndex } from "./fulltext-channel.js";
import { evolveMemoryRecord, indexedViewOf, isMemoryEvent, type IndexChange, type IndexedMemory, type MemoryRecord } from "./memory-records.js";
import type { VectorChannel, VectorSink, VectorWriteStats } from "./vector-channel.js";
import { mentionsAny, tokenizeText } from "./tokenizer.js";
import { internal } from "../../schemas/errors.js";

/**
 * The live search model of one app: per-memory records (the state needed to continue folding events)
 * and the retrieval channels built from them: BM25 (always) and vectors (when a VectorChannel is
 * attached). Both are fed by the same `IndexChange`s; `retrieve` (retrieve.ts) fuses their rankings.
 *
 * `apply` is synchronous: it folds events and updates BM25 at once, and only queues the vector
 * changes (net per memory), because embedding is slow and is done for a whole batch in one call by
 * `flushVectors`. `ingest` is the two together, which is what a projection target or a catching-up
 * reader calls. A snapshot is only taken with nothing queued, so both channels describe the same
 * checkpoint.
 */
export class SearchIndex {
  private readonly records = new Map<string, MemoryRecord>();
  /**
   * memoryId → [version, git branch it was proposed on] (for retrieval's branch boost). Per memory, not
   * per `memoryId version` string: a snapshot looks up every kept version of every memory, and at 100k
   * memories building and hashing those keys was most of exportState.
   */
  private readonly branches = new Map<string, [number, string][]>();
  private pendingVectors = new Map<string, IndexedMemory | null>();
  private vectorChannel: VectorChannel | undefined;
  /** Instead of a channel, a fresh index's vectors written elsewhere (see VectorSink). */
  private sink: VectorSink | undefined;
  /** The sink's writes sent by `materialize` and not yet known to be done (see vectorsWritten). */
  private sinkWrites: Promise<unknown> = Promise.resolve();
  private seq = 0;
  /**
   * Fresh-target mode (`deferIndexing`): memories whose indexed view changed since the last
   * `materialize`, in the order of their first change (the order a live index first inserted them in,
   * which fixes Orama's internal ids and so the order of equal scores). Undefined: index at once.
   */
  private deferred: Map<string, true> | undefined;
  /** In deferred mode, memories a previous `materialize` put in the channels. */
  private materializedIds: Set<string> | undefined;

  constructor(
    readonly app: string,
    readonly generation: string,
    private readonly fullText = new FullTextChannel(),
  ) {}

  /** The last stream sequence applied; events at or below it are skipped, which makes `apply` idempotent. */
  get appliedSeq(): number {
    return this.seq;
  }

  /** Number of memories retrieval can return (active ones). */
  get indexedCount(): number {
    return this.fullText.size;
  }

  /** Number of memories whose state is kept, indexed or not (pending, active, superseded). */
  get recordCount(): number {
    return this.records.size;
  }

  /** The vector channel, when one is attached. */
  get vectors(): VectorChannel | undefined {
    return this.vectorChannel;
  }

  /** Memories whose vector change is applied to BM25 but not yet to the vector index. */
  get pendingVectorCount(): number {
    return this.pendingVectors.size;
  }

  /**
   * Attaches a vector channel whose index already holds this index's active memories (loaded from the
   * snapshot, or derived with `VectorChannel.rebuildFrom(index.activeMemories())`).
   */
  attachVectors(channel: VectorChannel): void {
    if (this.vectorChannel || this.sink) throw internal(`search index ${this.app}/${this.generation} already has a vector channel`);
    this.vectorChannel = channel;
  }

  /** Sends this (fresh, empty) index's vector changes to `sink` instead of a channel of its own. */
  attachVectorSink(sink: VectorSink): void {
    if (this.vectorChannel || this.sink) throw internal(`search index ${this.app}/${this.generation} already has a vector channel`);
    if (this.records.size > 0) throw internal(`search index ${this.app}/${this.generation}: a vector sink must be attached to an empty index`);
    this.sink = sink;
  }

  /** The sink attached instead of a channel, if any. */
  get vectorSink(): VectorSink | undefined {
    return this.sink;
  }

  /**
   * Applies events in stream order. Non-memory events only advance the sequence. Delivery is
   * at-least-once and in order, so an event at or below the applied sequence has already been folded.
   */
  apply(events: readonly ProjectedEvent[]): void {
    for (const { seq, event } of events) {
      if (seq <= this.seq) continue;
      this.seq = seq;
      if (!isMemoryEvent(event)) continue;
      if (event.type === "memory.proposed" && event.git?.branch) {
        this.setBranch(event.aggregateId, event.data.version, event.git.branch);
      }
      const { record, change } = evolveMemoryRecord(this.records.get(event.aggregateId), event);
      this.records.set(event.aggregateId, record);
      if (this.deferred) {
        if (change) this.deferred.set(event.aggregateId, true);
      } else {
        this.applyChange(change);
      }
    }
  }

  /**
   * Embeds and writes the queued vector changes in one embedder call. On failure they stay queued (the
   * events are already folded, so a retried batch is skipped by `apply` and only this step repeats).
   */
  async flushVectors(): Promise<VectorWriteStats> {
    const channel = this.vectorChannel ?? this.sink;
    if (!channel || this.pendingVectors.size === 0) return { embedded: 0, upserted: 0, removed: 0 };
    const batch = this.pendingVectors;
    this.pendingVectors = new Map();
    try {
      return await channel.write(batch);
    } catch (error) {
      // Changes queued meanwhile are newer than the failed ones and win.
      for (const [memoryId, view] of batch) if (!this.pendingVectors.has(memoryId)) this.pendingVectors.set(memoryId, view);
      throw error;
    }
  }

  /**
   * Channels are updated only by `materialize`: events fold into the records alone, and each memory's
   * final active version is inserted once, instead of a remove and an insert (and an embedding) per
   * revision. For a fresh target, which nobody searches before it is promoted.
   */
  deferIndexing(): void {
    this.deferred ??= new Map();
    this.materializedIds ??= new Set();
  }

  /** Back to indexing at once; everything deferred must have been materialized. */
  indexImmediately(): void {
    if (this.deferred && this.deferred.size > 0) throw internal(`search index ${this.app}/${this.generation}: materialize before indexing immediately`);
    this.deferred = undefined;
    this.materializedIds = undefined;
  }

  /**
   * Puts the current view of every memory changed since the last call into the channels: BM25 at once,
   * vectors embedded and written in one batch when the embedder hands vectors over as they come
   * (embedEach: a CachedEmbedder reads a warm cache in one scan of its bucket and the channel writes
   * them as they are read, services/embeddings/cache.ts), else in batches of `vectorBatch`, which bound
   * what is held (16,384 vectors are 32 MiB at 512-d).
   */
  async materialize(vectorBatch = 16_384): Promise<void> {
    const deferred = this.deferred;
    const indexed = this.materializedIds;
    if (!deferred || !indexed || deferred.size === 0) return;
    const ids = [...deferred.keys()];
    deferred.clear();
    // A sink writes elsewhere: all in one write, started before BM25 so that the two run side by side.
    if (this.sink) return this.materializeBeside(ids, indexed);
    const batch = this.vectorChannel?.embedder.embedEach ? ids.length : vectorBatch;
    for (let start = 0; start < ids.length; start += batch) {
      for (const memoryId of ids.slice(start, start + batch)) this.applyChange(this.deferredChange(memoryId, indexed));
      await this.flushVectors();
    }
  }

  /** What a deferred memory changes in the channels now: its current view, or its removal if an earlier materialize indexed it. */
  private deferredChange(memoryId: string, indexed: Set<string>): IndexChange {
    const record = this.records.get(memoryId);
    const view = record ? indexedViewOf(record) : null;
    if (view) {
      indexed.add(memoryId);
      return { type: "upsert", memory: view };
    }
    return indexed.delete(memoryId) ? { type: "remove", memoryId } : null;
  }

  /**
   * Resolves once every vector change sent to the sink so far is written, or rejects with what failed.
   * A sink's writes are not awaited by `materialize`: a fresh index waits for them only before its
   * snapshot, so that it writes its records while the sink's thread is still storing vectors.
   */
  async vectorsWritten(): Promise<void> {
    await this.sinkWrites;
  }

  /**
   * `materialize` with a sink: the vector changes are queued and sent first, then BM25 is indexed here.
   * Returns without waiting for the sink's write (see vectorsWritten).
   */
  private async materializeBeside(ids: readonly string[], indexed: Set<string>): Promise<void> {
    const changes = ids.map((memoryId) => this.deferredChange(memoryId, indexed));
    for (const change of changes) this.queueVector(change);
    const writing = this.flushVectors();
    this.sinkWrites = Promise.all([this.sinkWrites, writing]);
    // Awaited by vectorsWritten; until then a failure must not count as unhandled.
    this.sinkWrites.catch(() => undefined);
    for (const change of changes) this.indexFullText(change);
  }

  /** `apply` then `flushVectors`: every channel reflects the events when it resolves. */
  async ingest(events: readonly ProjectedEvent[]): Promise<void> {
    this.apply(events);
    await this.flushVectors();
  }

  /** Moves the applied sequence forward without events (a runner committing past events it filtered out). */
  advanceTo(seq: number): void {
    if (seq > this.seq) this.seq = seq;
  }

  record(memoryId: string): MemoryRecord | undefined {
    return this.records.get(memoryId);
  }

  /** The active view of a memory, or undefined when retrieval may not return it. */
  view(memoryId: string): IndexedMemory | undefined {
    const record = this.records.get(memoryId);
    return (record && indexedViewOf(record)) ?? undefined;
  }

  /** Every memory retrieval can return, e.g. to derive a vector channel again. */
  activeMemories(): IndexedMemory[] {
    const views: IndexedMemory[] = [];
    for (const record of this.records.values()) {
      const view = indexedViewOf(record);
      if (view) views.push(view);
    }
    return views;
  }

  /** The git branch a memory's version was proposed on, when the proposal named one. */
  branchOf(memoryId: string, version: number): string | undefined {
    const own = this.branches.get(memoryId);
    if (own) for (const [v, branch] of own) if (v === version) return branch;
    return undefined;
  }

  /** Records (or replaces) the branch a memory's version was proposed on. */
  private setBranch(memoryId: string, version: number, branch: string): void {
    const own = this.branches.get(memoryId);
    if (!own) return void this.branches.set(memoryId, [[version, branch]]);
    const at = own.findIndex(([v]) => v === version);
    if (at === -1) own.push([version, branch]);
    else own[at] = [version, branch];
  }

  /**
   * What a snapshot holds: the records (the state to continue from), the branches of versions still
   * kept, and the channels' saved indexes. Refused while vector changes are queued: the vectors saved
   * beside it must be at the same sequence.
   */
  exportState(): { seq: number; records: IterableIterator<MemoryRecord>; branches: [string, number, string][]; fullText: SavedFullTextIndex } {
    if (this.pendingVectors.size > 0) throw internal(`search index ${this.app}/${this.generation}: flush vectors before a snapshot`);
    if (this.deferred && this.deferred.size > 0) throw internal(`search index ${this.app}/${this.generation}: materialize before a snapshot`);
    const branches: [string, number, string][] = [];
    for (const record of this.records.values()) {
      if (record.id === null) continue;
      const own = this.branches.get(record.id);
      if (!own) continue;
      for (const { version } of record.versions) {
        for (const [v, branch] of own) {
          if (v !== version) continue;
          branches.push([record.id, version, branch]);
          break;
        }
      }
    }
    return { seq: this.seq, records: this.records.values(), branches, fullText: this.fullText.exportIndex() };
  }

  /**
   * An index from a snapshot. With a saved full-text index it is loaded as is; without one (an older
   * snapshot, or one whose index was dropped) the channel is derived again from the records. The
   * vector channel is attached afterwards (see snapshot.ts), since it needs an embedder and I/O.
   */
  static restore(state: {
    app: string;
    generation: string;
    seq: number;
    records: Iterable<MemoryRecord>;
    branches?: Iterable<[string, number, string]> | undefined;
    fullText?: SavedFullTextIndex | undefined;
  }): SearchIndex {
    const records = new Map<string, MemoryRecord>();
    for (const record of state.records) if (record.id !== null) records.set(record.id, record);
    const active = () => [...records.values()].map(indexedViewOf).filter((view) => view !== null);
    const fullText = state.fullText ? FullTextChannel.importIndex(state.fullText, active()) : undefined;
    const index = new SearchIndex(state.app, state.generation, fullText);
    for (const [id, record] of records) index.records.set(id, record);
    for (const [memoryId, version, branch] of state.branches ?? []) index.setBranch(memoryId, version, branch);
    if (!fullText) for (const view of active()) index.fullText.upsert(view);
    index.seq = state.seq;
    return index;
  }

  /** Ranked memory ids for a query; used by {@link searchMemories} and `retrieve`. */
  rank(query: string, filter: RetrievalFilter, limit: number): ChannelHit[] {
    return this.fullText.search(query, filter, limit);
  }

  private applyChange(change: IndexChange): void {
    this.indexFullText(change);
    this.queueVector(change);
  }

  private indexFullText(change: IndexChange): void {
    if (change?.type === "upsert") this.fullText.upsert(change.memory);
    else if (change?.type === "remove") this.fullText.remove(change.memoryId);
  }

  private queueVector(change: IndexChange): void {
    if (change && (this.vectorChannel || this.sink)) {
      const memoryId = change.type === "upsert" ? change.memory.memoryId : change.memoryId;
      this.pendingVectors.set(memoryId, change.type === "upsert" ? change.memory : null);
    }
  }
}

export interface SearchOptions extends RetrievalFilter {
  /** How many results at most. */
  k: number;
}

export interface SearchHit {
  memoryId: string;
  score: number;
  version: number;
  title: string;
  scope: string;
  kind: string;
  snippet: string;
}

/** What a search returns for one indexed memory: always built from the record's active version. */
export const hitOf = (view: IndexedMemory, score: number, queryTokens: readonly string[]): SearchHit => ({
  memoryId: view.memoryId,
  score,
  version: view.version,
  title: view.title,
  scope: view.scope,
  kind: view.kind,
  snippet: snippetOf(view.body, queryTokens),
});

/** Active memories best matching `query`, best first. */
export function searchMemories(index: SearchIndex, query: string, options: SearchOptions): SearchHit[] {
  const { k, ...filter } = options;
  const queryTokens = tokenizeText(query);
  const hits: SearchHit[] = [];
  for (const { memoryId, score } of index.rank(query, filter, k)) {
    // Results are built from the records, not from Orama's stored documents (NOTES: Orama rewrites
    // fields of stored documents), so what is returned is exactly the active version.
    const record = index.record(memoryId);
    const view = record && indexedViewOf(record);
    if (view) hits.push(hitOf(view, score, queryTokens));
  }
  return hits;
}

const SNIPPET_LENGTH = 200;

/**
 * A one-line excerpt of the body around the first line that contains a query token, or the body's
 * beginning. Line-based because memory bodies are markdown: a line is the unit a reader recognises.
 */
export function snippetOf(body: string, queryTokens: readonly string[]): string {
  const lines = body.split("\n").map((line) => line.trim()).filter((line) => line.length > 0);
  const wanted = new Set(queryTokens);
  const matching = lines.find((line) => mentionsAny(line, wanted));
  const chosen = matching ?? lines[0] ?? "";
  const flat = chosen.replace(/\s+/g, " ");
  if (flat.length <= SNIPPET_LENGTH) return flat;
  const at = matching ? firstTokenPosition(flat, wanted) : 0;
  const start = Math.max(0, Math.min(at - SNIPPET_LENGTH / 4, flat.length - SNIPPET_LENGTH));
  const excerpt = flat.slice(start, start + SNIPPET_LENGTH).trim();
  return `${start > 0 ? "…" : ""}${excerpt}${start + SNIPPET_LENGTH < flat.length ? "…" : ""}`;
}

function firstTokenPosition(line: string, wanted: ReadonlySet<string>): number {
  const lower = line.toLowerCase();
  let best = -1;
  for (const token of wanted) {
    const at = lower.indexOf(token);
    if (at >= 0 && (best < 0 || at < best)) best = at;
  }
  return Math.max(best, 0);
}
