import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, test } from "vitest";
import { isMemledgerError, type ErrorCode } from "../../schemas/errors.js";
import { randomVector, seededRandom } from "./data.js";
import { isPersistentVectorIndex, type PersistentVectorIndex, type VectorIndex, type VectorPayload, type VectorPoint } from "../../projections/vectors/vector-index.js";

/**
 * One behaviour for every VectorIndex implementation. Each implementation's test file calls
 * `defineVectorIndexConformance` with a factory; indexes that are persistent also run the save/load part.
 */
export interface VectorIndexFactory {
  /** Its indexes implement save/load: the persistence part of the suite runs for them. */
  persistent: boolean;
  /** A new, empty index of these dimensions. */
  create(dimensions: number): Promise<VectorIndex>;
  /** Frees what `create` made beyond the index itself (a server collection). */
  destroy?(index: VectorIndex): Promise<void>;
}

export const payload = (overrides: Partial<VectorPayload> = {}): VectorPayload => ({
  app: "shop",
  scope: "app",
  kind: "note",
  status: "active",
  version: 1,
  tags: [],
  paths: [],
  modelId: "test-model",
  ...overrides,
});

export const point = (id: string, vector: number[], overrides: Partial<VectorPayload> = {}): VectorPoint => ({
  id,
  vector: Float32Array.from(vector),
  payload: payload(overrides),
});

export async function expectLedgerError(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error, `expected a ${code} error`).not.toBeNull();
  expect(isMemledgerError(error) ? error.code : error).toBe(code);
}

const ids = (hits: { id: string }[]) => hits.map((hit) => hit.id);
const unit = (...components: number[]) => Float32Array.from(components);

