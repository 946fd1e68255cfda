import { components, type BM25Params, type IIndex, type Tokenizer, type TokenScore } from "@orama/orama";
// The Orama index component the BM25 channel used before compact-bm25.ts; only the test reference
// (orama-reference.ts) uses it now.

type OramaIndex = components.index.Index;

/**
 * Orama's own index component with one change: a query token matches the indexed token equal to it,
 * never every token it is a prefix of, and only the best `limit` documents are sorted.
 *
 * Why. Orama's full-text search looks every query token up as a prefix (`find` with `exact: false`
 * walks the whole radix subtree under it), and merges each word's posting list with
 * `docs.includes(id)` per document, quadratic in the posting length, even with `exact: true`. On
 * LoCoMo text at 10k memories a CPU profile of BM25 queries put 40% of the time in that walk
 * (`findAllWords`) and 20% in scoring the documents it pulled in: "go" also scores "going", "good",
 * "google", "got"…, "src" every path under `src/`, so p99 was 300+ ms (bench/search.ts). The search
 * param `exact: true` fixes the lookup but also makes Orama re-check every hit against the raw query
 * with a case-sensitive whole-word regex (every query word must appear verbatim in one field), which
 * prose queries fail; `tolerance` only adds edit-distance matches. So the index component is where
 * the lookup is replaced, which Orama supports (`components.index`).
 *
 * Ranking: scores are Orama's BM25 (`calculateResultScores`, same parameters and boosts) over exact
 * tokens, so a memory no longer outranks another for containing longer words that start like the
 * query's. The tokenizer already splits identifiers into words and keeps the whole identifier, which
 * is the recall prefix matching used to give for code text.
 *
 * The result order is Orama's (score descending, then internal id ascending: `sortTokenScorePredicate`,
 * which Orama applies again to what this returns), cut at the hinted limit before sorting.
 */
export interface ExactTermIndex {
  readonly component: IIndex<OramaIndex>;
  /** Runs `search` with only the best `limit` documents kept (Orama then fetches `limit` anyway). */
  withLimit<T>(limit: number, search: () => T): T;
}

interface RadixNodeShape {
  /** The edge label leading to this node (its first character is the key in the parent's map). */
  s: string;
  /** Whether a word ends here. */
  e: boolean;
  c: Map<string, RadixNodeShape>;
  d: Set<number>;
}

/** The radix node of exactly `term`, or undefined when no indexed word equals it. */
function exactNode(root: RadixNodeShape, term: string): RadixNodeShape | undefined {
  let node = root;
  let i = 0;
  while (i < term.length) {
    const child = node.c.get(term[i]!);
    if (!child || !term.startsWith(child.s, i)) return undefined;
    node = child;
    i += child.s.length;
  }
  return node.e ? node : undefined;
}

const better = (a: TokenScore, b: TokenScore): boolean => a[1] > b[1] || (a[1] === b[1] && a[0] < b[0]);

/** The best `limit` entries in Orama's order (score desc, id asc), by a bounded min-heap. */
function topByScore(scores: Map<number, number>, limit: number): TokenScore[] {
  if (scores.size <= limit) return sortAll(scores);
  const heap: TokenScore[] = [];
  const down = (at: number) => {
    for (;;) {
      const l = 2 * at + 1;
      const r = l + 1;
      let worst = at;
      if (l < heap.length && better(heap[worst]!, heap[l]!)) worst = l;
      if (r < heap.length && better(heap[worst]!, heap[r]!)) worst = r;
      if (worst === at) return;
      [heap[at], heap[worst]] = [heap[worst]!, heap[at]!];
      at = worst;
    }
  };
  for (const [id, score] of scores) {
    const entry: TokenScore = [id, score];
    if (heap.length < limit) {
      heap.push(entry);
      for (let at = heap.length - 1; at > 0; ) {
        const parent = (at - 1) >> 1;
        if (!better(heap[parent]!, heap[at]!)) break;
        [heap[at], heap[parent]] = [heap[parent]!, heap[at]!];
        at = parent;
      }
    } else if (better(entry, heap[0]!)) {
      heap[0] = entry;
      down(0);
    }
  }
  return heap.sort((a, b) => (better(a, b) ? -1 : 1));
}

function sortAll(scores: Map<number, number>): TokenScore[] {
  return [...scores].sort((a, b) => (b[1] === a[1] ? a[0] - b[0] : b[1] - a[1]));
}

