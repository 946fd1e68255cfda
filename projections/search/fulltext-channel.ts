import type { IndexedMemory } from "./memory-records.js";
import { asList, tagKey, type RetrievalFilter } from "./retrieval-filter.js";
import { CompactBm25Index, type AttributeFilter, type DocumentAttributes, type DocumentTokens, type FieldSpec, type SavedCompactBm25, type WeightedField } from "./compact-bm25.js";
import { namedIdentifiers, tokenizeText, tokenizeTexts } from "./tokenizer.js";
import { internal } from "../../schemas/errors.js";

/**
 * The BM25 channel: one indexed document per active memory. A vector channel sits beside it with the
 * same shape (upsert, remove, ranked ids for a query and filter), and the search index fuses their
 * rankings; nothing here knows about the other channels.
 *
 * The index is compact-bm25.ts: Orama's BM25 (same formula, parameters, boosts, field order and tie
 * order, so the same hits with the same scores) over postings in typed arrays, top-k term at a time. It
 * replaced Orama's own index, whose per-document objects made garbage-collection pauses the p99 at
 * 100k memories (docs/benchmarks.md). Text is tokenized by the identifier-aware tokenizer, and a query
 * token matches only the equal indexed token (Orama's prefix lookup had made BM25 p99 300+ ms on real
 * text at 10k memories). Filters (app, status, scope, kind, tags) are checked per document while
 * scoring, on interned codes.
 *
 * Exact identifiers need more than good tokens. Orama's BM25 adds a constant per matched token
 * (its tf is count / field length, so the `d` term dominates), so twenty notes that mention "token", "expired" and "errors" in their titles outscore the one note that
 * names `ERR_TOKEN_EXPIRED`, whose rare whole token adds only one idf (prefix matching, before exact
 * tokens, made it worse: "token" also scored "tokens", "tokenizer"). So the whole identifiers of each
 * memory also go into an `identifiers` field, matched exactly (whole token, no prefix, no parts), and a
 * memory that contains every identifier the query names ranks above those that do not.
 */
const IDENTIFIERS = "identifiers";
/**
 * The indexed text fields, in the order Orama's schema listed them (which is the order scores are
 * summed in). `identifiers` holds whole identifiers (see tokenizer.ts) and is only searched exactly.
 */
const FIELDS: readonly FieldSpec[] = [
  { name: "title", list: false },
  { name: "body", list: false },
  { name: "tags", list: true },
  { name: "paths", list: true },
  { name: IDENTIFIERS, list: false },
];

/** Where a word counts most: a title or tag that names the subject outweighs a mention in the body. */
const BOOST = { title: 2, tags: 1.5, paths: 1.5, body: 1 } as const;
const TEXT_FIELDS: readonly WeightedField[] = [
  { field: "title", boost: BOOST.title },
  { field: "body", boost: BOOST.body },
  { field: "tags", boost: BOOST.tags },
  { field: "paths", boost: BOOST.paths },
];
const IDENTIFIER_FIELDS: readonly WeightedField[] = [{ field: IDENTIFIERS, boost: 1 }];

/**
 * BM25 parameters: Orama's k1 1.2 and d 0.5, but length normalisation b 0.1 instead of 0.75.
 *
 * Orama's term frequency is already length-normalised: it stores tf = (occurrences in the field) /
 * (tokens in the field), where textbook BM25 uses the raw count. Its formula then divides by
 * `tf + k (1 - b + b len / avgLen)` as well, so with b 0.75 a long field is penalised twice: once in
 * tf, once in the denominator. b 0.1 keeps a little of the second (so a long note still does not win
 * by sheer size) without counting length twice. Measured on LoCoMo turns (`npm run eval`, recall@10
 * over categories 1-4): BM25 0.578 -> 0.647, hybrid 0.618 -> 0.678.
 */
export const BM25_RELEVANCE = { k: 1.2, b: 0.1, d: 0.5 } as const;

export type { RetrievalFilter } from "./retrieval-filter.js";
export { tagKey } from "./retrieval-filter.js";

export interface ChannelHit {
  memoryId: string;
  score: number;
  /** How many of the identifiers the query names this memory contains as whole tokens (BM25 only). */
  identifiersMatched?: number;
}

/** What the index holds of a memory: its tokens per field, as Orama's tokenizer component produced them. */
function tokensOf(memory: IndexedMemory): DocumentTokens {
  const { tokens, identifiers } = tokenizeTexts([memory.title, memory.body, ...memory.tags, ...memory.paths]);
  const tags = 2 + memory.tags.length;
  return {
    title: tokens[0]!,
    body: tokens[1]!,
    tags: tokens.slice(2, tags),
    paths: tokens.slice(tags),
    // The identifiers of title, body, tags and paths joined by newlines (tokenizer.ts), each once.
    [IDENTIFIERS]: wholeTokens(identifiers.join(" ")),
  };
}

/**
 * The exact-identifier field's tokens: space-separated, each once. (An identifier whose compatibility
 * decomposition holds a space, such as U+FDFA, splits there, as it did when Orama tokenized this field.)
 */
const wholeTokens = (raw: string): string[] => [...new Set(raw.split(" ").filter((token) => token.length > 0))];

