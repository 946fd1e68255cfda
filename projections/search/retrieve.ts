import { invalid } from "../../schemas/errors.js";
import type { Embedder } from "../embedder.js";
import { MAX_SEARCH_K } from "../vectors/vector-index.js";
import type { ChannelHit } from "./fulltext-channel.js";
import { DEFAULT_CHANNEL_WEIGHTS, DEFAULT_RRF_K, fuseRrf } from "./fusion.js";
import type { IndexedMemory } from "./memory-records.js";
import { matchesRetrievalFilter, pathIsUnder, type RetrievalFilter } from "./retrieval-filter.js";
import { hitOf, type SearchHit, type SearchIndex } from "./search-index.js";
import { tokenizeText } from "./tokenizer.js";

import { RETRIEVAL_MODES, type RetrievalMode } from "../../schemas/retrieval.js";
export { RETRIEVAL_MODES, type RetrievalMode };

export interface RetrieveOptions extends RetrievalFilter {
  /** How many results at most. */
  k: number;
  /** Default hybrid. */
  mode?: RetrievalMode;
  /** RRF's rank constant, default {@link DEFAULT_RRF_K} (20). */
  rrfK?: number;
  /**
   * Per-channel RRF weights, default {@link DEFAULT_CHANNEL_WEIGHTS} (BM25 2, vector 1, tuned for the
   * default embedder; see fusion.ts); a channel left out keeps its default, 0 leaves a channel out.
   */
  weights?: { bm25?: number | undefined; vector?: number | undefined };
  /**
   * Lifts candidates the channels found, never adds others: a memory whose paths touch one of these
   * (either lies under the other), or whose active version was proposed on this git branch, has its
   * fused score multiplied by {@link BOOST_FACTOR} (per kind of match).
   */
  boost?: { paths?: readonly string[]; branch?: string };
}

/** Where a result came from: the app's own index, or the org's (shared by every app). */
export type MemoryOrigin = "app" | "org";

export interface ChannelRank {
  /** 1-based, within the channel's results of the memory's own index, after filtering. */
  rank: number;
  /** The channel's own score: BM25 (with the exact-identifier bonus), or cosine similarity. */
  score: number;
}

export interface RetrievedMemory extends SearchHit {
  /** `score` (from SearchHit) is the final ranking score: `fused` times the boosts that applied. */
  app: string;
  origin: MemoryOrigin;
  body: string;
  tags: string[];
  paths: string[];
  importance: number;
  channels: { bm25?: ChannelRank; vector?: ChannelRank };
  /** The reciprocal-rank-fusion score before boosts. */
  fused: number;
  /** How many identifiers named in the query this memory contains exactly (see `retrieve`). */
  identifiersMatched: number;
}

/** The org stream is projected as its own search index whose app is "org" (services/projection-supervisor.ts). */
export const ORG_INDEX_APP = "org";
export const BOOST_FACTOR = 1.25;
/** Candidates per channel: deeper than k so fusion sees what one channel ranks low and the other high. */
export const candidateDepth = (k: number): number => Math.max(50, 5 * k);

const channelKey = (channel: "bm25" | "vector", indexPosition: number): string => `${channel}#${indexPosition}`;
const memoryKey = (indexPosition: number, memoryId: string): string => `${indexPosition}\u0000${memoryId}`;

interface Candidate {
  index: SearchIndex;
  view: IndexedMemory;
  channels: { bm25?: ChannelRank; vector?: ChannelRank };
  identifiersMatched: number;
}

