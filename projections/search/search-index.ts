import type { ProjectedEvent } from "../projection.js";
import { FullTextChannel, type RetrievalFilter, type SavedFullTextIndex } from "./fulltext-channel.js";
import { evolveMemoryRecord, indexedViewOf, isMemoryEvent, type IndexChange, type MemoryRecord } from "./memory-records.js";
import { tokenizeText } from "./tokenizer.js";

/**
 * The live search model of one app: per-memory records (the state needed to continue folding events)
 * and the retrieval channels built from them. Only BM25 today; a vector channel is added as another
 * field fed by the same `IndexChange`s, and `searchMemories` fuses the channels' rankings.
 *
 * It is in-process and synchronous: the projection target applies events to it, readers in the same
 * process query it, the CLI loads one from a snapshot and catches up with `apply` itself.
 */
export class SearchIndex {
  private readonly records = new Map<string, MemoryRecord>();
  private seq = 0;

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

  /**
   * Applies events in stream order. Non-memory events only advance the sequence. Delivery is
   * at-least-once and in order, so an event at or below the applied sequence has already been folded.
   */
  apply(events: readonly ProjectedEvent[]): void {
    for (const { seq, event } of events) {
      if (seq <= this.seq) continue;
      this.seq = seq;
      if (!isMemoryEvent(event)) continue;
      const { record, change } = evolveMemoryRecord(this.records.get(event.aggregateId), event);
      this.records.set(event.aggregateId, record);
      this.applyChange(change);
    }
  }

  /** Moves the applied sequence forward without events (a runner committing past events it filtered out). */
  advanceTo(seq: number): void {
    if (seq > this.seq) this.seq = seq;
  }

  record(memoryId: string): MemoryRecord | undefined {
    return this.records.get(memoryId);
  }

  /** What a snapshot holds: the records (the state to continue from) and the channels' saved indexes. */
  exportState(): { seq: number; records: IterableIterator<MemoryRecord>; fullText: SavedFullTextIndex } {
    return { seq: this.seq, records: this.records.values(), fullText: this.fullText.exportIndex() };
  }

  /**
   * An index from a snapshot. With a saved full-text index it is loaded as is; without one (an older
   * snapshot, or one whose index was dropped) the channel is derived again from the records.
   */
  static restore(state: {
    app: string;
    generation: string;
    seq: number;
    records: Iterable<MemoryRecord>;
    fullText?: SavedFullTextIndex | undefined;
  }): SearchIndex {
    const records = new Map<string, MemoryRecord>();
    for (const record of state.records) if (record.id !== null) records.set(record.id, record);
    const active = () => [...records.values()].map(indexedViewOf).filter((view) => view !== null);
    const fullText = state.fullText ? FullTextChannel.importIndex(state.fullText, active()) : undefined;
    const index = new SearchIndex(state.app, state.generation, fullText);
    for (const [id, record] of records) index.records.set(id, record);
    if (!fullText) for (const view of active()) index.fullText.upsert(view);
    index.seq = state.seq;
    return index;
  }

  /** Ranked memory ids for a query; used by {@link searchMemories}. */
  rank(query: string, filter: RetrievalFilter, limit: number) {
    return this.fullText.search(query, filter, limit);
  }

  private applyChange(change: IndexChange): void {
    if (change?.type === "upsert") this.fullText.upsert(change.memory);
    else if (change?.type === "remove") this.fullText.remove(change.memoryId);
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
    if (!view) continue;
    hits.push({
      memoryId,
      score,
      version: view.version,
      title: view.title,
      scope: view.scope,
      kind: view.kind,
      snippet: snippetOf(view.body, queryTokens),
    });
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
  const matching = lines.find((line) => tokenizeText(line).some((token) => wanted.has(token)));
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
