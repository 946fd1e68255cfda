import { describe, expect, test } from "vitest";
import { checkPoints, unitVector } from "../../projections/vectors/vector-index.js";
import { VectorStore } from "../../projections/vectors/vector-store.js";
import { payload } from "./conformance.js";
import { randomVector, seededRandom } from "./data.js";

/**
 * An index copies a checked point into its store once, dividing by the norm checkPoints measured, instead
 * of making a unit copy first: what is stored must still be unitVector's copy to the bit, since exact
 * scans and graph searches score stored vectors with `dot` and must rank and break ties identically.
 */
describe("VectorStore: a checked point copied in as a unit vector", () => {
  test("stores unitVector's components to the bit, for every magnitude, and leaves the caller's array as it was", () => {
    const random = seededRandom(5);
    let compared = 0;
    for (const dimensions of [3, 16, 512]) {
      const store = new VectorStore(dimensions, 2);
      for (let trial = 0; trial < 40; trial++) {
        const scale = 10 ** Math.floor(random() * 12 - 6);
        const vector = randomVector(random, dimensions).map((x) => x * scale);
        const before = Float32Array.from(vector);
        const [checked] = checkPoints([{ id: `p${trial}`, vector, payload: payload() }], dimensions);
        const { slot } = store.put(checked!, checked!.norm);
        expect(checked!.vector).toBe(vector);
        expect(Buffer.from(store.vectorAt(slot).buffer, store.vectorAt(slot).byteOffset, dimensions * 4)).toEqual(
          Buffer.from(unitVector(vector).buffer),
        );
        expect(vector).toEqual(before);
        compared++;
      }
    }
    expect(compared).toBe(120);
  });

  test("a point already of unit length (norm 1) is stored as given", () => {
    const store = new VectorStore(4, 1);
    const vector = Float32Array.from([0.6, 0.8, 0, 0]);
    const { slot } = store.put({ id: "u", vector, payload: payload() });
    expect(store.vectorAt(slot)).toEqual(vector);
  });
});
