import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { HnswVectorIndex } from "../../projections/vectors/hnsw-vectors.js";
import { point } from "./conformance.js";
import { randomVector, seededRandom } from "./data.js";

/**
 * A graph read back from disk has room for exactly the nodes it holds; an empty one has room for 0.
 * Growing it by doubling that capacity never ended: `memledger up` hung at 100% CPU on the first
 * approval after a restart whose snapshot held no vectors (issue 8, item 1).
 */
describe("an HNSW index reloaded from a snapshot keeps taking points", () => {
  const dirs: string[] = [];
  const tempDir = async () => {
    const dir = await mkdtemp(join(tmpdir(), "memledger-hnsw-reload-"));
    dirs.push(dir);
    return dir;
  };
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  const points = (count: number, seed: number, dimensions = 8) => {
    const random = seededRandom(seed);
    return Array.from({ length: count }, (_, i) => point(`m${seed}-${i}`, Array.from(randomVector(random, dimensions))));
  };

  test("an empty graph saved and loaded grows past its first capacity, and saves and loads again", async () => {
    const dir = await tempDir();
    await new HnswVectorIndex({ dimensions: 8 }).save(join(dir, "empty"), "seq:1");
    const loaded = new HnswVectorIndex({ dimensions: 8, exactScanLimit: 0, initialCapacity: 4 });
    expect(await loaded.load(join(dir, "empty"))).toMatchObject({ count: 0 });
    // One point first (what the first approval does), then enough to cross several resizes.
    const added = points(1, 1);
    await loaded.upsert(added);
    expect(await loaded.count()).toBe(1);
    const more = points(300, 2);
    await loaded.upsert(more);
    expect(await loaded.count()).toBe(301);
    const target = more[123]!;
    expect((await loaded.search(target.vector as Float32Array, { k: 1 }))[0]!.id).toBe(target.id);

    await loaded.save(join(dir, "again"), "seq:2");
    const reloaded = new HnswVectorIndex({ dimensions: 8, exactScanLimit: 0 });
    await reloaded.load(join(dir, "again"));
    expect(await reloaded.count()).toBe(301);
    await reloaded.upsert(points(50, 3));
    expect(await reloaded.count()).toBe(351);
    expect((await reloaded.search(target.vector as Float32Array, { k: 1 }))[0]!.id).toBe(target.id);
  });

  test("a graph of one node reloaded takes many more at once", async () => {
    const dir = await tempDir();
    const one = new HnswVectorIndex({ dimensions: 8 });
    await one.upsert(points(1, 4));
    await one.save(join(dir, "one"), "seq:1");
    const loaded = new HnswVectorIndex({ dimensions: 8, exactScanLimit: 0 });
    await loaded.load(join(dir, "one"));
    await loaded.upsert(points(2_000, 5));
    expect(await loaded.count()).toBe(2_001);
  });

  test("an initial capacity of 0 is raised to 1, so the graph can still grow", async () => {
    const index = new HnswVectorIndex({ dimensions: 8, initialCapacity: 0 });
    await index.upsert(points(10, 6));
    expect(await index.count()).toBe(10);
    await index.clear();
    await index.upsert(points(3, 7));
    expect(await index.count()).toBe(3);
  });
});
