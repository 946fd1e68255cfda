import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { HnswVectorIndex } from "../../projections/vectors/hnsw-vectors.js";
import { OramaVectorIndex } from "../../projections/vectors/orama-vectors.js";
import type { PersistentVectorIndex } from "../../projections/vectors/vector-index.js";
import { defineVectorIndexConformance, point } from "./conformance.js";
import { randomVector, seededRandom } from "./data.js";

// Small indexes are scanned exactly by default; the second run forces every search through the graph.
defineVectorIndexConformance("hnsw", {
  persistent: true,
  create: async (dimensions) => new HnswVectorIndex({ dimensions }),
});

defineVectorIndexConformance("hnsw, graph search only", {
  persistent: true,
  create: async (dimensions) => new HnswVectorIndex({ dimensions, exactScanLimit: 0, initialCapacity: 4 }),
});

describe("snapshots are shared between the embedded indexes", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  const populate = async (index: PersistentVectorIndex) => {
    const random = seededRandom(5);
    const points = Array.from({ length: 300 }, (_, i) => point(`m${i}`, Array.from(randomVector(random, 24)), { scope: i % 2 ? "org" : "app" }));
    await index.upsert(points);
    await index.delete(points.filter((_, i) => i % 5 === 0).map((p) => p.id));
    return Array.from({ length: 5 }, () => randomVector(random, 24));
  };
  const answers = async (index: PersistentVectorIndex, queries: Float32Array[]) =>
    Promise.all(queries.flatMap((query) => [index.search(query, { k: 7 }), index.search(query, { k: 7, filter: { scope: "org" } })]));

  test("an Orama snapshot (no graph) loads into HNSW by rebuilding the graph, and the result saves and loads again", async () => {
    const dir = await mkdtemp(join(tmpdir(), "memledger-vectors-"));
    dirs.push(dir);
    const orama = new OramaVectorIndex({ dimensions: 24 });
    const queries = await populate(orama);
    await orama.save(join(dir, "from-orama"), "seq:9");
    const hnsw = new HnswVectorIndex({ dimensions: 24, exactScanLimit: 0 });
    expect(await hnsw.load(join(dir, "from-orama"))).toMatchObject({ label: "seq:9", count: 240 });
    expect(await answers(hnsw, queries)).toEqual(await answers(orama, queries));
    // Freed slots were never added to the rebuilt graph; reusing one and saving must still load.
    await hnsw.upsert([point("late", Array.from(queries[0]!))]);
    await hnsw.save(join(dir, "from-hnsw"), "seq:10");
    const again = new OramaVectorIndex({ dimensions: 24 });
    await again.load(join(dir, "from-hnsw"));
    const reloaded = new HnswVectorIndex({ dimensions: 24, exactScanLimit: 0 });
    await reloaded.load(join(dir, "from-hnsw"));
    expect(await answers(reloaded, queries)).toEqual(await answers(again, queries));
    expect((await reloaded.search(queries[0]!, { k: 1 }))[0]!.id).toBe("late");
  });
});
