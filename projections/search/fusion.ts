/**
 * Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009): each ranking adds
 * `weight / (k + rank)` to every item it contains (rank from 1). Ranks, not scores, are fused because
 * the channels' scores are not comparable: BM25 is unbounded and corpus-dependent, cosine is in [-1, 1].
 * The constant k flattens the difference between neighbouring ranks, so an item that two channels both
 * rank well beats one that a single channel ranks first.
 *
 * Defaults: k 20 (the paper's is 60) and, for hybrid retrieval (retrieve.ts), BM25 weighted 2 against the
 * vector channel's 1. With the default embedder (USE-lite, the weaker channel on its own) the paper's
 * 1 : 1 at k 60 left hybrid below BM25 alone on LoCoMo turns (recall@10, categories 1-4, 0.576 vs
 * 0.578); 2 : 1 at k 20 gave 0.618 (`npm run eval`, before BM25 b 0.1 and stemming). A smaller k lets
 * a channel's top ranks count for more than its tail, and the weight keeps the vector channel's misses
 * from pulling down what BM25 ranks first. Both stay options (`rrfK`, `weights`): with a stronger
 * embedder, measure again.
 *
 * Pure: no I/O, no index; unit-tested on hand-made rankings.
 */

export const DEFAULT_RRF_K = 20;

/** Hybrid retrieval's default weight per channel; a channel a caller leaves out of `weights` keeps its own. */
export const DEFAULT_CHANNEL_WEIGHTS: Readonly<{ bm25: number; vector: number }> = Object.freeze({ bm25: 2, vector: 1 });

export interface FuseOptions {
  /** The rank constant; must be >= 0. Default {@link DEFAULT_RRF_K} (20). */
  k?: number;
  /** Per-ranking weight, default 1. A weight of 0 ignores that ranking entirely. */
  weights?: Readonly<Record<string, number | undefined>>;
}

export interface FusedItem {
  id: string;
  fused: number;
  /** 1-based rank of the item in each ranking that contains it. */
  ranks: Record<string, number>;
}

/**
 * Fuses rankings (name → ids, best first) into one list, best first. An id that appears twice in one
 * ranking counts at its first (best) position. Ties on the fused score go to the item with the better
 * best rank, then the one found by more rankings, then the smaller id, so the order never depends on
 * the order of the inputs.
 */
export function fuseRrf(rankings: Readonly<Record<string, readonly string[]>>, options: FuseOptions = {}): FusedItem[] {
  const k = options.k ?? DEFAULT_RRF_K;
  if (!Number.isFinite(k) || k < 0) throw new RangeError(`RRF k must be a finite number >= 0, got ${k}`);
  const items = new Map<string, FusedItem>();
  for (const [name, ids] of Object.entries(rankings)) {
    const weight = options.weights?.[name] ?? 1;
    if (!Number.isFinite(weight) || weight < 0) throw new RangeError(`RRF weight of ${name} must be a finite number >= 0, got ${weight}`);
    if (weight === 0) continue;
    ids.forEach((id, position) => {
      let item = items.get(id);
      if (!item) {
        item = { id, fused: 0, ranks: {} };
        items.set(id, item);
      }
      if (item.ranks[name] !== undefined) return;
      const rank = position + 1;
      item.ranks[name] = rank;
      item.fused += weight / (k + rank);
    });
  }
  return [...items.values()].sort(compareFused);
}

const bestRank = (item: FusedItem): number => Math.min(...Object.values(item.ranks));

function compareFused(a: FusedItem, b: FusedItem): number {
  if (a.fused !== b.fused) return b.fused - a.fused;
  const rankDifference = bestRank(a) - bestRank(b);
  if (rankDifference !== 0) return rankDifference;
  const found = Object.keys(b.ranks).length - Object.keys(a.ranks).length;
  if (found !== 0) return found;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
