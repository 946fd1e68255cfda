import { describe, expect, test } from "vitest";
import { checkPoints, unitVector, type VectorPayload } from "../../projections/vectors/vector-index.js";
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

/**
 * checkPoints remembers the payload values the schema accepted and lets a payload made only of such
 * values through without running the schema again. Remembering must never let through what the schema
 * would refuse: a new bad value, an extra key, a missing key, a hole, a value of another type.
 */
describe("checkPoints: payloads checked once per distinct value", () => {
  const vector = () => Float32Array.from([1, 0, 0]);
  const check = (value: unknown) => checkPoints([{ id: "p", vector: vector(), payload: value as VectorPayload }], 3);
  const invalidCode = (value: unknown): string | undefined => {
    try {
      check(value);
      return undefined;
    } catch (error) {
      return (error as { code?: string }).code;
    }
  };

  test("a payload of remembered values is accepted as a copy in the schema's key order, and the caller's lists are not kept", () => {
    const first = payload({ tags: ["t1", "t2"], paths: ["src/a.ts"] });
    expect(check(first)[0]!.payload).toEqual(first);
    // Same values, other key order and other list objects: accepted from memory.
    const again = { modelId: first.modelId, paths: ["src/a.ts"], tags: ["t2", "t1"], version: first.version, status: first.status, kind: first.kind, scope: first.scope, app: first.app };
    const [checked] = check(again);
    expect(Object.keys(checked!.payload)).toEqual(["app", "scope", "kind", "status", "version", "tags", "paths", "modelId"]);
    expect(checked!.payload).toEqual({ ...first, tags: ["t2", "t1"] });
    expect(checked!.payload.tags).not.toBe(again.tags);
    again.tags.push("changed later");
    expect(checked!.payload.tags).toEqual(["t2", "t1"]);
  });

  test("whatever was remembered, the schema still refuses what it refuses", () => {
    const good = payload({ tags: ["t1"], paths: ["src/a.ts"] });
    check(good);
    const refused: [string, unknown][] = [
      ["a new tag with a comma", { ...good, tags: ["t1", "a,b"] }],
      ["a new blank path", { ...good, paths: ["src/a.ts", "   "] }],
      ["an extra key", { ...good, extra: 1 }],
      ["a key missing", { ...good, modelId: undefined }],
      ["a hole in a list", { ...good, tags: [, "t1"] }],
      ["a list where a string goes", { ...good, scope: [good.scope] }],
      ["a string where a list goes", { ...good, tags: "t1" }],
      ["a version as a string", { ...good, version: String(good.version) }],
      ["a version of 0", { ...good, version: 0 }],
      ["an unknown kind", { ...good, kind: "gossip" }],
      ["a list", [good]],
      ["null", null],
    ];
    for (const [what, value] of refused) expect(invalidCode(value), what).toBe("invalid");
    // The refusals taught it nothing: still refused.
    for (const [what, value] of refused) expect(invalidCode(value), `${what}, again`).toBe("invalid");
    expect(invalidCode(good)).toBeUndefined();
  });
});
