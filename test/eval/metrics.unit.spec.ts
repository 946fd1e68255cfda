import { describe, expect, test } from "vitest";
import { aggregate, ndcgAt, recallAt, reciprocalRank, scoreQuery, summarize } from "../../services/eval/metrics.js";

const rel = (...ids: string[]) => new Map(ids.map((id) => [id, 1]));

describe("recall@k", () => {
  test("the fraction of relevant docs in the top k", () => {
    const ranked = ["a", "x", "b", "y", "z", "c"];
    expect(recallAt(ranked, rel("a", "b", "c"), 1)).toBeCloseTo(1 / 3);
    expect(recallAt(ranked, rel("a", "b", "c"), 3)).toBeCloseTo(2 / 3);
    expect(recallAt(ranked, rel("a", "b", "c"), 5)).toBeCloseTo(2 / 3);
    expect(recallAt(ranked, rel("a", "b", "c"), 6)).toBe(1);
    expect(recallAt(ranked, rel("q"), 10)).toBe(0);
  });

  test("a doc listed twice counts once, at its first position; fewer than k results is fine", () => {
    expect(recallAt(["a", "a", "a", "b"], rel("a", "b"), 2)).toBe(0.5);
    expect(recallAt(["a", "a", "a", "b"], rel("a", "b"), 4)).toBe(1);
    expect(ndcgAt(["a", "a"], rel("a", "b"), 10)).toBeCloseTo(1 / (1 + 1 / Math.log2(3)));
    expect(recallAt(["a"], rel("a", "b"), 10)).toBe(0.5);
    expect(recallAt([], rel("a"), 10)).toBe(0);
  });

  test("no relevant docs, or a bad k, is refused rather than scored", () => {
    expect(() => recallAt(["a"], new Map(), 10)).toThrow(/no relevant/);
    expect(() => recallAt(["a"], rel("a"), 0)).toThrow(RangeError);
  });
});

describe("nDCG@k", () => {
  test("1 for an ideal ranking, lower the further down the relevant docs are", () => {
    expect(ndcgAt(["a", "b", "x"], rel("a", "b"), 10)).toBeCloseTo(1);
    // One relevant doc at rank 2: (1/log2 3) / 1.
    expect(ndcgAt(["x", "a"], rel("a"), 10)).toBeCloseTo(1 / Math.log2(3));
    // Two relevant docs at ranks 1 and 3: (1 + 1/2) / (1 + 1/log2 3).
    expect(ndcgAt(["a", "x", "b"], rel("a", "b"), 10)).toBeCloseTo(1.5 / (1 + 1 / Math.log2(3)));
    expect(ndcgAt(["x", "y"], rel("a"), 10)).toBe(0);
  });

  test("graded gains: the more relevant doc first is ideal; beyond k counts nothing", () => {
    const graded = new Map([
      ["a", 2],
      ["b", 1],
    ]);
    expect(ndcgAt(["a", "b"], graded, 10)).toBeCloseTo(1);
    expect(ndcgAt(["b", "a"], graded, 10)).toBeCloseTo((1 + 2 / Math.log2(3)) / (2 + 1 / Math.log2(3)));
    expect(ndcgAt(["x", "a"], rel("a"), 1)).toBe(0);
  });
});

describe("reciprocal rank", () => {
  test("1/rank of the first relevant doc, 0 when none", () => {
    expect(reciprocalRank(["a", "b"], rel("a"))).toBe(1);
    expect(reciprocalRank(["x", "y", "b", "a"], rel("a", "b"))).toBeCloseTo(1 / 3);
    expect(reciprocalRank(["x", "x", "a"], rel("a"))).toBeCloseTo(1 / 3);
    expect(reciprocalRank(["x"], rel("a"))).toBe(0);
  });
});

describe("aggregation", () => {
  test("macro averages per category; overall leaves excluded categories out, all and byCategory keep them", () => {
    const q = (category: string, ranked: string[], ...relevant: string[]) => ({ category, scores: scoreQuery(ranked, rel(...relevant)) });
    const queries = [
      q("1", ["a"], "a"), // recall 1
      q("1", ["x"], "a", "b"), // recall 0
      q("2", ["a", "b"], "a", "b"), // recall 1
      q("5", ["x"], "a"), // recall 0
    ];
    const result = aggregate(queries, ["5"]);
    expect(Object.keys(result.byCategory)).toEqual(["1", "2", "5"]);
    expect(result.byCategory["1"]).toMatchObject({ n: 2, "recall@10": 0.5, mrr: 0.5 });
    expect(result.byCategory["2"]).toMatchObject({ n: 1, "recall@5": 1, "ndcg@10": 1 });
    expect(result.byCategory["5"]).toMatchObject({ n: 1, "recall@10": 0 });
    expect(result.overall.n).toBe(3);
    expect(result.overall["recall@10"]).toBeCloseTo(2 / 3);
    expect(result.all.n).toBe(4);
    expect(result.all["recall@10"]).toBeCloseTo(0.5);
  });

  test("categories sort numerically when they are numbers (10 after 9)", () => {
    const scores = scoreQuery(["a"], rel("a"));
    const result = aggregate(["10", "9", "b", "a"].map((category) => ({ category, scores })));
    expect(Object.keys(result.byCategory)).toEqual(["9", "10", "a", "b"]);
  });

  test("an empty group averages to 0 with n 0", () => {
    expect(summarize([])).toEqual({ "recall@5": 0, "recall@10": 0, "ndcg@10": 0, mrr: 0, n: 0 });
  });
});
