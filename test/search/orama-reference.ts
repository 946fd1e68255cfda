import { count, create, insert, load, remove, save, search, type Orama, type RawData, type WhereCondition } from "@orama/orama";
import type { IndexedMemory } from "../../projections/search/memory-records.js";
import { asList, tagKey, type RetrievalFilter } from "../../projections/search/retrieval-filter.js";
import { exactTermIndex, type ExactTermIndex } from "./orama-exact-term-index.js";
import { identifierAwareTokenizer, identifierTokens, namedIdentifiers, type IdentifierAwareTokenizer } from "../../projections/search/tokenizer.js";
import { internal } from "../../schemas/errors.js";
import type { ChannelHit } from "../../projections/search/fulltext-channel.js";

/**
 * THE REFERENCE for test/search/compact-bm25.unit.spec.ts: the BM25 channel as it was before the compact
 * index (projections/search/compact-bm25.ts), Orama 3 with the exact-term index component, kept
 * unchanged so that the compact index can be checked against it hit for hit and score for score.
 *
 * The BM25 channel: one Orama document per active memory. A vector channel will sit beside it with the
 * same shape (upsert, remove, ranked ids for a query and filter), and the search index fuses their
 * rankings; nothing here knows about the other channels.
 *
 * Orama's text fields are tokenized by the identifier-aware tokenizer, and a query token matches only the
 * equal indexed token (exact-term-index.ts: Orama's prefix lookup made BM25 p99 300+ ms on real text at
 * 10k memories). Filters use `enum` fields: NOTES measured `where` on a `string` field at 112 ms p50 and
 * it is not an exact match.
 *
 * Exact identifiers need more than good tokens. Orama's BM25 adds a constant per matched token
 * (its tf is count / field length, so the `d` term dominates), so twenty notes that mention "token", "expired" and "errors" in their titles outscore the one note that
 * names `ERR_TOKEN_EXPIRED`, whose rare whole token adds only one idf (before exact-term-index.ts, prefix
 * matching made it worse: "token" also scored "tokens", "tokenizer"). So the whole identifiers of each
 * memory also go into an `identifiers` field, matched exactly (whole token, no prefix, no parts), and a
 * memory that contains every identifier the query names ranks above those that do not.
 */
const IDENTIFIERS = "identifiers";
const SCHEMA = {
  title: "string",
  body: "string",
  tags: "string[]",
  paths: "string[]",
  /** Space-separated whole identifiers (see tokenizer.ts); only searched exactly. */
  [IDENTIFIERS]: "string",
  app: "enum",
  scope: "enum",
  kind: "enum",
  status: "enum",
  /** Lowercased tags for exact tag filters; `tags` above is for full-text matching. */
  tagKeys: "enum[]",
} as const;

type FullTextDb = Orama<typeof SCHEMA>;

/** Where a word counts most: a title or tag that names the subject outweighs a mention in the body. */
const BOOST = { title: 2, tags: 1.5, paths: 1.5, body: 1 } as const;

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
const BM25_RELEVANCE = { k: 1.2, b: 0.1, d: 0.5 } as const;


/**
 * Orama's calls return a promise only when a plugin or hook is async. This index has neither, and the
 * projection relies on inserts being applied in order before the next event; a promise here is a bug.
 */
function synchronously<T>(value: T | Promise<T>, what: string): T {
  if (value instanceof Promise) throw internal(`Orama ${what} went asynchronous; the search index has no async hooks`);
  return value;
}

const createDb = (tokenizer: IdentifierAwareTokenizer, index: ExactTermIndex): FullTextDb =>
  create({
    schema: SCHEMA,
    // Query tokens match whole indexed tokens, not as prefixes (see exact-term-index.ts).
    components: { tokenizer, index: index.component },
    // Results are ordered by score only; a sort index would cost memory for every document.
    sort: { enabled: false },
  });

const documentOf = (memory: IndexedMemory) => ({
  id: memory.memoryId,
  title: memory.title,
  body: memory.body,
  tags: memory.tags,
  paths: memory.paths,
  app: memory.app,
  scope: memory.scope,
  kind: memory.kind,
  status: memory.status,
  tagKeys: memory.tags.map(tagKey),
  [IDENTIFIERS]: identifierTokens([memory.title, memory.body, ...memory.tags, ...memory.paths].join("\n")).join(" "),
});

/** Orama's saved index without its document store: the documents are rebuilt from the memory records. */
type SavedFullTextIndex = Omit<RawData, "docs">;

