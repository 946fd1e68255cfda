import type { Embedder } from "../../projections/embedder.js";
import { dot, isZeroVector } from "../../projections/embedder.js";
import { SearchIndex } from "../../projections/search/search-index.js";
import { embeddingTextOf } from "../../projections/search/vector-channel.js";
import { tokenizeText } from "../../projections/search/tokenizer.js";
import type { DreamView } from "./phase.js";
import { activeMemories, type ActiveMemory } from "./proposals.js";

/**
 * Hybrid similarity over the app's own index, for merge (near-duplicates) and refresh (contradictions).
 *
 * Candidates come from the app's BM25 index (the search projection's SearchIndex, restored from the
 * view's memory states, so it indexes exactly what retrieval would): each memory's rarest words are the
 * query, within its own scope; memories sharing one of their rarest words (at most RARE_DF memories hold
 * it) are candidates too, so a near-duplicate is compared whatever the ranking does with common words. Each candidate pair is then scored:
 *   - lexical: the cosine of the two token sets (the index's own tokenizer: stems, identifiers);
 *   - semantic: the cosine of the two embeddings, when the app runs with an embedder;
 *   - hybrid: their mean with an embedder, the lexical score alone without one (BM25-only apps).
 * Scores are pure functions of the texts (and the embedder's vectors), so the same view gives the same pairs.
 */

export interface SimilarPair {
  a: ActiveMemory;
  b: ActiveMemory;
  lexical: number;
  semantic: number | null;
  hybrid: number;
}

/** Candidates fetched per memory: a near-duplicate ranks near the top of a query made of its own words. */
export const CANDIDATES_PER_MEMORY = 8;
/** Tokens a neighbour query is made of (its rarest): enough to find a duplicate, few enough to keep 5,000 queries fast. */
const QUERY_WORDS = 8;

const tokensOf = (m: ActiveMemory): Set<string> => new Set(tokenizeText([m.version.title, m.version.body, m.version.tags.join(" ")].join("\n")));

export function setCosine(a: ReadonlySet<string>, b: ReadonlySet<string>): number {
  if (a.size === 0 || b.size === 0) return 0;
  let shared = 0;
  const [small, large] = a.size <= b.size ? [a, b] : [b, a];
  for (const t of small) if (large.has(t)) shared++;
  return shared / Math.sqrt(a.size * b.size);
}

/**
 * The query for a memory's neighbours: its rarest tokens in the app (fewest memories contain them),
 * none of the common ones (in more than `maxDf` memories) unless it has fewer than four others.
 * A near-duplicate shares them, and BM25's cost grows with the posting lists a query touches: querying
 * with a whole body made 5,000 queries take minutes (bench/dream.ts); the rarest words take seconds.
 */
function queryOf(tokens: ReadonlySet<string>, titleTokens: readonly string[], frequency: ReadonlyMap<string, number>, maxDf: number): string {
  const words = [...tokens]
    .filter((t) => /^[\p{L}\p{N}_]+$/u.test(t))
    .sort((a, b) => (frequency.get(a) ?? 0) - (frequency.get(b) ?? 0) || (a < b ? -1 : a > b ? 1 : 0));
  const uncommon = words.filter((t) => (frequency.get(t) ?? 0) <= maxDf);
  // A memory with few uncommon words gets its rarest common ones too (up to half a query): it has
  // nothing better to be found by.
  const chosen = uncommon.length >= QUERY_WORDS / 2 ? uncommon.slice(0, QUERY_WORDS) : words.slice(0, Math.max(uncommon.length, QUERY_WORDS / 2));
  // The title names the subject: its two rarest words always take part (two notes on one subject share
  // them; a memory of common words is otherwise one of hundreds that tie).
  const title = [...titleTokens].sort((a, b) => (frequency.get(a) ?? 0) - (frequency.get(b) ?? 0) || (a < b ? -1 : a > b ? 1 : 0));
  return [...new Set([...chosen, ...title.slice(0, 2)])].join(" ");
}

/** A word in at most this many memories is rare: sharing one is a reason to compare two memories. */
const RARE_DF = 16;
const RARE_WORDS = 3;

/** A memory's `n` rarest words that are rare at all (in at most RARE_DF memories), rarest first. */
function rarest(tokens: ReadonlySet<string>, frequency: ReadonlyMap<string, number>, n: number): string[] {
  return [...tokens]
    .filter((t) => (frequency.get(t) ?? 0) <= RARE_DF)
    .sort((a, b) => (frequency.get(a) ?? 0) - (frequency.get(b) ?? 0) || (a < b ? -1 : a > b ? 1 : 0))
    .slice(0, n);
}