export function defineVectorIndexConformance(implementation: string, factory: VectorIndexFactory): void {
  describe(`VectorIndex conformance: ${implementation}`, () => {
    const open: VectorIndex[] = [];
    const temporaryDirs: string[] = [];

    const fresh = async (dimensions = 4): Promise<VectorIndex> => {
      const index = await factory.create(dimensions);
      open.push(index);
      return index;
    };
    const tempDir = async (): Promise<string> => {
      const dir = await mkdtemp(join(tmpdir(), "memledger-vectors-"));
      temporaryDirs.push(dir);
      return dir;
    };

    afterEach(async () => {
      for (const index of open.splice(0)) {
        await factory.destroy?.(index);
        await index.close();
      }
    });
    afterAll(async () => {
      for (const dir of temporaryDirs) await rm(dir, { recursive: true, force: true });
    });

    test("reports its dimensions, and an empty index finds nothing", async () => {
      const index = await fresh(4);
      expect(index.dimensions).toBe(4);
      expect(await index.count()).toBe(0);
      expect(await index.search(unit(1, 0, 0, 0), { k: 5 })).toEqual([]);
    });

    test("finds the exact stored vector first, with similarity 1, among 300 random ones", async () => {
      const dimensions = 32;
      const index = await fresh(dimensions);
      const random = seededRandom(7);
      const points = Array.from({ length: 300 }, (_, i) => ({ id: `m${i}`, vector: randomVector(random, dimensions), payload: payload() }));
      await index.upsert(points);
      expect(await index.count()).toBe(300);
      for (const target of [0, 149, 299]) {
        const hits = await index.search(points[target]!.vector, { k: 3 });
        expect(hits[0]!.id).toBe(`m${target}`);
        expect(hits[0]!.score).toBeCloseTo(1, 5);
        expect(hits[1]!.score).toBeLessThan(hits[0]!.score);
      }
    });

    test("keeps vectors of its own: the caller's arrays changed after an upsert change nothing", async () => {
      const index = await fresh(4);
      const points = [point("a", [3, 0, 0, 0]), point("b", [0, 2, 0, 0])];
      const upserting = index.upsert(points);
      // Reused by the caller as soon as the call returned, before the upsert settled, and again after.
      points[0]!.vector.set([0, 0, 0, 1]);
      await upserting;
      points[1]!.vector.set([0, 0, 1, 0]);
      const [a] = await index.search(unit(1, 0, 0, 0), { k: 1 });
      expect(a).toEqual({ id: "a", score: expect.closeTo(1, 5) as number });
      const [b] = await index.search(unit(0, 1, 0, 0), { k: 1 });
      expect(b).toEqual({ id: "b", score: expect.closeTo(1, 5) as number });
    });

    test("orders by cosine similarity, ignores vector length, and breaks ties by id", async () => {
      const index = await fresh(4);
      await index.upsert([
        point("opposite", [-1, 0, 0, 0]),
        point("orthogonal", [0, 1, 0, 0]),
        point("diagonal", [1, 1, 0, 0]),
        point("same-long", [5, 0, 0, 0]),
        point("same", [1, 0, 0, 0]),
        point("near", [1, 0.1, 0, 0]),
      ]);
      const hits = await index.search(unit(2, 0, 0, 0), { k: 6 });
      expect(ids(hits)).toEqual(["same", "same-long", "near", "diagonal", "orthogonal", "opposite"]);
      const expected = [1, 1, 1 / Math.sqrt(1.01), Math.SQRT1_2, 0, -1];
      hits.forEach((hit, i) => expect(hit.score).toBeCloseTo(expected[i]!, 5));
    });

    test("chooses among hits tied at the k-th place by id, whatever the insertion order", async () => {
      const index = await fresh(4);
      await index.upsert(["t5", "t3", "t1", "t4", "t2"].map((id) => point(id, [0, 0, 1, 0])));
      await index.upsert([point("best", [0, 0.1, 1, 0]), point("other", [1, 0, 0, 0])]);
      // "best" is not the exact direction of the query; the five tied copies are.
      expect(ids(await index.search(unit(0, 0, 3, 0), { k: 3 }))).toEqual(["t1", "t2", "t3"]);
      expect(ids(await index.search(unit(0, 0, 3, 0), { k: 6 }))).toEqual(["t1", "t2", "t3", "t4", "t5", "best"]);
    });

    test("upsert of a known id replaces its vector and payload, and the count stays", async () => {
      const index = await fresh(4);
      await index.upsert([point("a", [1, 0, 0, 0], { kind: "note" }), point("b", [0, 1, 0, 0])]);
      await index.upsert([point("a", [0, 0, 0, 1], { kind: "decision", version: 2 })]);
      expect(await index.count()).toBe(2);
      const nearNew = await index.search(unit(0, 0, 0, 1), { k: 1 });
      expect(nearNew[0]).toMatchObject({ id: "a" });
      expect(nearNew[0]!.score).toBeCloseTo(1, 5);
      const nearOld = await index.search(unit(1, 0, 0, 0), { k: 2 });
      expect(nearOld.find((hit) => hit.id === "a")?.score ?? 0).toBeCloseTo(0, 5);
      expect(ids(await index.search(unit(0, 0, 0, 1), { k: 5, filter: { kind: "decision" } }))).toEqual(["a"]);
      expect(ids(await index.search(unit(0, 0, 0, 1), { k: 5, filter: { kind: "note" } }))).toEqual(["b"]);
    });

    test("within one batch the later point of an id wins", async () => {
      const index = await fresh(4);
      await index.upsert([point("a", [1, 0, 0, 0]), point("a", [0, 1, 0, 0])]);
      expect(await index.count()).toBe(1);
      const hits = await index.search(unit(0, 1, 0, 0), { k: 1 });
      expect(hits[0]!.id).toBe("a");
      expect(hits[0]!.score).toBeCloseTo(1, 5);
    });

    test("delete removes points, ignores unknown ids, and a deleted id can come back", async () => {
      const index = await fresh(4);
      await index.upsert([point("a", [1, 0, 0, 0]), point("b", [0, 1, 0, 0]), point("c", [0, 0, 1, 0])]);
      await index.delete(["a", "never-existed"]);
      expect(await index.count()).toBe(2);
      expect(ids(await index.search(unit(1, 0, 0, 0), { k: 10 }))).not.toContain("a");
      await index.delete(["a"]);
      expect(await index.count()).toBe(2);
      // A new point after a delete (embedded indexes reuse the freed slot) and the old id again.
      await index.upsert([point("d", [0, 0, 0, 1]), point("a", [0, 0, 1, 1])]);
      expect(await index.count()).toBe(4);
      expect(ids(await index.search(unit(0, 0, 0, 1), { k: 1 }))).toEqual(["d"]);
      expect(ids(await index.search(unit(0, 0, 1, 1), { k: 1 }))).toEqual(["a"]);
      expect(ids(await index.search(unit(1, 0, 0, 0), { k: 10 })).sort()).toEqual(["a", "b", "c", "d"]);
    });

    describe("filters", () => {
      const fixture = async () => {
        const index = await fresh(4);
        await index.upsert([
          point("shop-app-note", [1, 0, 0, 0], { app: "shop", scope: "app", kind: "note", tags: ["billing", "api"], paths: ["src/pay.ts"] }),
          point("shop-team-fact", [0.9, 0.1, 0, 0], { app: "shop", scope: "team:core", kind: "fact", tags: ["api"], paths: ["src/api.ts", "src/pay.ts"] }),
          point("shop-agent-decision", [0.8, 0.2, 0, 0], { app: "shop", scope: "agent:a1", kind: "decision", status: "proposed", tags: ["ops"] }),
          point("blog-app-note", [0.7, 0.3, 0, 0], { app: "blog", scope: "app", kind: "note", tags: ["billing"], paths: ["src/pay.ts"] }),
          point("blog-org-convention", [0.6, 0.4, 0, 0], { app: "blog", scope: "org", kind: "convention" }),
        ]);
        return index;
      };
      const query = unit(1, 0, 0, 0);

      test("by app, scope (one or several), kind and status", async () => {
        const index = await fixture();
        expect(ids(await index.search(query, { k: 10, filter: { app: "blog" } }))).toEqual(["blog-app-note", "blog-org-convention"]);
        expect(ids(await index.search(query, { k: 10, filter: { scope: "app" } }))).toEqual(["shop-app-note", "blog-app-note"]);
        expect(ids(await index.search(query, { k: 10, filter: { scope: ["team:core", "org"] } }))).toEqual(["shop-team-fact", "blog-org-convention"]);
        expect(ids(await index.search(query, { k: 10, filter: { kind: "note" } }))).toEqual(["shop-app-note", "blog-app-note"]);
        expect(ids(await index.search(query, { k: 10, filter: { kind: ["fact", "convention"] } }))).toEqual(["shop-team-fact", "blog-org-convention"]);
        expect(ids(await index.search(query, { k: 10, filter: { status: "proposed" } }))).toEqual(["shop-agent-decision"]);
      });

      test("by tags and paths: any listed value is enough", async () => {
        const index = await fixture();
        expect(ids(await index.search(query, { k: 10, filter: { tags: ["billing"] } }))).toEqual(["shop-app-note", "blog-app-note"]);
        expect(ids(await index.search(query, { k: 10, filter: { tags: ["ops", "api"] } }))).toEqual(["shop-app-note", "shop-team-fact", "shop-agent-decision"]);
        expect(ids(await index.search(query, { k: 10, filter: { paths: ["src/pay.ts"] } }))).toEqual(["shop-app-note", "shop-team-fact", "blog-app-note"]);
        expect(ids(await index.search(query, { k: 10, filter: { paths: ["src/api.ts"] } }))).toEqual(["shop-team-fact"]);
      });

      test("fields combine with and; a filter nothing matches finds nothing", async () => {
        const index = await fixture();
        expect(ids(await index.search(query, { k: 10, filter: { app: "shop", tags: ["billing", "ops"], status: "active" } }))).toEqual(["shop-app-note"]);
        expect(ids(await index.search(query, { k: 10, filter: { app: "blog", kind: "fact" } }))).toEqual([]);
        expect(ids(await index.search(query, { k: 10, filter: { tags: ["no-such-tag"] } }))).toEqual([]);
        expect(ids(await index.search(query, { k: 1, filter: { app: "shop", scope: ["agent:a1", "team:core"] } }))).toEqual(["shop-team-fact"]);
      });

      test("an empty list or an unknown filter field is refused as invalid", async () => {
        const index = await fixture();
        await expectLedgerError(index.search(query, { k: 3, filter: { tags: [] } }), "invalid");
        await expectLedgerError(index.search(query, { k: 3, filter: { scope: [] } }), "invalid");
        await expectLedgerError(index.search(query, { k: 3, filter: { owner: "x" } as never }), "invalid");
      });
    });

    test("k bounds the number of hits; k must be an integer from 1 to 1000", async () => {
      const index = await fresh(4);
      await index.upsert([point("a", [1, 0, 0, 0]), point("b", [0, 1, 0, 0]), point("c", [0, 0, 1, 0])]);
      expect(await index.search(unit(1, 1, 1, 0), { k: 2 })).toHaveLength(2);
      expect(await index.search(unit(1, 1, 1, 0), { k: 1 })).toHaveLength(1);
      expect(await index.search(unit(1, 1, 1, 0), { k: 1000 })).toHaveLength(3);
      for (const k of [0, -1, 1.5, 1001, Number.NaN]) await expectLedgerError(index.search(unit(1, 0, 0, 0), { k }), "invalid");
    });

    test("clear empties the index, which stays usable", async () => {
      const index = await fresh(4);
      await index.upsert([point("a", [1, 0, 0, 0]), point("b", [0, 1, 0, 0])]);
      await index.clear();
      expect(await index.count()).toBe(0);
      expect(await index.search(unit(1, 0, 0, 0), { k: 5 })).toEqual([]);
      await index.upsert([point("c", [0, 0, 1, 0])]);
      expect(await index.count()).toBe(1);
      expect(ids(await index.search(unit(1, 0, 1, 0), { k: 5 }))).toEqual(["c"]);
    });

    test("a batch with one bad point is refused as invalid and changes nothing", async () => {
      const index = await fresh(4);
      await index.upsert([point("keep", [1, 0, 0, 0])]);
      const before = await index.search(unit(1, 0.5, 0, 0), { k: 10 });
      const good = point("new", [0, 1, 0, 0]);
      const replacement = point("keep", [0, 0, 1, 0]);
      const bad: VectorPoint[] = [
        point("wrong-dims", [1, 0, 0]),
        point("too-many-dims", [1, 0, 0, 0, 0]),
        point("zero", [0, 0, 0, 0]),
        point("not-finite", [Number.NaN, 1, 0, 0]),
        { id: "plain-array", vector: [1, 0, 0, 0] as unknown as Float32Array, payload: payload() },
        point("bad kind", [1, 0, 0, 0]),
        point("bad-payload", [1, 0, 0, 0], { kind: "gossip" as never }),
        point("bad-scope", [1, 0, 0, 0], { scope: "everyone" }),
      ];
      for (const wrong of bad) await expectLedgerError(index.upsert([good, replacement, wrong]), "invalid");
      expect(await index.count()).toBe(1);
      expect(await index.search(unit(1, 0.5, 0, 0), { k: 10 })).toEqual(before);
    });

    test("a query of other dimensions, or a zero query, is refused as invalid", async () => {
      const index = await fresh(4);
      await index.upsert([point("a", [1, 0, 0, 0])]);
      await expectLedgerError(index.search(unit(1, 0, 0), { k: 1 }), "invalid");
      await expectLedgerError(index.search(unit(1, 0, 0, 0, 0), { k: 1 }), "invalid");
      await expectLedgerError(index.search(unit(0, 0, 0, 0), { k: 1 }), "invalid");
      await expectLedgerError(index.delete(["not an id"]), "invalid");
      expect(await index.count()).toBe(1);
    });

    if (factory.persistent) describe("persistence (embedded indexes)", () => {
      const persistent = async (dimensions = 16): Promise<PersistentVectorIndex> => {
        const index = await fresh(dimensions);
        if (!isPersistentVectorIndex(index)) throw new Error(`${implementation} has no save/load`);
        return index;
      };
      const probe = async (index: VectorIndex, queries: Float32Array[]) => {
        const results = [];
        for (const query of queries) {
          results.push(await index.search(query, { k: 5 }));
          results.push(await index.search(query, { k: 5, filter: { scope: ["team:a", "org"], tags: ["t1"] } }));
        }
        return results;
      };
      const populated = async () => {
        const index = await persistent(16);
        const random = seededRandom(11);
        const scopes = ["app", "org", "team:a", "agent:x"];
        const points = Array.from({ length: 400 }, (_, i) =>
          point(`m${i}`, Array.from(randomVector(random, 16)), { scope: scopes[i % 4]!, tags: [`t${i % 3}`] }),
        );
        await index.upsert(points);
        // Deletes and replacements, so freed slots and updated vectors are part of what is saved.
        await index.delete(points.filter((_, i) => i % 7 === 0).map((p) => p.id));
        await index.upsert([point("m1", Array.from(randomVector(random, 16)), { scope: "org", tags: ["t1"] })]);
        const queries = Array.from({ length: 8 }, () => randomVector(random, 16));
        return { index, queries, random };
      };

      test("save then load into a new index gives the same count and results", async () => {
        const { index, queries } = await populated();
        const dir = join(await tempDir(), "vectors");
        const saved = await index.save(dir, "gen1:42");
        expect(saved).toMatchObject({ label: "gen1:42", count: await index.count(), dimensions: 16 });
        const restored = await persistent(16);
        await restored.upsert([point("stale", Array.from(randomVector(seededRandom(3), 16)))]);
        const loaded = await restored.load(dir);
        expect(loaded).toMatchObject({ label: "gen1:42", count: saved.count });
        expect(await restored.count()).toBe(await index.count());
        expect(await probe(restored, queries)).toEqual(await probe(index, queries));
        expect(ids(await restored.search(queries[0]!, { k: 1000 }))).not.toContain("stale");
        // The loaded index keeps working: new points, deletes, and a second save over the first.
        await restored.upsert([point("after-load", Array.from(queries[1]!))]);
        expect((await restored.search(queries[1]!, { k: 1 }))[0]!.id).toBe("after-load");
        await restored.delete(["m2"]);
        await restored.save(dir, "gen1:43");
        const again = await persistent(16);
        expect((await again.load(dir)).label).toBe("gen1:43");
        expect(await probe(again, queries)).toEqual(await probe(restored, queries));
      });

      test("a damaged, missing or foreign snapshot is refused as invalid and the index is unchanged", async () => {
        const { index, queries } = await populated();
        const dir = join(await tempDir(), "vectors");
        await index.save(dir, "label");
        const target = await persistent(16);
        await target.upsert([point("mine", Array.from(queries[0]!))]);
        const mine = await target.search(queries[0]!, { k: 3 });

        await expectLedgerError(target.load(join(dir, "..", "nothing-here")), "invalid");
        const wrongDimensions = await persistent(8);
        await expectLedgerError(wrongDimensions.load(dir), "invalid");

        const vectorsFile = join(dir, "vectors.f32");
        const original = await readFile(vectorsFile);
        const damaged = Buffer.from(original);
        damaged[damaged.length >> 1] = damaged[damaged.length >> 1]! ^ 0xff;
        await writeFile(vectorsFile, damaged);
        await expectLedgerError(target.load(dir), "invalid");
        await writeFile(vectorsFile, original.subarray(0, original.length - 4));
        await expectLedgerError(target.load(dir), "invalid");

        expect(await target.count()).toBe(1);
        expect(await target.search(queries[0]!, { k: 3 })).toEqual(mine);
        await writeFile(vectorsFile, original);
        await target.load(dir);
        expect(await target.count()).toBe(await index.count());
      });
    });
  });
}