/**
 * Orama's `calculateResultScores` for one term, without its per-document bookkeeping: the same BM25
 * (`algorithms.js`: idf * (d + tf (k + 1)) / (tf + k (1 - b + b len / avgLen))), over the same index
 * data, added to each document's score in the same order, so every score is bit-for-bit Orama's. What
 * is left out is the per-document Map of matched keywords it allocates for `threshold: 0` searches
 * (this path only serves `threshold: 1`): at 100k memories that allocation and the GC it caused were
 * most of a query's time (CPU profile: 62 s of 156 s in calculateResultScores, 40 s in GC, for 400
 * queries).
 */
function scoreTerm(
  index: OramaIndex,
  prop: string,
  term: string,
  ids: Set<number>,
  docsCount: number,
  { k, b, d }: Required<BM25Params>,
  boostOfProperty: number,
  whereFiltersIDs: Set<number> | undefined,
  scores: Map<number, number>,
  uniqueTokens: boolean,
): void {
  const avgFieldLength = index.avgFieldLength[prop]!;
  const fieldLengths = index.fieldLengths[prop]!;
  const frequencies = index.frequencies[prop];
  const occurrences = index.tokenOccurrences[prop]![term];
  const matchingCount = typeof occurrences === "number" ? occurrences : 0;
  const idf = Math.log(1 + (docsCount - matchingCount + 0.5) / (matchingCount + 0.5));
  for (const id of ids) {
    if (whereFiltersIDs && !whereFiltersIDs.has(id)) continue;
    const length = fieldLengths[id]!;
    // Orama's tf is (occurrences in the field) / (tokens in the field); with a tokenizer that returns
    // each token once that is exactly 1 / length, so the per-document frequency dictionary (a
    // megamorphic lookup and a cache miss per posting, ~0.8 µs at 30k memories) is not read.
    const tf = uniqueTokens ? 1 / length : (frequencies?.[id]?.[term] ?? 0);
    const bm25 = (idf * (d + tf * (k + 1))) / (tf + k * (1 - b + (b * length) / avgFieldLength));
    const previous = scores.get(id);
    scores.set(id, previous === undefined ? bm25 * boostOfProperty : previous + bm25 * boostOfProperty);
  }
}

/**
 * @param uniqueTokenProperties scalar string properties whose tokenizer returns every token at most
 *   once per value (tokenizer.ts guarantees it), so a matched token's tf is 1 / field length.
 */
export function exactTermIndex(uniqueTokenProperties: readonly string[] = []): ExactTermIndex {
  const unique = new Set(uniqueTokenProperties);
  const base = components.index.createIndex();
  let limit: number | undefined;
  const search = (
    index: OramaIndex,
    term: string,
    tokenizer: Tokenizer,
    language: string | undefined,
    properties: string[],
    exact: boolean,
    tolerance: number,
    boost: Record<string, number>,
    relevance: Required<BM25Params>,
    docsCount: number,
    whereFiltersIDs: Set<number> | undefined,
    threshold = 0,
  ): TokenScore[] => {
    const tokens = tokenizer.tokenize(term, language);
    // Orama's own semantics where this component has nothing to add: "all tokens" thresholds, fuzzy
    // matching, and the empty query (which lists every document).
    if (threshold !== 1 || tolerance > 0 || tokens.length === 0) {
      return base.search(index, term, tokenizer, language, properties, true, tolerance, boost, relevance, docsCount, whereFiltersIDs, threshold);
    }
    const scores = new Map<number, number>();
    for (const prop of properties) {
      const tree = index.indexes[prop];
      if (!tree) continue;
      if (tree.type !== "Radix") return base.search(index, term, tokenizer, language, properties, exact, tolerance, boost, relevance, docsCount, whereFiltersIDs, threshold);
      const boostOfProperty = boost[prop] ?? 1;
      const root = tree.node as unknown as RadixNodeShape;
      for (const token of tokens) {
        const node = exactNode(root, token);
        if (node && node.d.size > 0) scoreTerm(index, prop, token, node.d, docsCount, relevance, boostOfProperty, whereFiltersIDs, scores, unique.has(prop));
      }
    }
    return limit === undefined ? sortAll(scores) : topByScore(scores, limit);
  };
  return {
    component: { ...base, search: search as IIndex<OramaIndex>["search"] },
    withLimit<T>(wanted: number, run: () => T): T {
      const previous = limit;
      limit = wanted;
      try {
        return run();
      } finally {
        limit = previous;
      }
    },
  };
}
