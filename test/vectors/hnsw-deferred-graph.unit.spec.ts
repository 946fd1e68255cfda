import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { HnswVectorIndex } from "../../projections/vectors/hnsw-vectors.js";
import { point } from "./conformance.js";
import { randomVector, seededRandom } from "./data.js";

/**
 * The graph is an accelerator that nothing waits for (projections/vectors/hnsw-vectors.ts): a bulk
 * load (a rebuild's fresh index) saves its vectors without building a graph, a load of such a snapshot
 * builds the graph in the background, and searches meanwhile answer exactly.
 */
describe("an HNSW index whose graph is not built yet", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });
  const temp = async () => {
    const dir = await mkdtemp(join(tmpdir(), "memledger-hnsw-deferred-"));
    dirs.push(dir);
    return dir;
  };
  const DIM = 16;
  const points = (n: number, seed: number) => {
    const random = seededRandom(seed);
    return Array.from({ length: n }, (_, i) => point(`p${i}`, Array.from(randomVector(random, DIM)), { scope: i % 4 ? "app" : "org" }));
  };
  /** The exact answer: an index that scans every point. */
  const exact = async (all: ReturnType<typeof points>, removed: Set<string>) => {
    const index = new HnswVectorIndex({ dimensions: DIM, exactScanLimit: Number.POSITIVE_INFINITY, buildInWorkerFrom: Number.POSITIVE_INFINITY });
    await index.upsert(all.filter((p) => !removed.has(p.id)));
    return index;
  };

  test("a bulk load saves its vectors without a graph, and never starts a builder it does not need", async () => {
    const all = points(2_000, 5);
    const index = new HnswVectorIndex({ dimensions: DIM, exactScanLimit: 100, buildInWorkerFrom: 256 });
    for (let i = 0; i < all.length; i += 250) await index.upsert(all.slice(i, i + 250));
    await index.delete(["p3", "p7"]);
    expect(index.hasGraph).toBe(false);
    const dir = join(await temp(), "snap");
    await index.save(dir, "label-1");
    expect(await readdir(dir)).not.toContain("hnsw.index");
    expect(index.hasGraph).toBe(false);
    await index.close();
  });

  test("searches before the graph exists are exact, and start its build; once built it is saved and reloaded", async () => {
    const all = points(3_000, 9);
    const removed = new Set(["p0", "p11", "p2999"]);
    const index = new HnswVectorIndex({ dimensions: DIM, exactScanLimit: 100, buildInWorkerFrom: 256 });
    for (let i = 0; i < all.length; i += 500) await index.upsert(all.slice(i, i + 500));
    await index.delete([...removed]);
    const reference = await exact(all, removed);
    const queries = Array.from({ length: 6 }, (_, i) => randomVector(seededRandom(100 + i), DIM));

    // The first search finds no graph: it answers exactly at once and the builder starts.
    for (const query of queries) {
      expect(await index.search(query, { k: 10 })).toEqual(await reference.search(query, { k: 10 }));
      expect(await index.search(query, { k: 5, filter: { scope: "org" } })).toEqual(await reference.search(query, { k: 5, filter: { scope: "org" } }));
    }
    await index.whenGraphReady();
    expect(index.hasGraph).toBe(true);
    // With the graph: still the same nearest point for a stored vector, and deleted points never come back.
    expect((await index.search(Float32Array.from(all[42]!.vector), { k: 1 }))[0]!.id).toBe("p42");
    for (const query of queries) expect((await index.search(query, { k: 50 })).some((hit) => removed.has(hit.id))).toBe(false);

    const dir = join(await temp(), "snap");
    await index.save(dir, "label-2");
    expect(await readdir(dir)).toContain("hnsw.index");
    const loaded = new HnswVectorIndex({ dimensions: DIM, exactScanLimit: 100 });
    await loaded.load(dir);
    expect(loaded.hasGraph).toBe(true);
    expect(await loaded.search(queries[0]!, { k: 10 })).toEqual(await index.search(queries[0]!, { k: 10 }));
    await Promise.all([index.close(), loaded.close(), reference.close()]);
  });

  test("a snapshot without a graph loads at once: exact answers meanwhile, the graph built in the background, points added meanwhile kept", async () => {
    const all = points(3_000, 13);
    const writer = new HnswVectorIndex({ dimensions: DIM, exactScanLimit: 100, buildInWorkerFrom: 256 });
    await writer.upsert(all);
    const dir = join(await temp(), "snap");
    await writer.save(dir, "label-3");
    await writer.close();
    expect(await readdir(dir)).not.toContain("hnsw.index");

    const loaded = new HnswVectorIndex({ dimensions: DIM, exactScanLimit: 100 });
    await loaded.load(dir);
    // Not built yet (3,000 inserts at efConstruction 200 take far longer than this load did).
    expect(loaded.hasGraph).toBe(false);
    const reference = await exact(all, new Set());
    const query = randomVector(seededRandom(7), DIM);
    expect(await loaded.search(query, { k: 10 })).toEqual(await reference.search(query, { k: 10 }));

    // Inserts and deletions while the builder works reach the graph it hands back.
    const late = point("late", Array.from(query), { scope: "app" });
    await loaded.upsert([late]);
    await loaded.delete(["p5"]);
    expect((await loaded.search(query, { k: 1 }))[0]!.id).toBe("late");
    await loaded.whenGraphReady();
    expect(loaded.hasGraph).toBe(true);
    expect((await loaded.search(query, { k: 1 }))[0]!.id).toBe("late");
    expect((await loaded.search(Float32Array.from(all[5]!.vector), { k: 3 })).map((h) => h.id)).not.toContain("p5");
    expect(await loaded.count()).toBe(3_000);
    await Promise.all([loaded.close(), reference.close()]);
  });
});
