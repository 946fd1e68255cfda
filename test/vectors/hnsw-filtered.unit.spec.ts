import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import hnswlib from "hnswlib-node";
import { afterAll, afterEach, describe, expect, test } from "vitest";
import { HnswVectorIndex, type HnswVectorIndexOptions } from "../../projections/vectors/hnsw-vectors.js";
import { dot, matchesFilter, prepareSearch, topHits, unitVector, type VectorFilter, type VectorHit, type VectorPoint } from "../../projections/vectors/vector-index.js";
import { payload } from "./conformance.js";
import { randomVector, seededRandom } from "./data.js";

/**
 * The HNSW index's filter planner (hnsw-vectors.ts, `search`): a selective filter is scanned exactly,
 * a broad one searches the graph without hnswlib's JavaScript callback and drops what the filter does
 * not keep, the band between walks the graph with the callback. Each plan is checked against a plain
 * exact scan (sort of every matching point), and which plan ran is seen from hnswlib's `searchKnn` calls.
 */

const { HierarchicalNSW } = hnswlib;

/** The exact answer: every point the filter keeps, scored by the shared dot, sorted by topHits. */
function exactTopK(points: readonly VectorPoint[], query: Float32Array, k: number, filter?: VectorFilter): VectorHit[] {
  const prepared = prepareSearch(query, { k, ...(filter ? { filter } : {}) }, query.length);
  const hits = points
    .filter((point) => matchesFilter(point.payload, prepared.filter))
    .map((point) => ({ id: point.id, score: dot(prepared.vector, unitVector(point.vector)) }));
  return topHits(hits, k);
}

const recall = (found: VectorHit[][], truth: VectorHit[][]): number => {
  let hit = 0;
  let total = 0;
  found.forEach((hits, i) => {
    const expected = new Set(truth[i]!.map((h) => h.id));
    total += expected.size;
    hit += hits.filter((h) => expected.has(h.id)).length;
  });
  return total === 0 ? 1 : hit / total;
};

const SCOPES = 10;

/** Uniform random points (HNSW's worst case): scope i % 10, kind alternating, every 7th tagged. */
function randomPoints(n: number, dimensions: number, seed: number): VectorPoint[] {
  const random = seededRandom(seed);
  return Array.from({ length: n }, (_, i) => ({
    id: `p${String(i).padStart(5, "0")}`,
    vector: randomVector(random, dimensions),
    payload: payload({ scope: `team:s${i % SCOPES}`, kind: i % 2 ? "note" : "fact", tags: i % 7 === 0 ? ["seven"] : [], paths: i % 50 === 0 ? [`src/f${i}.ts`] : [] }),
  }));
}

/**
 * Clustered points, each scope its own region (as the LoCoMo conversations are in bench/search.ts): a
 * scope centre plus topic centres inside it plus noise.
 */
function clusteredPoints(n: number, dimensions: number, seed: number): VectorPoint[] {
  const random = seededRandom(seed);
  const centres = Array.from({ length: SCOPES }, () => randomVector(random, dimensions));
  const topics = centres.map((centre) =>
    Array.from({ length: 8 }, () => {
      const topic = randomVector(random, dimensions);
      return topic.map((x, i) => centre[i]! + 0.5 * x);
    }),
  );
  return Array.from({ length: n }, (_, i) => {
    const scope = i % SCOPES;
    const topic = topics[scope]![Math.floor(random() * 8)]!;
    const vector = topic.map((x) => x + 0.4 * (random() * 2 - 1));
    return { id: `c${String(i).padStart(5, "0")}`, vector, payload: payload({ scope: `team:s${scope}`, kind: i % 2 ? "note" : "fact" }) };
  });
}

/** A query near a stored point (noise added), so it has real neighbours. */
const queriesNear = (points: readonly VectorPoint[], count: number, seed: number): Float32Array[] => {
  const random = seededRandom(seed);
  return Array.from({ length: count }, () => {
    const base = points[Math.floor(random() * points.length)]!.vector;
    return base.map((x) => x + 0.3 * (random() * 2 - 1));
  });
};