export class OramaFullTextChannel {
  private readonly tokenizer = identifierAwareTokenizer([IDENTIFIERS]);
  // Scalar text fields: the identifier-aware tokenizer returns each token once per value.
  private readonly index = exactTermIndex(["title", "body", IDENTIFIERS]);
  private readonly db: FullTextDb = createDb(this.tokenizer, this.index);

  /**
   * Orama's own save(): at 10k memories loading it took 4.1 s against 9.9 s for re-inserting every
   * document (measured on LoCoMo turns when this was chosen). Its document store is left out because it
   * repeats every active version's text, which the snapshot already holds in the memory records.
   * The result shares structures with the live index: serialize it before applying more events.
   */
  exportIndex(): SavedFullTextIndex {
    const { docs: _docs, ...index } = save(this.db);
    return index;
  }

  /** The inverse of {@link exportIndex}; `memories` must be exactly the documents indexed when it was saved. */
  static importIndex(saved: SavedFullTextIndex, memories: Iterable<IndexedMemory>): OramaFullTextChannel {
    const channel = new OramaFullTextChannel();
    const internalIdToId = (saved.internalDocumentIDStore as { internalIdToId: string[] }).internalIdToId;
    const internalIdOf = new Map(internalIdToId.map((id, i) => [id, i + 1] as const));
    const docs: Record<number, ReturnType<typeof documentOf>> = {};
    let docCount = 0;
    for (const memory of memories) {
      const internalId = internalIdOf.get(memory.memoryId);
      if (internalId === undefined) throw internal(`search snapshot: memory ${memory.memoryId} is active but missing from the saved index`);
      docs[internalId] = documentOf(memory);
      docCount += 1;
    }
    load(channel.db, { ...saved, docs: { docs, count: docCount } });
    if (count(channel.db) !== docCount) throw internal("search snapshot: the saved index and the memory records disagree");
    return channel;
  }

  get size(): number {
    return count(this.db);
  }

  upsert(memory: IndexedMemory): void {
    this.remove(memory.memoryId);
    synchronously(insert(this.db, documentOf(memory)), "insert");
  }

  remove(memoryId: string): void {
    synchronously(remove(this.db, memoryId), "remove");
  }

  /**
   * Memory ids, best first: memories containing more of the identifiers the query names come first,
   * then by BM25 score. Empty for a query without searchable words.
   */
  search(query: string, filter: RetrievalFilter, limit: number): ChannelHit[] {
    if (limit <= 0 || query.trim().length === 0) return [];
    const where = whereClause(filter);
    const textHits = this.bm25(query, ["title", "body", "tags", "paths"], where, limit);
    const identifiers = namedIdentifiers(query);
    if (identifiers.length === 0) return textHits;

    const identifiersMatched = new Map<string, number>();
    for (const identifier of identifiers) {
      const exactHits = this.tokenizer.wholeTokenQuery(() => this.bm25(identifier, [IDENTIFIERS], where, limit));
      for (const hit of exactHits) {
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

  private bm25(term: string, properties: (keyof typeof SCHEMA)[], where: WhereCondition<typeof SCHEMA> | undefined, limit: number): ChannelHit[] {
    const results = synchronously(
      this.index.withLimit(limit, () =>
        search(this.db, {
          term,
          properties,
          boost: BOOST,
          limit,
          // A copy: Orama fills in missing parameters by writing into the object it is given.
          relevance: { ...BM25_RELEVANCE },
          // Whole indexed tokens only: the index component never matches a token as a prefix. Orama's own
          // `exact` would also re-check every hit with a case-sensitive regex of the raw term.
          exact: false,
          ...(where ? { where } : {}),
        }),
      ),
      "search",
    );
    // A term that tokenizes to nothing (only stop words) makes Orama list documents with score 0.
    return results.hits.filter((hit) => hit.score > 0).map((hit) => ({ memoryId: hit.id, score: hit.score }));
  }
}

/** The exactly evaluable part of the filter (paths are checked by the caller: "under" is not an enum match). */
function whereClause(filter: RetrievalFilter): WhereCondition<typeof SCHEMA> | undefined {
  const clauses: WhereCondition<typeof SCHEMA>[] = [];
  if (filter.app !== undefined) clauses.push({ app: { eq: filter.app } });
  if (filter.status !== undefined) clauses.push({ status: { eq: filter.status } });
  const scopes = asList(filter.scope);
  if (scopes) clauses.push({ scope: { in: [...scopes] } });
  const kinds = asList(filter.kind);
  if (kinds) clauses.push({ kind: { in: [...kinds] } });
  if (filter.tags && filter.tags.length > 0) clauses.push({ tagKeys: { containsAll: filter.tags.map(tagKey) } });
  if (clauses.length === 0) return undefined;
  return clauses.length === 1 ? clauses[0] : { and: clauses };
}