/**
 * Every pair of active memories in one scope whose hybrid similarity is at least `minSimilarity`, each
 * pair once (a before b by id), ordered by id. The candidates and their scores are computed once per view
 * and embedder (merge and refresh both ask), then filtered.
 */
export async function similarPairs(
  view: DreamView,
  options: { minSimilarity: number; embedder?: Embedder | undefined; signal?: AbortSignal | undefined },
): Promise<SimilarPair[]> {
  let perEmbedder = scored.get(view);
  if (!perEmbedder) scored.set(view, (perEmbedder = new Map()));
  const slot = options.embedder ?? NO_EMBEDDER;
  let pending = perEmbedder.get(slot);
  if (!pending) {
    pending = scoreCandidates(view, options.embedder, options.signal);
    perEmbedder.set(slot, pending);
    pending.catch(() => perEmbedder!.delete(slot));
  }
  return (await pending).filter((pair) => pair.hybrid >= options.minSimilarity);
}

const NO_EMBEDDER = {};
const scored = new WeakMap<DreamView, Map<object, Promise<SimilarPair[]>>>();

async function scoreCandidates(view: DreamView, embedder: Embedder | undefined, signal: AbortSignal | undefined): Promise<SimilarPair[]> {
  const memories = activeMemories(view);
  if (memories.length < 2) return [];
  const index = SearchIndex.restore({ app: view.app, generation: "dream", seq: 0, records: memories.map((m) => m.state) });
  const byId = new Map(memories.map((m) => [m.id, m]));
  const tokens = new Map<string, Set<string>>();
  const tokenSet = (m: ActiveMemory) => {
    let set = tokens.get(m.id);
    if (!set) tokens.set(m.id, (set = tokensOf(m)));
    return set;
  };

  const frequency = new Map<string, number>();
  for (const m of memories) for (const t of tokenSet(m)) frequency.set(t, (frequency.get(t) ?? 0) + 1);
  // Memories holding each rare word (in at most RARE_DF memories), per scope: two memories that share
  // their rarest words are candidates whatever BM25's ranking does with the common ones.
  const rare = new Map<string, string[]>();
  for (const m of memories) {
    for (const t of rarest(tokenSet(m), frequency, RARE_WORDS)) {
      const key = `${m.scope}\u0000${t}`;
      rare.set(key, [...(rare.get(key) ?? []), m.id]);
    }
  }
  // Words in more than 2% of the memories (at least 50) say little about which memory is a duplicate of
  // which, and their long posting lists are what a query costs: they are left out of the queries.
  const maxDf = Math.max(50, Math.floor(memories.length * 0.02));
  const candidates: [ActiveMemory, ActiveMemory, number][] = [];
  const seen = new Set<string>();
  const consider = (m: ActiveMemory, otherId: string) => {
    if (otherId === m.id) return;
    const other = byId.get(otherId);
    if (!other || other.scope !== m.scope) return;
    const [a, b] = m.id < other.id ? [m, other] : [other, m];
    const key = `${a.id}\u0000${b.id}`;
    if (seen.has(key)) return;
    seen.add(key);
    candidates.push([a, b, setCosine(tokenSet(a), tokenSet(b))]);
  };
  for (const m of memories) {
    signal?.throwIfAborted();
    const query = queryOf(tokenSet(m), tokenizeText(m.version.title).filter((t) => /^[\p{L}\p{N}_]+$/u.test(t)), frequency, maxDf);
    if (query.length > 0) for (const hit of index.rank(query, { scope: m.scope, status: "active" }, CANDIDATES_PER_MEMORY + 1)) consider(m, hit.memoryId);
    for (const t of rarest(tokenSet(m), frequency, RARE_WORDS)) for (const otherId of rare.get(`${m.scope}\u0000${t}`) ?? []) consider(m, otherId);
  }

  let vectors: Map<string, Float32Array> | null = null;
  if (embedder) {
    const ids = [...new Set(candidates.flatMap(([a, b]) => [a.id, b.id]))].sort();
    vectors = new Map();
    const texts = ids.map((id) => embeddingTextOf(byId.get(id)!.version));
    for (let start = 0; start < ids.length; start += 256) {
      signal?.throwIfAborted();
      const batch = await embedder.embed(texts.slice(start, start + 256));
      batch.forEach((vector, i) => vectors!.set(ids[start + i]!, vector));
    }
  }

  const pairs: SimilarPair[] = [];
  for (const [a, b, lexical] of candidates) {
    let semantic: number | null = null;
    if (vectors) {
      const va = vectors.get(a.id)!;
      const vb = vectors.get(b.id)!;
      semantic = isZeroVector(va) || isZeroVector(vb) ? 0 : dot(va, vb);
    }
    const hybrid = semantic === null ? lexical : (lexical + semantic) / 2;
    pairs.push({ a, b, lexical, semantic, hybrid });
  }
  return pairs.sort((x, y) => (x.a.id < y.a.id ? -1 : x.a.id > y.a.id ? 1 : x.b.id < y.b.id ? -1 : x.b.id > y.b.id ? 1 : 0));
}

