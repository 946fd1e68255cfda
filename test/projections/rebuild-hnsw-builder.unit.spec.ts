import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { HnswVectorIndex } from "../../projections/vectors/hnsw-vectors.js";
import { defineVectorIndexConformance, point } from "../vectors/conformance.js";
import { randomVector, seededRandom } from "../vectors/data.js";

// The whole contract again with the graph built on a worker thread from the first point (a rebuild's
// bulk load), every search walking the graph: each search and save takes the graph back from the builder.
defineVectorIndexConformance("hnsw, graph built on a worker thread", {
  persistent: true,
  create: async (dimensions) => new HnswVectorIndex({ dimensions, exactScanLimit: 0, initialCapacity: 4, buildInWorkerFrom: 1 }),
});

describe("an HNSW graph built on a worker thread", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  /** The same inserts, replacements and deletions, in the same order, into an index. */
  const populate = async (index: HnswVectorIndex) => {
    const random = seededRandom(11);
    const points = Array.from({ length: 700 }, (_, i) => point(`m${i}`, Array.from(randomVector(random, 16)), { scope: i % 3 ? "app" : "org" }));
    for (let i = 0; i < points.length; i += 50) await index.upsert(points.slice(i, i + 50));
    await index.delete(points.filter((_, i) => i % 7 === 0).map((p) => p.id));
    await index.upsert(points.slice(100, 130).map((p) => point(p.id, Array.from(randomVector(random, 16)), { scope: "org" })));
    return Array.from({ length: 8 }, () => randomVector(random, 16));
  };
  const answers = (index: HnswVectorIndex, queries: Float32Array[]) =>
    Promise.all(queries.flatMap((query) => [index.search(query, { k: 10 }), index.search(query, { k: 10, filter: { scope: "org" } })]));

  test("answers as the graph built here does, saves its graph with the snapshot, and goes on here afterwards", async () => {
    const here = new HnswVectorIndex({ dimensions: 16, exactScanLimit: 0, buildInWorkerFrom: Number.POSITIVE_INFINITY });
    const built = new HnswVectorIndex({ dimensions: 16, exactScanLimit: 0, buildInWorkerFrom: 200 });
    const queries = await populate(here);
    await populate(built);
    expect(await built.count()).toBe(await here.count());

    const dir = await mkdtemp(join(tmpdir(), "memledger-hnsw-builder-"));
    dirs.push(dir);
    // Bulk loaded, it has no graph until one is needed (test/vectors/hnsw-deferred-graph.unit.spec.ts); here it is.
    expect(built.hasGraph).toBe(false);
    await built.whenGraphReady();
    expect(built.hasGraph).toBe(true);
    await built.save(join(dir, "snap"), "label");
    expect(await readdir(join(dir, "snap"))).toContain("hnsw.index");
    expect(await answers(built, queries)).toEqual(await answers(here, queries));

    const loaded = new HnswVectorIndex({ dimensions: 16, exactScanLimit: 0 });
    await loaded.load(join(dir, "snap"));
    expect(await answers(loaded, queries)).toEqual(await answers(here, queries));

    // After the graph came back, inserts go into it here.
    const more = [point("late", Array.from(queries[0]!))];
    await built.upsert(more);
    await here.upsert(more);
    expect((await built.search(queries[0]!, { k: 1 }))[0]!.id).toBe("late");
    expect(await answers(built, queries)).toEqual(await answers(here, queries));
    await Promise.all([here.close(), built.close(), loaded.close()]);
  });

  test("inserts and deletions made while the graph is coming back are not lost", async () => {
    const random = seededRandom(3);
    const index = new HnswVectorIndex({ dimensions: 16, exactScanLimit: 0, buildInWorkerFrom: 10 });
    await index.upsert(Array.from({ length: 300 }, (_, i) => point(`p${i}`, Array.from(randomVector(random, 16)))));
    const fresh = randomVector(random, 16);
    // Not awaited in between: the search starts taking the graph back, the upsert and delete come meanwhile.
    const searching = index.search(fresh, { k: 3 });
    const upserting = index.upsert([point("new", Array.from(fresh))]);
    const deleting = index.delete(["p0"]);
    await Promise.all([searching, upserting, deleting]);
    expect((await index.search(fresh, { k: 1 }))[0]!.id).toBe("new");
    const p1 = (await index.search(randomVector(seededRandom(3), 16), { k: 1 }))[0]!.id;
    expect(p1).not.toBe("p0");
    expect(await index.count()).toBe(300);
    await index.close();
  });

  test("an upsert waiting for the graph to come back keeps the vectors as they were when it was called", async () => {
    const random = seededRandom(4);
    const index = new HnswVectorIndex({ dimensions: 16, exactScanLimit: 0, buildInWorkerFrom: 10 });
    await index.upsert(Array.from({ length: 300 }, (_, i) => point(`p${i}`, Array.from(randomVector(random, 16)))));
    const wanted = randomVector(random, 16);
    const late = point("late", Array.from(wanted));
    // Once the builder has caught up, whenGraphReady starts taking the graph back at once (the index is
    // then `adopting`, which an upsert waits for).
    const adopting = () => (index as unknown as { adopting: Promise<void> | undefined }).adopting !== undefined;
    const ready = index.whenGraphReady();
    // Taking it back writes and reads a file: it lasts far longer than a turn of the event loop.
    const deadline = Date.now() + 10_000;
    while (!adopting() && !index.hasGraph && Date.now() < deadline) await new Promise((resolve) => setImmediate(resolve));
    expect(adopting()).toBe(true);
    const upserting = index.upsert([late]);
    // The caller reuses its array as soon as the call returned, while the upsert waits.
    late.vector.set(randomVector(random, 16));
    await Promise.all([ready, upserting]);
    expect(index.hasGraph).toBe(true);
    const [hit] = await index.search(wanted, { k: 1 });
    expect(hit).toEqual({ id: "late", score: expect.closeTo(1, 5) as number });
    await index.close();
  });
});