/**
 * Active memories best matching `query`, best first, from one index or several (an app's and the
 * org's: pass both and org results come back marked `origin: "org"`).
 *
 * - The BM25 and vector channels of every index run concurrently (the query is embedded while BM25
 *   runs), each fetching `max(50, 5k)` candidates, and are fused by reciprocal rank fusion. Each index
 *   contributes its own rankings: BM25 scores of different corpora are not comparable (idf is per
 *   corpus), ranks are.
 * - The query is embedded once per embedder through the index's own embedder (a CachedEmbedder in
 *   production), so a repeated query is a cache read.
 * - Exact identifiers beat fusion: a memory containing more of the identifiers the query names as
 *   whole tokens (`StripeWebhookHandler`, `ERR_TOKEN_EXPIRED`, a path) ranks above one containing
 *   fewer, whatever its fused score. An embedding cannot tell `StripeWebhookHandler` from
 *   `StripeWebhookVerifier`; the BM25 channel can, and an agent asking for an identifier wants that one.
 * - Filters apply identically to both channels (retrieval-filter.ts).
 */
export async function retrieve(indexes: SearchIndex | readonly SearchIndex[], query: string, options: RetrieveOptions): Promise<RetrievedMemory[]> {
  const list: readonly SearchIndex[] = Array.isArray(indexes) ? indexes : [indexes as SearchIndex];
  const { k, mode = "hybrid", rrfK = DEFAULT_RRF_K, weights = {}, boost, ...filter } = options;
  checkOptions(options, mode);
  const useBm25 = mode !== "vector";
  const useVector = mode !== "bm25";
  const depth = candidateDepth(k);

  // Start embedding first: it is the only step that waits on I/O, and BM25 runs meanwhile.
  const queryVectors = useVector ? embedQueryOnce(list, query) : new Map<Embedder, Promise<Float32Array | null>>();
  const bm25Rankings = useBm25 ? list.map((index) => bm25Candidates(index, query, filter, depth)) : [];
  const vectorRankings = useVector
    ? await Promise.all(
        list.map(async (index) => {
          const channel = index.vectors!;
          const vector = await queryVectors.get(channel.embedder)!;
          if (!vector) return [];
          // tags (all-of, any case) and paths (under) are checked here, so fetch deeper when they narrow.
          const limit = filter.tags?.length || filter.paths?.length ? MAX_SEARCH_K : Math.min(depth, MAX_SEARCH_K);
          return keepMatching(index, await channel.search(vector, filter, limit), filter).slice(0, depth);
        }),
      )
    : [];

  const candidates = new Map<string, Candidate>();
  const rankings: Record<string, string[]> = {};
  const note = (position: number, channel: "bm25" | "vector", hits: ChannelHit[]) => {
    const index = list[position]!;
    rankings[channelKey(channel, position)] = hits.map((hit, i) => {
      const key = memoryKey(position, hit.memoryId);
      let candidate = candidates.get(key);
      if (!candidate) {
        candidate = { index, view: index.view(hit.memoryId)!, channels: {}, identifiersMatched: 0 };
        candidates.set(key, candidate);
      }
      candidate.channels[channel] = { rank: i + 1, score: hit.score };
      candidate.identifiersMatched = Math.max(candidate.identifiersMatched, hit.identifiersMatched ?? 0);
      return key;
    });
  };
  bm25Rankings.forEach((hits, position) => note(position, "bm25", hits));
  vectorRankings.forEach((hits, position) => note(position, "vector", hits));

  const channelWeights: Record<string, number | undefined> = {};
  list.forEach((_, position) => {
    channelWeights[channelKey("bm25", position)] = weights.bm25 ?? DEFAULT_CHANNEL_WEIGHTS.bm25;
    channelWeights[channelKey("vector", position)] = weights.vector ?? DEFAULT_CHANNEL_WEIGHTS.vector;
  });
  const queryTokens = tokenizeText(query);
  const results = fuseRrf(rankings, { k: rrfK, weights: channelWeights }).map((item, fusedOrder) => {
    const candidate = candidates.get(item.id)!;
    const factor = boostFactor(candidate, boost);
    return { candidate, fused: item.fused, score: item.fused * factor, fusedOrder };
  });
  results.sort(
    (a, b) =>
      b.candidate.identifiersMatched - a.candidate.identifiersMatched ||
      b.score - a.score ||
      a.fusedOrder - b.fusedOrder,
  );
  return results.slice(0, k).map(({ candidate, fused, score }) => toResult(candidate, fused, score, queryTokens));
}

