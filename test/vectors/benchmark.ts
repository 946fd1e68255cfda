/**
 * Measures an embedded vector index: insert rate, query latency (unfiltered and filtered), recall
 * against an exact scan, memory, and save/load. Not a test (no assertions): run it by hand.
 *
 *   npx tsc --module nodenext --moduleResolution nodenext --target es2022 --strict --skipLibCheck \
 *     --esModuleInterop --types node --outDir dist/vector-bench --rootDir . test/vectors/benchmark.ts
 *   node --expose-gc dist/vector-bench/test/vectors/benchmark.js <orama|hnsw> <points> <dimensions> [queries]
 *
 * Data: uniformly random vectors (the worst case for HNSW, as in NOTES), 20 scopes so a scope filter
 * keeps 5% of the points. Queries are stored vectors with noise added, so each has a true neighbour.
 */
import { mkdtemp, rm, stat, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HnswVectorIndex } from "../../projections/vectors/hnsw-vectors.js";
import { OramaVectorIndex } from "../../projections/vectors/orama-vectors.js";
import { unitVector, type PersistentVectorIndex, type VectorFilter, type VectorPoint } from "../../projections/vectors/vector-index.js";
import { VectorStore } from "../../projections/vectors/vector-store.js";
import { randomVector, seededRandom } from "./data.js";

const [implementation = "orama", pointsArg = "10000", dimensionsArg = "512", queriesArg = "200"] = process.argv.slice(2);
const n = Number(pointsArg);
const dimensions = Number(dimensionsArg);
const queryCount = Number(queriesArg);
const K = 10;

const create = (): PersistentVectorIndex =>
  implementation === "hnsw" ? new HnswVectorIndex({ dimensions, initialCapacity: n }) : new OramaVectorIndex({ dimensions });

const gc = (): void => (globalThis as { gc?: () => void }).gc?.();
const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(0)} MB`;
const percentile = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

async function timeQueries(index: PersistentVectorIndex, queries: Float32Array[], filter?: VectorFilter) {
  const times: number[] = [];
  const results: string[][] = [];
  for (const query of queries) {
    const start = performance.now();
    const hits = await index.search(query, { k: K, ...(filter ? { filter } : {}) });
    times.push(performance.now() - start);
    results.push(hits.map((hit) => hit.id));
  }
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p99: percentile(times, 99), results };
}

function recall(found: string[][], truth: string[][]): number {
  let hit = 0;
  let total = 0;
  found.forEach((ids, i) => {
    const expected = new Set(truth[i]);
    total += expected.size;
    hit += ids.filter((id) => expected.has(id)).length;
  });
  return total === 0 ? 1 : hit / total;
}

async function dirSize(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir)) total += (await stat(join(dir, name))).size;
  return total;
}

async function main(): Promise<void> {
  const random = seededRandom(42);
  const points: VectorPoint[] = Array.from({ length: n }, (_, i) => ({
    id: `m${i}`,
    vector: randomVector(random, dimensions),
    payload: { app: "bench", scope: `team:t${i % 20}`, kind: "note", status: "active", version: 1, tags: [`tag${i % 2}`], paths: [], modelId: "bench" },
  }));
  const queries = Array.from({ length: queryCount }, () => {
    const base = points[Math.floor(random() * n)]!.vector;
    const noisy = new Float32Array(dimensions);
    for (let i = 0; i < dimensions; i++) noisy[i] = base[i]! + (random() * 2 - 1) * 0.3;
    return noisy;
  });

  // Exact answers, from a plain scan over the same unit vectors.
  const truthStore = new VectorStore(dimensions, n);
  for (const point of points) truthStore.put({ ...point, vector: unitVector(point.vector) });
  const exact = (filter?: (i: number) => boolean) =>
    queries.map((query) => {
      const slots = filter ? [...truthStore.slots()].filter(filter) : truthStore.slots();
      return truthStore
        .score(unitVector(query), slots)
        .sort((a, b) => b.score - a.score)
        .slice(0, K)
        .map((hit) => hit.id);
    });
  const truthAll = exact();
  const truthScope = exact((slot) => slot % 20 === 3);
  const truthHalf = exact((slot) => slot % 2 === 1);

  gc();
  const before = process.memoryUsage();
  const index = create();
  const insertStart = performance.now();
  for (let start = 0; start < n; start += 1000) await index.upsert(points.slice(start, start + 1000));
  const insertSeconds = (performance.now() - insertStart) / 1000;
  gc();
  const after = process.memoryUsage();

  const all = await timeQueries(index, queries);
  const scoped = await timeQueries(index, queries, { scope: "team:t3" });
  const half = await timeQueries(index, queries, { tags: ["tag1"] });

  const dir = await mkdtemp(join(tmpdir(), "vector-bench-"));
  const saveStart = performance.now();
  await index.save(join(dir, "snapshot"), "bench");
  const saveSeconds = (performance.now() - saveStart) / 1000;
  const bytes = await dirSize(join(dir, "snapshot"));
  const loaded = create();
  const loadStart = performance.now();
  await loaded.load(join(dir, "snapshot"));
  const loadSeconds = (performance.now() - loadStart) / 1000;
  const afterLoad = await timeQueries(loaded, queries.slice(0, 20));
  const sameAfterLoad = JSON.stringify(afterLoad.results) === JSON.stringify(all.results.slice(0, 20));
  await rm(dir, { recursive: true, force: true });

  const row = (label: string, r: { p50: number; p99: number; results: string[][] }, truth: string[][]) =>
    `  ${label.padEnd(26)} p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  recall@${K} ${recall(r.results, truth).toFixed(3)}`;
  console.log(`${implementation}: ${n} points × ${dimensions} d, ${queryCount} queries, k=${K}, node ${process.version}`);
  console.log(`  insert                     ${(n / insertSeconds).toFixed(0)} points/s (${insertSeconds.toFixed(1)} s)`);
  console.log(`  memory after insert        rss +${mb(after.rss - before.rss)}, heap +${mb(after.heapUsed - before.heapUsed)}, external+arrayBuffers +${mb(after.external + after.arrayBuffers - before.external - before.arrayBuffers)} (rss total ${mb(after.rss)})`);
  console.log(row("search, no filter", all, truthAll));
  console.log(row("search, scope (5%)", scoped, truthScope));
  console.log(row("search, tags any (50%)", half, truthHalf));
  console.log(`  save ${saveSeconds.toFixed(2)} s (${mb(bytes)}), load ${loadSeconds.toFixed(2)} s, same results after load: ${sameAfterLoad}`);
}

await main();