const attributesOf = (memory: IndexedMemory): DocumentAttributes => ({
  app: memory.app,
  scope: memory.scope,
  kind: memory.kind,
  status: memory.status,
  tagKeys: memory.tags.map(tagKey),
});

/** The saved BM25 index: internal ids and running averages; postings are derived from the memory records. */
export type SavedFullTextIndex = SavedCompactBm25;

export const isSavedFullTextIndex = (value: unknown): value is SavedFullTextIndex =>
  value !== null &&
  typeof value === "object" &&
  (value as Partial<SavedCompactBm25>).format === "memledger-compact-bm25" &&
  (value as Partial<SavedCompactBm25>).version === 1 &&
  Array.isArray((value as Partial<SavedCompactBm25>).ids);

export class FullTextChannel {
  private readonly index = new CompactBm25Index(FIELDS, BM25_RELEVANCE);

  /**
   * What a snapshot needs beyond the memory records: the internal ids (they order equal scores) and
   * each field's running average length (Orama's, path-dependent). Postings are not saved: loading
   * re-tokenizes the active memories (compact-bm25.ts), which is smaller on disk and as fast as
   * parsing saved postings.
   */
  exportIndex(): SavedFullTextIndex {
    return this.index.save();
  }

  /** The inverse of {@link exportIndex}; `memories` must be exactly the documents indexed when it was saved. */
  static importIndex(saved: SavedFullTextIndex, memories: Iterable<IndexedMemory>): FullTextChannel {
    if (!isSavedFullTextIndex(saved)) throw internal("search snapshot: the saved BM25 index is not one this build writes");
    const channel = new FullTextChannel();
    channel.index.beginLoad(saved);
    const ordered: [number, IndexedMemory][] = [];
    for (const memory of memories) {
      const internalId = channel.index.internalIdOf(memory.memoryId);
      if (internalId === undefined) throw internal(`search snapshot: memory ${memory.memoryId} is active but missing from the saved index`);
      ordered.push([internalId, memory]);
    }
    // In internal id order, every posting is an append.
    ordered.sort((a, b) => a[0] - b[0]);
    for (const [, memory] of ordered) channel.index.insert(memory.memoryId, tokensOf(memory), attributesOf(memory));
    channel.index.finishLoad(saved);
    return channel;
  }

  get size(): number {
    return this.index.size;
  }

  upsert(memory: IndexedMemory): void {
    this.index.remove(memory.memoryId);
    this.index.insert(memory.memoryId, tokensOf(memory), attributesOf(memory));
  }

  remove(memoryId: string): void {
    this.index.remove(memoryId);
  }

  /**
   * Memory ids, best first: memories containing more of the identifiers the query names come first,
   * then by BM25 score. Empty for a query without searchable words.
   */
  search(query: string, filter: RetrievalFilter, limit: number): ChannelHit[] {
    if (limit <= 0 || query.trim().length === 0) return [];
    const pushed = pushedFilter(filter);
    const textHits = this.bm25(tokenizeText(query), TEXT_FIELDS, pushed, limit);
    const identifiers = namedIdentifiers(query);
    if (identifiers.length === 0) return textHits;

    const identifiersMatched = new Map<string, number>();
    for (const identifier of identifiers) {
      // Only the best `limit` holders of each identifier count, as when this was an Orama search per identifier.
      for (const hit of this.bm25(wholeTokens(identifier), IDENTIFIER_FIELDS, pushed, limit)) {
        identifiersMatched.set(hit.memoryId, (identifiersMatched.get(hit.memoryId) ?? 0) + 1);
      }
    }
    if (identifiersMatched.size === 0) return textHits;
    // Scores stay comparable within one result list: an exact match gets the best text score on top of
    // its own for each identifier it contains, so sorting by score gives the order described above.
    const textScore = new Map(textHits.map((hit) => [hit.memoryId, hit.score]));
    const bonus = (textHits[0]?.score ?? 0) + 1;
    const merged = new Map(textHits.map((hit) => [hit.memoryId, hit.score]));
    for (const [memoryId, matched] of identifiersMatched) merged.set(memoryId, (textScore.get(memoryId) ?? 0) + matched * bonus);
    return [...merged]
      .map(([memoryId, score]) => ({ memoryId, score, identifiersMatched: identifiersMatched.get(memoryId) ?? 0 }))
      .sort((a, b) => b.score - a.score)
      .slice(0, limit);
  }

  private bm25(terms: readonly string[], fields: readonly WeightedField[], filter: AttributeFilter, limit: number): ChannelHit[] {
    return this.index
      .search(terms, fields, filter, limit)
      .filter((hit) => hit.score > 0)
      .map((hit) => ({ memoryId: hit.id, score: hit.score }));
  }
}

/** The exactly evaluable part of the filter (paths are checked by the caller: "under" is not an exact match). */
function pushedFilter(filter: RetrievalFilter): AttributeFilter {
  return {
    app: filter.app,
    status: filter.status,
    scope: asList(filter.scope),
    kind: asList(filter.kind),
    tagKeys: filter.tags && filter.tags.length > 0 ? filter.tags.map(tagKey) : undefined,
  };
}
