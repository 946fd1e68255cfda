import { describe, expect, test } from "vitest";
import { DEFAULT_RRF_K, fuseRrf } from "../../projections/search/index.js";

const ids = (items: { id: string }[]) => items.map((item) => item.id);

describe("reciprocal rank fusion on hand-made rankings", () => {
  test("scores are the sum of weight / (k + rank), ranks from 1", () => {
    const fused = fuseRrf({ bm25: ["a", "b", "c"], vector: ["c", "a"] }, { k: 60 });
    expect(ids(fused)).toEqual(["a", "c", "b"]);
    expect(fused[0]!.fused).toBeCloseTo(1 / 61 + 1 / 62, 12);
    expect(fused[1]!.fused).toBeCloseTo(1 / 63 + 1 / 61, 12);
    expect(fused[2]!.fused).toBeCloseTo(1 / 62, 12);
    expect(fused[0]!.ranks).toEqual({ bm25: 1, vector: 2 });
    expect(fused[2]!.ranks).toEqual({ bm25: 2 });
  });

  test("found by both channels beats first in one channel only", () => {
    // x is first in bm25 only; y is second in both.
    expect(ids(fuseRrf({ bm25: ["x", "y"], vector: ["z", "y"] }))).toEqual(["y", "x", "z"]);
  });

  test("a missing or empty channel contributes nothing", () => {
    expect(fuseRrf({ bm25: ["a", "b"] })).toEqual(fuseRrf({ bm25: ["a", "b"], vector: [] }));
    expect(ids(fuseRrf({ bm25: [], vector: ["v1", "v2"] }))).toEqual(["v1", "v2"]);
    expect(fuseRrf({})).toEqual([]);
  });

  test("ties: equal fused scores are ordered by best rank, then by how many channels found them, then by id", () => {
    // a: bm25 #1 and vector #2; b: bm25 #2 and vector #1: exactly equal sums, same best rank, same count.
    expect(ids(fuseRrf({ bm25: ["b", "a"], vector: ["a", "b"] }))).toEqual(["a", "b"]);
    expect(ids(fuseRrf({ bm25: ["a", "b"], vector: ["b", "a"] }))).toEqual(["a", "b"]);
    // With k = 0: p at rank 1 in one channel (1/1) ties q at rank 2 in two channels (1/2 + 1/2); p's best rank wins.
    expect(ids(fuseRrf({ one: ["p", "q"], two: ["r", "q"] }, { k: 0 })).slice(0, 2)).toEqual(["p", "r"]);
    // The order of the input channels does not matter.
    expect(fuseRrf({ vector: ["c", "a"], bm25: ["a", "b", "c"] })).toEqual(fuseRrf({ bm25: ["a", "b", "c"], vector: ["c", "a"] }));
  });

  test("weights scale a channel's contribution; weight 0 leaves it out", () => {
    const rankings = { bm25: ["lexical"], vector: ["semantic"] };
    expect(ids(fuseRrf(rankings, { weights: { vector: 2 } }))).toEqual(["semantic", "lexical"]);
    expect(ids(fuseRrf(rankings, { weights: { bm25: 2 } }))).toEqual(["lexical", "semantic"]);
    expect(fuseRrf(rankings, { weights: { vector: 2 } })[0]!.fused).toBeCloseTo(2 / 21, 12);
    expect(ids(fuseRrf(rankings, { weights: { vector: 0 } }))).toEqual(["lexical"]);
  });

  test("an id repeated inside one ranking counts once, at its best position", () => {
    const fused = fuseRrf({ bm25: ["a", "b", "a"] });
    // Default k 20 (fusion.ts says why not the paper's 60).
    expect(DEFAULT_RRF_K).toBe(20);
    expect(fused.find((item) => item.id === "a")).toEqual({ id: "a", fused: 1 / 21, ranks: { bm25: 1 } });
  });

  test("a larger k flattens the gap between neighbouring ranks", () => {
    const gap = (k: number) => {
      const [first, second] = fuseRrf({ c: ["a", "b"] }, { k });
      return first!.fused - second!.fused;
    };
    expect(gap(1)).toBeGreaterThan(gap(60));
  });

  test("negative k or weights are refused", () => {
    expect(() => fuseRrf({ c: ["a"] }, { k: -1 })).toThrow(RangeError);
    expect(() => fuseRrf({ c: ["a"] }, { weights: { c: -1 } })).toThrow(RangeError);
  });
});