// ---- contradictions -------------------------------------------------------------------------------

/** Words that turn a statement around. */
const NEGATIONS = new Set(["not", "no", "never", "dont", "don't", "doesnt", "doesn't", "isnt", "isn't", "cannot", "can't", "cant", "mustn't", "shouldn't", "wont", "won't", "avoid", "without", "disable", "disabled", "false", "off", "forbidden", "deprecated"]);
/** Their positive counterparts, dropped from the comparison so "always use X" and "never use X" compare equal. */
const AFFIRMATIONS = new Set(["always", "do", "does", "must", "should", "enable", "enabled", "true", "on", "required", "use", "prefer"]);

const words = (sentence: string): string[] => sentence.toLowerCase().match(/[a-z0-9_'.-]+/g)?.map((w) => w.replace(/^[.'-]+|[.'-]+$/g, "")).filter((w) => w.length > 0) ?? [];

const sentencesOf = (text: string): string[] =>
  text
    .replace(/```[\s\S]*?```/g, " ")
    .split(/(?<=[.!?])\s+|\n+/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);

interface Statement {
  text: string;
  negative: boolean;
  core: Set<string>;
}

/** Parsed once per memory version (a memory is compared with each of its candidates). */
const parsed = new WeakMap<object, { statements: Statement[]; numbers: Map<string, string> }>();
function parsedOf(m: ActiveMemory): { statements: Statement[]; numbers: Map<string, string> } {
  let entry = parsed.get(m.version);
  if (!entry) parsed.set(m.version, (entry = { statements: statementsOf(m), numbers: numberContexts(m) }));
  return entry;
}

function statementsOf(m: ActiveMemory): Statement[] {
  return sentencesOf(`${m.version.title}.\n${m.version.body}`).map((text) => {
    let negations = 0;
    const core = new Set<string>();
    for (const w of words(text)) {
      if (NEGATIONS.has(w)) negations++;
      else if (!AFFIRMATIONS.has(w)) core.add(w);
    }
    return { text, negative: negations % 2 === 1, core };
  });
}

/** Numbers with the words around them: "the worker retries 3 times" is ("the worker retries _ times", 3). */
function numberContexts(m: ActiveMemory): Map<string, string> {
  const out = new Map<string, string>();
  for (const sentence of sentencesOf(`${m.version.title}.\n${m.version.body}`)) {
    const ws = words(sentence);
    ws.forEach((w, i) => {
      if (!/^\d+(?:\.\d+)?[a-z%]*$/.test(w)) return;
      // Three words before: "payments worker retries 3 times" and "billing worker retries 5 times" are
      // about different workers; the same three words and a different number are a contradiction.
      const before = ws.slice(Math.max(0, i - 3), i);
      const after = ws.slice(i + 1, i + 2);
      if (before.length < 3 || after.length < 1) return;
      out.set([...before, "_", ...after].join(" "), w);
    });
  }
  return out;
}

export interface Contradiction {
  cue: "negation" | "number";
  /** The two statements, one from each memory. */
  a: string;
  b: string;
}

/**
 * Whether two memories on the same subject say opposite things: one sentence is the negation of the
 * other (the same words once negations and their positive counterparts are set aside, at least 80%
 * shared), or the same phrase carries different numbers ("retry 3 times" / "retry 5 times"). A heuristic
 * for a reviewer to look at: it flags, it never changes a memory.
 */
export function contradictionBetween(a: ActiveMemory, b: ActiveMemory): Contradiction | null {
  const { numbers: numbersA, statements: statementsA } = parsedOf(a);
  const { numbers: numbersB, statements: statementsB } = parsedOf(b);
  for (const [context, value] of [...numbersA].sort()) {
    const other = numbersB.get(context);
    if (other !== undefined && other !== value) return { cue: "number", a: `${context.replace("_", value)}`, b: `${context.replace("_", other)}` };
  }
  for (const sa of statementsA) {
    if (sa.core.size < 2) continue;
    for (const sb of statementsB) {
      if (sb.core.size < 2 || sa.negative === sb.negative) continue;
      if (setCosine(sa.core, sb.core) >= 0.8) return { cue: "negation", a: sa.text, b: sb.text };
    }
  }
  return null;
}