function checkOptions(options: RetrieveOptions, mode: RetrievalMode): void {
  if (!Number.isInteger(options.k) || options.k < 1) throw invalid(`k must be a whole number >= 1, got ${options.k}`);
  if (!RETRIEVAL_MODES.includes(mode)) throw invalid(`mode must be one of ${RETRIEVAL_MODES.join(", ")}, got ${String(mode)}`);
  if (options.rrfK !== undefined && !(Number.isFinite(options.rrfK) && options.rrfK >= 0)) throw invalid(`rrfK must be a number >= 0, got ${options.rrfK}`);
  for (const [name, weight] of Object.entries(options.weights ?? {})) {
    if (weight !== undefined && !(Number.isFinite(weight) && weight >= 0)) throw invalid(`weight of ${name} must be a number >= 0, got ${weight}`);
  }
  if (options.status !== undefined && options.status !== "active") {
    throw invalid(`retrieval returns active memories only; status ${JSON.stringify(options.status)} matches nothing`);
  }
}

/** The query's vector per distinct embedder (app and org indexes normally share one). */
function embedQueryOnce(indexes: readonly SearchIndex[], query: string): Map<Embedder, Promise<Float32Array | null>> {
  const vectors = new Map<Embedder, Promise<Float32Array | null>>();
  for (const index of indexes) {
    const channel = index.vectors;
    if (!channel) {
      throw invalid(`the search index of ${index.app} has no vector channel: use mode bm25, or configure an embedder (MEMLEDGER_EMBEDDER) and vectors (MEMLEDGER_VECTORS)`);
    }
    if (!vectors.has(channel.embedder)) vectors.set(channel.embedder, channel.embedQuery(query));
  }
  // Each promise is awaited later; until then a rejection must not count as unhandled.
  for (const pending of vectors.values()) pending.catch(() => undefined);
  return vectors;
}

function bm25Candidates(index: SearchIndex, query: string, filter: RetrievalFilter, depth: number): ChannelHit[] {
  // Paths ("lies under") are checked on the candidates, so with a path filter every match is a candidate;
  // BM25 scores every matching document anyway, the limit only cuts the list.
  const limit = filter.paths?.length ? Math.max(depth, index.indexedCount) : depth;
  return keepMatching(index, index.rank(query, filter, limit), filter).slice(0, depth);
}

function keepMatching(index: SearchIndex, hits: ChannelHit[], filter: RetrievalFilter): ChannelHit[] {
  return hits.filter((hit) => {
    const view = index.view(hit.memoryId);
    return view !== undefined && matchesRetrievalFilter(view, filter);
  });
}

function boostFactor(candidate: Candidate, boost: RetrieveOptions["boost"]): number {
  if (!boost) return 1;
  let factor = 1;
  const { view, index } = candidate;
  const wanted = boost.paths ?? [];
  if (wanted.length > 0 && view.paths.some((path) => wanted.some((other) => pathIsUnder(path, other) || pathIsUnder(other, path)))) {
    factor *= BOOST_FACTOR;
  }
  if (boost.branch !== undefined && index.branchOf(view.memoryId, view.version) === boost.branch) factor *= BOOST_FACTOR;
  return factor;
}

function toResult(candidate: Candidate, fused: number, score: number, queryTokens: readonly string[]): RetrievedMemory {
  const { view, index } = candidate;
  return {
    ...hitOf(view, score, queryTokens),
    app: view.app,
    origin: index.app === ORG_INDEX_APP ? "org" : "app",
    body: view.body,
    tags: view.tags,
    paths: view.paths,
    importance: view.importance,
    channels: candidate.channels,
    fused,
    identifiersMatched: candidate.identifiersMatched,
  };
}
