/**
 * Retrieval metrics, pure: no I/O, no index. Unit-tested on hand-made rankings (test/eval/metrics.unit.spec.ts).
 *
 * Definitions (one query; `ranked` is the retrieved doc ids, best first; `relevant` maps each relevant
 * doc id to its graded relevance from the qrels, > 0):
 *   - recall@k: |top k of ranked ∩ relevant| / |relevant|. A query with 2 relevant docs, one of them in
 *     the top k, scores 0.5.
 *   - nDCG@k: DCG@k / IDCG@k with linear gains, DCG@k = Σ_{i=1..k} gain(ranked_i) / log2(i + 1), and
 *     IDCG@k the same sum over the relevant docs sorted by gain (the best possible ranking).
 *   - reciprocal rank: 1 / (position of the first relevant doc in `ranked`), 0 when none is retrieved.
 *     MRR averages it; `ranked` is as deep as the evaluation retrieved (see `evaluate` in run.ts).
 * A doc id repeated in `ranked` counts once, at its first position; its repeats take their slots but
 * count as not relevant.
 *
 * Aggregation: each metric is the mean over queries (macro average), so every question weighs the same
 * whatever its number of relevant docs. Queries with no relevant docs cannot be scored: they are left out
 * of every mean and counted separately (`skipped`).
 */

export type Relevance = ReadonlyMap<string, number>;

export interface QueryScores {
  "recall@5": number;
  "recall@10": number;
  "ndcg@10": number;
  mrr: number;
}

export const METRIC_NAMES = ["recall@5", "recall@10", "ndcg@10", "mrr"] as const satisfies readonly (keyof QueryScores)[];

export interface MetricSummary extends QueryScores {
  /** Queries averaged. */
  n: number;
}

export interface EvaluatedQuery {
  category: string;
  scores: QueryScores;
}

export interface Aggregate {
  /** Over every category except the excluded ones. */
  overall: MetricSummary;
  /** Over every category, excluded ones too. */
  all: MetricSummary;
  /** Every category, excluded ones too, sorted by name (numerically when the names are numbers). */
  byCategory: Record<string, MetricSummary>;
}

/** `ranked` with each repeat of an id blanked (it keeps its slot but is never relevant again). */
function firstOccurrences(ranked: readonly string[]): (string | null)[] {
  const seen = new Set<string>();
  return ranked.map((id) => {
    if (seen.has(id)) return null;
    seen.add(id);
    return id;
  });
}

const isRelevant = (relevant: Relevance, id: string | null): id is string => id !== null && relevant.has(id);

function checkK(k: number): void {
  if (!Number.isInteger(k) || k < 1) throw new RangeError(`k must be a whole number >= 1, got ${k}`);
}

function checkRelevant(relevant: Relevance): void {
  if (relevant.size === 0) throw new RangeError("a query with no relevant docs has no recall: skip it");
}

export function recallAt(ranked: readonly string[], relevant: Relevance, k: number): number {
  checkK(k);
  checkRelevant(relevant);
  const found = firstOccurrences(ranked)
    .slice(0, k)
    .filter((id) => isRelevant(relevant, id)).length;
  return found / relevant.size;
}

export function ndcgAt(ranked: readonly string[], relevant: Relevance, k: number): number {
  checkK(k);
  checkRelevant(relevant);
  const discount = (position: number) => 1 / Math.log2(position + 2);
  const dcg = firstOccurrences(ranked)
    .slice(0, k)
    .reduce((sum, id, i) => sum + (isRelevant(relevant, id) ? relevant.get(id)! : 0) * discount(i), 0);
  const ideal = [...relevant.values()]
    .sort((a, b) => b - a)
    .slice(0, k)
    .reduce((sum, gain, i) => sum + gain * discount(i), 0);
  return ideal > 0 ? dcg / ideal : 0;
}

export function reciprocalRank(ranked: readonly string[], relevant: Relevance): number {
  checkRelevant(relevant);
  const position = firstOccurrences(ranked).findIndex((id) => isRelevant(relevant, id));
  return position < 0 ? 0 : 1 / (position + 1);
}

export function scoreQuery(ranked: readonly string[], relevant: Relevance): QueryScores {
  return {
    "recall@5": recallAt(ranked, relevant, 5),
    "recall@10": recallAt(ranked, relevant, 10),
    "ndcg@10": ndcgAt(ranked, relevant, 10),
    mrr: reciprocalRank(ranked, relevant),
  };
}

export function summarize(scores: readonly QueryScores[]): MetricSummary {
  const n = scores.length;
  const mean = (name: keyof QueryScores) => (n === 0 ? 0 : scores.reduce((sum, s) => sum + s[name], 0) / n);
  return { "recall@5": mean("recall@5"), "recall@10": mean("recall@10"), "ndcg@10": mean("ndcg@10"), mrr: mean("mrr"), n };
}

const compareCategories = (a: string, b: string): number => {
  const x = Number(a);
  const y = Number(b);
  if (a.trim() !== "" && b.trim() !== "" && Number.isFinite(x) && Number.isFinite(y)) return x - y;
  return a < b ? -1 : a > b ? 1 : 0;
};

/** Means overall (without `excludeCategories`), over all, and per category. */
export function aggregate(queries: readonly EvaluatedQuery[], excludeCategories: readonly string[] = []): Aggregate {
  const excluded = new Set(excludeCategories);
  const groups = new Map<string, QueryScores[]>();
  for (const query of queries) {
    let group = groups.get(query.category);
    if (!group) groups.set(query.category, (group = []));
    group.push(query.scores);
  }
  const byCategory: Record<string, MetricSummary> = {};
  for (const category of [...groups.keys()].sort(compareCategories)) byCategory[category] = summarize(groups.get(category)!);
  return {
    overall: summarize(queries.filter((q) => !excluded.has(q.category)).map((q) => q.scores)),
    all: summarize(queries.map((q) => q.scores)),
    byCategory,
  };
}