/**
 * Records how search reached hnswlib: each searchKnn call on this index's graph (an own property over
 * the native method, which cannot be spied on its prototype) and whether it carried a filter callback.
 */
function watchGraph(index: HnswVectorIndex) {
  const graph = (index as unknown as { graph: InstanceType<typeof HierarchicalNSW> }).graph;
  const calls: { asked: number; callback: boolean }[] = [];
  const original = graph.searchKnn.bind(graph);
  const watched: typeof original = (query, asked, filter) => {
    calls.push({ asked, callback: typeof filter === "function" });
    return original(query, asked, filter);
  };
  Object.defineProperty(graph, "searchKnn", { value: watched, configurable: true });
  return { calls: () => calls, reset: () => (calls.length = 0) };
}

describe("HNSW filter planner", () => {
  const open: HnswVectorIndex[] = [];
  const dirs: string[] = [];
  const create = async (points: readonly VectorPoint[], options: Partial<HnswVectorIndexOptions> = {}) => {
    const index = new HnswVectorIndex({ dimensions: points[0]!.vector.length, buildInWorkerFrom: Infinity, ...options });
    open.push(index);
    for (let i = 0; i < points.length; i += 500) await index.upsert(points.slice(i, i + 500));
    return index;
  };
  afterEach(async () => {
    for (const index of open.splice(0)) await index.close();
  });
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  test("a selective filter is scanned exactly: the same hits and scores as a sort of every match, no graph search", async () => {
    const points = randomPoints(3000, 24, 1);
    // Every filter below keeps at most 429 points (the tag); the unfiltered 3,000 go to the graph.
    const index = await create(points, { exactScanLimit: 500 });
    const graph = watchGraph(index);
    const filters: VectorFilter[] = [
      { scope: "team:s3" },
      { scope: ["team:s1", "team:s2"], kind: "note" },
      { tags: ["seven"] },
      { paths: ["src/f100.ts", "src/f150.ts", "src/nothing.ts"] },
      { app: "shop", scope: "team:s4", kind: ["fact"], status: "active" },
    ];
    for (const [n, query] of queriesNear(points, 8, 2).entries()) {
      for (const filter of filters) {
        for (const k of [1, 10, 50]) {
          const expected = exactTopK(points, query, k, filter);
          expect(await index.search(query, { k, filter }), `query ${n}, k ${k}, ${JSON.stringify(filter)}`).toEqual(expected);
        }
      }
    }
    expect(graph.calls()).toEqual([]);
    // A filter naming values no point holds finds nothing, without a scan or a graph search.
    expect(await index.search(points[0]!.vector, { k: 5, filter: { scope: "team:none" } })).toEqual([]);
    expect(await index.search(points[0]!.vector, { k: 5, filter: { scope: "team:s1", kind: "decision" } })).toEqual([]);
  });

  test("ties at the cut of an exact scan are settled by id, as topHits does, whatever the slot order", async () => {
    const dimensions = 8;
    const same = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
    const other = Float32Array.from([8, 7, 6, 5, 4, 3, 2, 1]);
    // Ids inserted in an order unrelated to their sort order, many copies of one vector, interleaved.
    const order = Array.from({ length: 60 }, (_, i) => (i * 37) % 60);
    const points: VectorPoint[] = order.map((i) => ({
      id: `t${String(i).padStart(2, "0")}`,
      vector: i % 3 === 0 ? other : same,
      payload: payload({ scope: i % 2 ? "team:odd" : "team:even" }),
    }));
    const index = await create(points);
    for (const k of [1, 3, 7, 20, 40]) {
      for (const filter of [undefined, { scope: "team:odd" }, { scope: "team:even" }]) {
        const got = await index.search(same, { k, ...(filter ? { filter } : {}) });
        expect(got).toEqual(exactTopK(points, same, k, filter));
      }
    }
    const firstThree = await index.search(same, { k: 3, filter: { scope: "team:odd" } });
    expect(firstThree.map((h) => h.id)).toEqual(["t01", "t05", "t07"]);
    expect(new Set(firstThree.map((h) => h.score)).size).toBe(1);
  });

  test("a broad filter searches the graph without the callback, and finds the exact top k at least 95% of the time, on random and clustered data", async () => {
    const k = 10;
    for (const [data, points] of [
      ["random", randomPoints(4000, 32, 3)],
      ["clustered", clusteredPoints(4000, 32, 4)],
    ] as const) {
      const index = await create(points, { exactScanLimit: 100 });
      const queries = queriesNear(points, 60, 5);
      for (const filter of [{ scope: "team:s6" }, { kind: "note" as const }, { scope: ["team:s1", "team:s2", "team:s3"] }]) {
        const graph = watchGraph(index);
        const found: VectorHit[][] = [];
        for (const query of queries) found.push(await index.search(query, { k, filter }));
        const truth = queries.map((query) => exactTopK(points, query, k, filter));
        // Every hit is one the filter keeps, scored exactly, in order.
        found.forEach((hits, n) => {
          expect(hits).toHaveLength(k);
          const query = prepareSearch(queries[n]!, { k, filter }, 32);
          for (const hit of hits) {
            const point = points.find((p) => p.id === hit.id)!;
            expect(matchesFilter(point.payload, query.filter)).toBe(true);
            expect(hit.score).toBe(Math.fround(dot(query.vector, unitVector(point.vector))));
          }
          expect(topHits([...hits], k)).toEqual(hits);
        });
        // Seen when written (recall@10 over 60 queries): random 1.000 (one scope), 0.998 (kind), 0.987
        // (three scopes); clustered 0.988, 0.993, 0.990.
        expect(recall(found, truth), `${data} ${JSON.stringify(filter)}`).toBeGreaterThanOrEqual(0.95);
        const calls = graph.calls();
        expect(calls.length).toBeGreaterThanOrEqual(queries.length);
        // Clustered data may send a query whose neighbourhood holds no match to the callback walk; most never do.
        expect(calls.filter((call) => !call.callback).length).toBeGreaterThanOrEqual(queries.length * 0.8);
        expect(calls.every((call) => call.callback || call.asked > k)).toBe(true);
      }
    }
  });

  test("between the exact scan and the broad share, the graph is walked with the filter callback", async () => {
    const points = randomPoints(3000, 16, 6);
    // One scope is 10% of the points; with the broad share above that, it is the callback's band.
    const index = await create(points, { exactScanLimit: 100, broadFilterShare: 0.2 });
    const graph = watchGraph(index);
    const query = queriesNear(points, 1, 7)[0]!;
    const hits = await index.search(query, { k: 10, filter: { scope: "team:s5" } });
    expect(graph.calls().every((call) => call.callback)).toBe(true);
    expect(graph.calls().length).toBeGreaterThan(0);
    expect(recall([hits], [exactTopK(points, query, 10, { scope: "team:s5" })])).toBeGreaterThanOrEqual(0.8);
  });

  test("over-fetching that keeps too few matches gives up: an exact scan below exactFallbackLimit, else the callback walk", async () => {
    // Clustered: a query deep in scope 0's region, filtered to scope 9 (10% of the points, elsewhere).
    const points = clusteredPoints(3000, 32, 8);
    const query = points.find((p) => p.payload.scope === "team:s0")!.vector;
    const filter = { scope: "team:s9" };
    const exact = exactTopK(points, query, 20, filter);

    const scanned = await create(points, { exactScanLimit: 100 });
    const scannedGraph = watchGraph(scanned);
    expect(await scanned.search(query, { k: 20, filter })).toEqual(exact);
    // One unfiltered look at the neighbourhood (twice k + 1, at least efSearch) kept too few to go on.
    expect(scannedGraph.calls()).toEqual([{ asked: 64, callback: false }]);

    const walked = await create(points, { exactScanLimit: 100, exactFallbackLimit: 0 });
    const walkedGraph = watchGraph(walked);
    const hits = await walked.search(query, { k: 20, filter });
    expect(walkedGraph.calls().map((c) => c.callback)).toEqual([false, true]);
    expect(hits).toHaveLength(20);
    expect(hits.every((hit) => points.find((p) => p.id === hit.id)!.payload.scope === "team:s9")).toBe(true);
    expect(recall([hits], [exact])).toBeGreaterThanOrEqual(0.8);
  });

  test("deleted points are never returned by any plan, and a freed slot's new point is found under its own payload", async () => {
    const points = randomPoints(3000, 16, 9);
    const queries = queriesNear(points, 20, 10);
    // The nearest points of every query, and every third point of scope 2, are deleted.
    const probe = await create(points, { exactScanLimit: 0 });
    const nearest = new Set<string>();
    for (const query of queries) for (const hit of await probe.search(query, { k: 5 })) nearest.add(hit.id);
    const deleted = new Set([...nearest, ...points.filter((p, i) => p.payload.scope === "team:s2" && i % 3 === 0).map((p) => p.id)]);
    const alive = points.filter((p) => !deleted.has(p.id));
    const plans: Record<string, Partial<HnswVectorIndexOptions>> = {
      exact: { exactScanLimit: 1e9 },
      overfetch: { exactScanLimit: 100 },
      callback: { exactScanLimit: 100, broadFilterShare: 2 },
    };
    for (const [plan, options] of Object.entries(plans)) {
      const index = await create(points, options);
      await index.delete([...deleted]);
      for (const query of queries) {
        for (const filter of [undefined, { scope: "team:s2" }, { kind: "fact" as const }]) {
          const hits = await index.search(query, { k: 20, ...(filter ? { filter } : {}) });
          expect(hits.filter((hit) => deleted.has(hit.id)), plan).toEqual([]);
          if (plan === "exact") expect(hits).toEqual(exactTopK(alive, query, 20, filter));
        }
      }
      // New points take the freed slots; they are found under their new scope only.
      const fresh = [...deleted].slice(0, 30).map((id, i) => ({ id: `new${i}`, vector: queries[i % queries.length]!, payload: payload({ scope: "team:new" }) }));
      await index.upsert(fresh);
      const found = await index.search(queries[0]!, { k: 30, filter: { scope: "team:new" } });
      expect(found.map((h) => h.id).sort()).toEqual(fresh.map((p) => p.id).sort());
      expect((await index.search(queries[0]!, { k: 50, filter: { scope: "team:s2" } })).some((h) => h.id.startsWith("new"))).toBe(false);
    }
  });

  test("the facet counts follow payload changes, clear, and save/load", async () => {
    const points = randomPoints(2000, 16, 11);
    const index = await create(points, { exactScanLimit: 1e9 });
    const query = points[5]!.vector;
    // Point 5 moves from scope s5 to s0 (a replace); the filters follow.
    const moved = { ...points[5]!, payload: payload({ scope: "team:s0", kind: "decision" }) };
    await index.upsert([moved]);
    const now = points.map((p) => (p.id === moved.id ? moved : p));
    expect((await index.search(query, { k: 1, filter: { scope: "team:s0" } }))[0]!.id).toBe(moved.id);
    expect(await index.search(query, { k: 5, filter: { scope: "team:s5" } })).toEqual(exactTopK(now, query, 5, { scope: "team:s5" }));
    expect((await index.search(query, { k: 10, filter: { kind: "decision" } })).map((h) => h.id)).toEqual([moved.id]);

    const dir = await mkdtemp(join(tmpdir(), "memledger-hnsw-filtered-"));
    dirs.push(dir);
    await index.save(join(dir, "snap"), "x");
    const loaded = await create(points.slice(0, 1), { exactScanLimit: 1e9 });
    await loaded.load(join(dir, "snap"));
    for (const filter of [{ scope: "team:s0" }, { scope: "team:s5" }, { kind: "decision" as const }, { kind: "note" as const, scope: "team:s3" }]) {
      expect(await loaded.search(query, { k: 7, filter })).toEqual(exactTopK(now, query, 7, filter));
    }
    await loaded.clear();
    expect(await loaded.search(query, { k: 7, filter: { scope: "team:s0" } })).toEqual([]);
    await loaded.upsert([points[1]!]);
    expect((await loaded.search(query, { k: 7, filter: { scope: points[1]!.payload.scope } })).map((h) => h.id)).toEqual([points[1]!.id]);
    expect(await loaded.search(query, { k: 7, filter: { scope: "team:s0" } })).toEqual([]);
  });
});
