import { describe, expect, test } from "vitest";
import { simdDot } from "../../projections/vectors/simd-dot.js";
import { dot, topHits, unitVector } from "../../projections/vectors/vector-index.js";
import { VectorStore } from "../../projections/vectors/vector-store.js";
import { payload } from "./conformance.js";
import { randomVector, seededRandom } from "./data.js";

/**
 * The SIMD kernel of exact scans must give `dot`'s float64 to the bit (not merely close): a graph
 * search rescored by `dot` and an exact scan must rank, and break ties, identically.
 */
describe("SIMD dot kernel", () => {
  test("equals dot to the bit, for every width that is a multiple of 8 and for values of every magnitude", () => {
    const kernel = simdDot(64)!;
    expect(kernel).toBeDefined();
    const random = seededRandom(21);
    let compared = 0;
    for (const dimensions of [8, 16, 24, 64, 384, 512, 768, 1536]) {
      for (let trial = 0; trial < 50; trial++) {
        const scale = 10 ** Math.floor(random() * 12 - 6);
        const a = randomVector(random, dimensions).map((x) => x * scale);
        const b = randomVector(random, dimensions).map((x, i) => (i % 5 === 0 ? x * 1e-3 : x));
        new Float64Array(kernel.memory.buffer, 0, dimensions).set(a);
        new Float32Array(kernel.memory.buffer, dimensions * 8, dimensions).set(b);
        expect(Object.is(kernel.dot(0, dimensions * 8, dimensions), dot(a, b))).toBe(true);
        compared++;
      }
    }
    expect(compared).toBe(400);
  });

  test("a store of 512-d vectors scans through the kernel, and its top k equals topHits over dot scores, across growth", async () => {
    const dimensions = 512;
    const store = new VectorStore(dimensions, 4);
    const random = seededRandom(22);
    // 3,000 points from an initial capacity of 4: the kernel's memory grows many times under the store.
    for (let i = 0; i < 3000; i++) store.put({ id: `v${i}`, vector: unitVector(randomVector(random, dimensions)), payload: payload({ scope: `s${i % 3}` }) });
    expect((store as unknown as { simd: unknown }).simd).toBeDefined();
    for (let q = 0; q < 5; q++) {
      const query = unitVector(randomVector(random, dimensions));
      const slots = store.matchingSlots({ scope: ["s1"] });
      expect(store.topK(query, slots, 25)).toEqual(topHits(store.score(query, slots), 25));
      const all = Int32Array.from(store.slots());
      expect(store.topK(query, all, 3000)).toEqual(topHits(store.score(query, all), 3000));
    }
  });
});
