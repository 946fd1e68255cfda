import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import hnswlib from "hnswlib-node";
import { z } from "zod";
import { internal, invalid } from "../../schemas/errors.js";
import { checkDimensions, checkPoints, prepareIds, prepareSearch, unitVector, cutAtK, compareHits, type NormalizedFilter, type PersistentVectorIndex, type VectorHit, type VectorPoint, type VectorSearchOptions, type VectorSnapshotInfo } from "./vector-index.js";
import { loadVectorSnapshot, saveVectorSnapshot } from "./vector-snapshot.js";
import { VectorStore } from "./vector-store.js";
import { GraphBuilder } from "./graph-builder.js";

// hnswlib-node is a CommonJS native addon: its classes are properties of the module object.
const { HierarchicalNSW } = hnswlib;
type Graph = InstanceType<typeof HierarchicalNSW>;

/**
 * Embedded approximate index: an HNSW graph (hnswlib-node) over the vectors of a VectorStore. Search
 * cost grows with log(n) instead of n (NOTES: p50 1.3 ms at 100k 512-d, against Orama's 300 ms).
 *
 * - Labels are the store's slot numbers. A deleted point is marked deleted in the graph and its slot
 *   freed; the next new point takes the slot, and adding a point under a deleted label revives that
 *   graph node with the new vector, so the graph does not fill up with dead nodes.
 * - Scores are recomputed exactly from the store, so they agree with the exact indexes to the bit;
 *   only which points are found is approximate.
 * - A filter that keeps few points is answered exactly by scanning those points: HNSW with a selective
 *   filter walks most of the graph and can miss matches, while scoring a few thousand vectors is cheap.
 *   A broad filter over-fetches from the graph without a filter; the band between walks the graph with
 *   the filter as hnswlib's label callback (the planner: `search`).
 * - Building a graph is slow (NOTES: 380 s for 100k random 512-d vectors), so `save` writes the graph
 *   itself (`writeIndex`) next to the vectors and `load` reads it back instead of rebuilding.
 * - The graph is an accelerator, never waited for. An index that was created or cleared and has not
 *   needed its graph yet (a projection rebuild inserts every memory and searches none before promote)
 *   stops building one once it holds `buildInWorkerFrom` points: inserts only go into the store, and a
 *   save writes the vectors without a graph. The graph is built on a worker thread (graph-builder.ts)
 *   when a search first needs it, or at once when a snapshot without one is loaded (after a rebuild, or
 *   written by the Orama index); until the builder has caught up and its graph has come back (through
 *   hnswlib's file format), searches scan the store exactly, as Qdrant answers a segment whose index
 *   its optimizer has not built yet. From then on inserts go into the graph here, one at a time. A
 *   rebuild at 100k events spent 7 of its 15 s waiting for the graph before it could promote.
 */
export interface HnswVectorIndexOptions {
  dimensions: number;
  name?: string;
  /** Graph degree: more is better recall and more memory. hnswlib's default 16. */
  m?: number;
  /** Candidate list while building: more is a better graph and slower inserts. */
  efConstruction?: number;
  /** Candidate list while searching, raised to k when k is larger. */
  efSearch?: number;
  /** At or below this many candidate points, search scans them exactly instead of walking the graph. */
  exactScanLimit?: number;
  /**
   * A filter keeping at least this share of the points is searched in the graph without the filter,
   * over-fetching and dropping what the filter does not keep (see `search`). Above 1: never.
   */
  broadFilterShare?: number;
  /** Over-fetching asks again for k / (share of matches kept so far) × this many neighbours. */
  overfetchMargin?: number;
  /** Over-fetching never asks the graph for more neighbours than this (its cost grows with the request). */
  maxOverfetch?: number;
  /** When over-fetching gives up, a filter keeping at most this many points is scanned exactly, else walked with the callback. */
  exactFallbackLimit?: number;
  initialCapacity?: number;
  /**
   * Bulk loading: a new or cleared index builds its graph on a worker thread once it holds this many
   * points without having needed the graph (default 256; Infinity: never).
   */
  buildInWorkerFrom?: number;
}

const GRAPH_FILE = "hnsw.index";
const PARAMS_FILE = "hnsw.json";
const GraphParams = z.strictObject({ m: z.number().int().min(2), efConstruction: z.number().int().min(1) });

const DEFAULTS = { m: 16, efConstruction: 200, efSearch: 64, exactScanLimit: 4096, broadFilterShare: 0.05, overfetchMargin: 1.5, maxOverfetch: 1024, exactFallbackLimit: 32_768, initialCapacity: 1024, buildInWorkerFrom: 256 };

export class HnswVectorIndex implements PersistentVectorIndex {
  readonly name: string;
  readonly dimensions: number;
  private readonly m: number;
  private readonly efConstruction: number;
  private readonly efSearch: number;
  private readonly exactScanLimit: number;
  private readonly broadFilterShare: number;
  private readonly overfetchMargin: number;
  private readonly maxOverfetch: number;
  private readonly exactFallbackLimit: number;
  private readonly initialCapacity: number;
  private readonly buildInWorkerFrom: number;
  private store: VectorStore;
  /** Undefined while there is none yet (deferred) or it is being built by `builder`. */
  private graph: Graph | undefined;
  private builder: GraphBuilder | undefined;
  /** True from creation or clear until the graph is first needed here (or loaded): bulk loading may use the builder. */
  private bulk = true;
  /** The graph coming back from the builder: every caller that needs it waits for this one transfer. */
  private adopting: Promise<void> | undefined;
  private closed = false;
  /** The filter's slots as a mask over labels, for the graph; all zeros between searches. */
  private maskScratch = new Uint8Array(0);

  constructor(options: HnswVectorIndexOptions) {
    this.dimensions = checkDimensions(options.dimensions);
    this.name = options.name ?? "hnsw";
    this.m = options.m ?? DEFAULTS.m;
    this.efConstruction = options.efConstruction ?? DEFAULTS.efConstruction;
    this.efSearch = options.efSearch ?? DEFAULTS.efSearch;
    this.exactScanLimit = options.exactScanLimit ?? DEFAULTS.exactScanLimit;
    this.broadFilterShare = options.broadFilterShare ?? DEFAULTS.broadFilterShare;
    this.overfetchMargin = options.overfetchMargin ?? DEFAULTS.overfetchMargin;
    this.maxOverfetch = options.maxOverfetch ?? DEFAULTS.maxOverfetch;
    this.exactFallbackLimit = options.exactFallbackLimit ?? DEFAULTS.exactFallbackLimit;
    // At least 1: capacity only ever grows from a positive number (see ensureGraphCapacity).
    this.initialCapacity = Math.max(1, Math.floor(options.initialCapacity ?? DEFAULTS.initialCapacity));
    this.buildInWorkerFrom = options.buildInWorkerFrom ?? DEFAULTS.buildInWorkerFrom;
    this.store = new VectorStore(this.dimensions, this.initialCapacity);
    this.graph = this.emptyGraph(this.initialCapacity);
  }

  async upsert(points: readonly VectorPoint[]): Promise<void> {
    this.ensureOpen();
    let prepared = checkPoints(points, this.dimensions);
    // Sent to the builder now, an insert would land after the graph it is writing: wait, then insert
    // here, with unit copies made first (the caller may reuse its arrays once this is waiting).
    if (this.adopting) {
      prepared = prepared.map((point) => ({ ...point, vector: unitVector(point.vector), norm: 1 }));
      await this.adopting;
    }
    // Bulk loading past the threshold: no graph until one is needed (a search, or a load elsewhere).
    if (this.graph && !this.builder && this.bulk && this.store.size + prepared.length >= this.buildInWorkerFrom) this.graph = undefined;
    if (!this.graph && !this.builder) {
      for (const point of prepared) this.store.put(point, point.norm);
      return;
    }
    if (this.builder) {
      const slots = new Int32Array(prepared.length);
      const vectors = new Float32Array(prepared.length * this.dimensions);
      prepared.forEach((point, i) => {
        const { slot } = this.store.put(point, point.norm);
        slots[i] = slot;
        vectors.set(this.store.vectorAt(slot), i * this.dimensions);
      });
      this.builder.add(slots, vectors);
      return;
    }
    const graph = this.graph!;
    for (const point of prepared) {
      const { slot } = this.store.put(point, point.norm);
      this.ensureGraphCapacity(graph, slot + 1);
      // A known label (a replaced point, or a freed slot's deleted node) is updated and undeleted in place.
      graph.addPoint(Array.from(this.store.vectorAt(slot)), slot);
    }
  }

  async delete(ids: readonly string[]): Promise<void> {
    this.ensureOpen();
    const checked = prepareIds(ids);
    if (this.adopting) await this.adopting;
    const removed: number[] = [];
    for (const id of checked) {
      const slot = this.store.remove(id);
      if (slot !== undefined) removed.push(slot);
    }
    if (this.builder) {
      if (removed.length > 0) this.builder.markDelete(removed);
      return;
    }
    // Deferred: the graph will be built from the store, which no longer holds them.
    if (!this.graph) return;
    for (const slot of removed) this.graph.markDelete(slot);
  }

  /** Moves graph building to a worker, seeded with the points held now (what buildGraph would add). */
  private startBuilder(): void {
    const builder = new GraphBuilder({
      dimensions: this.dimensions,
      m: this.m,
      efConstruction: this.efConstruction,
      capacity: Math.max(this.initialCapacity, this.store.slotCount),
    });
    const slots = [...this.store.slots()];
    if (slots.length > 0) {
      const vectors = new Float32Array(slots.length * this.dimensions);
      slots.forEach((slot, i) => vectors.set(this.store.vectorAt(slot), i * this.dimensions));
      builder.add(Int32Array.from(slots), vectors);
    }
    this.builder = builder;
    this.graph = undefined;
    // Taken back as soon as it is complete, in the background: searches scan exactly meanwhile.
    builder.onCaughtUp = () => {
      if (this.builder === builder && !this.adopting && !this.closed) void this.graphHere().catch(() => undefined);
    };
    if (builder.caughtUp) builder.onCaughtUp();
  }

  /** Starts building the graph on a worker thread if there is none yet. */
  private ensureBuilding(): void {
    if (!this.graph && !this.builder && !this.closed) this.startBuilder();
  }

  /** True when searches walk a graph; false while they scan exactly because it is not built yet. */
  get hasGraph(): boolean {
    return this.graph !== undefined && !this.adopting;
  }

  /**
   * Resolves once the graph is here: starts building it if there is none, waits for the builder to
   * catch up and for the graph to come back. For benchmarks and tests that measure the steady state;
   * serving never waits for it.
   */
  async whenGraphReady(): Promise<void> {
    this.ensureOpen();
    for (;;) {
      if (this.adopting) await this.adopting.catch(() => undefined);
      if (this.graph) return;
      this.ensureBuilding();
      const builder = this.builder!;
      if (builder.caughtUp) {
        await this.graphHere();
        continue;
      }
      await new Promise<void>((resolve) => {
        const previous = builder.onCaughtUp;
        builder.onCaughtUp = () => {
          previous?.();
          resolve();
        };
      });
    }
  }

  /**
   * The graph, here: taken back from the builder if it is there, once however many callers ask at the
   * same time. `dir`: where the builder writes it (a snapshot being saved), else a temporary directory.
   */
  private async graphHere(dir?: string): Promise<Graph> {
    const builder = this.builder;
    if (builder) this.adopting ??= this.adopt(builder, dir).finally(() => (this.adopting = undefined));
    if (this.adopting) await this.adopting;
    return this.graph!;
  }

  private async adopt(builder: GraphBuilder, dir: string | undefined): Promise<void> {
    const temp = dir ?? (await mkdtemp(join(tmpdir(), "memledger-hnsw-")));
    try {
      const file = join(temp, GRAPH_FILE);
      await builder.writeIndex(file);
      const graph = new HierarchicalNSW("cosine", this.dimensions);
      await graph.readIndex(file);
      const room = Math.max(this.initialCapacity, this.store.slotCount);
      if (graph.getMaxElements() < room) graph.resizeIndex(room);
      this.graph = graph;
      this.builder = undefined;
      this.bulk = false;
      await builder.close();
    } finally {
      if (dir === undefined) await rm(temp, { recursive: true, force: true });
    }
  }

  private async stopBuilder(): Promise<void> {
    await this.adopting?.catch(() => undefined);
    const builder = this.builder;
    this.builder = undefined;
    await builder?.close();
  }

  /**
   * A small query planner for filters, by how many points the filter keeps (counted from the store's
   * facet arrays, no payload read unless the filter names tags or paths), as Qdrant plans:
   *   - at most `exactScanLimit` points: scanned exactly (SIMD scores, a bounded top-k heap);
   *   - at least `broadFilterShare` of the points: the graph is searched WITHOUT the filter for more
   *     neighbours than asked and the labels the filter drops are dropped afterwards (`overfetch`);
   *     when that gives up (the query's neighbourhood holds few matches), an exact scan if the filter
   *     keeps at most `exactFallbackLimit` points, else the walk below;
   *   - in between: the graph is walked with the filter as hnswlib's label callback, a JavaScript call
   *     per node visited (about 1.3 µs each at 100k; a walk far from the filtered points visits tens
   *     of thousands).
   * Measured at 100k 512-d points with a scope of 10k (bench/search.ts's corpus): docs/retrieval.md.
   */
  async search(vector: Float32Array, options: VectorSearchOptions): Promise<VectorHit[]> {
    this.ensureOpen();
    const { vector: query, k, filter } = prepareSearch(vector, options, this.dimensions);
    if (this.store.size === 0) return [];
    // Without its graph (not built yet, or still with its builder) a search never waits for it: it
    // scans exactly, and starts the build if the plan would have walked a graph.
    if (!this.graph || this.builder || this.adopting) {
      const matching = filter ? this.store.matchingSlots(filter) : undefined;
      const candidates = matching ? matching.length : this.store.size;
      if (candidates === 0) return [];
      if (candidates > this.exactScanLimit) {
        this.bulk = false;
        this.ensureBuilding();
      }
      return this.store.topK(query, matching ?? Int32Array.from(this.store.slots()), k);
    }
    return this.searchNow(query, k, filter);
  }

  private searchNow(query: Float32Array, k: number, filter: NormalizedFilter | undefined): VectorHit[] {
    const matching = filter ? this.store.matchingSlots(filter) : undefined;
    const candidates = matching ? matching.length : this.store.size;
    if (candidates === 0) return [];
    if (candidates <= this.exactScanLimit) return this.store.topK(query, matching ?? Int32Array.from(this.store.slots()), k);
    const graph = this.graph!;
    this.bulk = false;
    const queryArray = Array.from(query);
    if (!matching) return cutAtK(k, (limit) => this.walk(graph, queryArray, query, limit, undefined));
    if (this.maskScratch.length < this.store.slotCount) this.maskScratch = new Uint8Array(Math.max(this.store.slotCount, 2 * this.maskScratch.length));
    const mask = this.maskScratch;
    for (let i = 0; i < matching.length; i++) mask[matching[i]!] = 1;
    try {
      if (candidates / this.store.size >= this.broadFilterShare) {
        let gaveUp = false;
        const hits = cutAtK(k, (limit) => {
          const found = gaveUp ? undefined : this.overfetch(graph, queryArray, query, mask, limit);
          if (found) return found;
          gaveUp = true;
          return [];
        });
        if (!gaveUp) return hits;
        // The query's neighbourhood holds few matches: a walk with the callback would go far; an exact scan is bounded.
        if (candidates <= this.exactFallbackLimit) return this.store.topK(query, matching, k);
      }
      return cutAtK(k, (limit) => this.walk(graph, queryArray, query, limit, (label) => mask[label] === 1));
    } finally {
      for (let i = 0; i < matching.length; i++) mask[matching[i]!] = 0;
    }
  }

  /** The graph's search, with the filter (if any) as hnswlib's label callback. */
  private walk(graph: Graph, queryArray: number[], query: Float32Array, limit: number, keep: ((label: number) => boolean) | undefined): VectorHit[] {
    const wanted = Math.min(limit, this.store.size);
    graph.setEf(Math.max(this.efSearch, wanted));
    const { neighbors } = graph.searchKnn(queryArray, wanted, keep);
    // The graph orders equal distances its own way; cutAtK settles ties at the cut by memory id.
    return this.store.score(query, neighbors).sort(compareHits);
  }

  /**
   * The graph's nearest points the mask keeps, at least `limit` of them, from unfiltered searches:
   * first for twice `limit` (a query inside the filtered region keeps most of its neighbours), then,
   * while too few are kept, for `limit` divided by the share kept so far times `overfetchMargin` (at
   * least double the last request). Undefined when the next request would exceed `maxOverfetch` (the
   * query's neighbourhood holds few matching points: the caller takes another plan). A search that
   * already asked for every point returns what it kept: the graph has nothing more to give.
   */
  private overfetch(graph: Graph, queryArray: number[], query: Float32Array, mask: Uint8Array, limit: number): VectorHit[] | undefined {
    const size = this.store.size;
    let wanted = Math.max(this.efSearch, 2 * limit);
    for (;;) {
      const asked = Math.min(wanted, size);
      graph.setEf(Math.max(this.efSearch, asked));
      const { neighbors } = graph.searchKnn(queryArray, asked);
      const kept = neighbors.filter((label) => mask[label] === 1);
      if (kept.length >= limit || asked >= size) return this.store.score(query, kept).sort(compareHits);
      const share = Math.max(kept.length, 1) / Math.max(neighbors.length, 1);
      wanted = Math.max(2 * asked, Math.ceil((limit / share) * this.overfetchMargin));
      if (wanted > this.maxOverfetch) return undefined;
    }
  }

  async count(): Promise<number> {
    this.ensureOpen();
    return this.store.size;
  }

  async clear(): Promise<void> {
    this.ensureOpen();
    await this.stopBuilder();
    this.store = new VectorStore(this.dimensions, this.initialCapacity);
    this.graph = this.emptyGraph(this.initialCapacity);
    this.bulk = true;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.stopBuilder();
  }

  async save(dir: string, label: string): Promise<VectorSnapshotInfo> {
    this.ensureOpen();
    return saveVectorSnapshot(dir, this.store, {
      label,
      writer: this.name,
      writeExtras: async (temp) => {
        if (this.adopting) await this.adopting;
        // No graph yet, or one still being built: the vectors alone; a load builds the graph again.
        if (!this.graph && !this.builder?.caughtUp) return [];
        // A complete graph still with its builder is written by it, straight into the snapshot, and read back here.
        if (this.builder) await this.graphHere(temp);
        else await this.graph!.writeIndex(join(temp, GRAPH_FILE));
        await writeFile(join(temp, PARAMS_FILE), JSON.stringify({ m: this.m, efConstruction: this.efConstruction }) + "\n");
        return [GRAPH_FILE, PARAMS_FILE];
      },
    });
  }

  async load(dir: string): Promise<VectorSnapshotInfo> {
    this.ensureOpen();
    const snapshot = await loadVectorSnapshot(dir, this.dimensions);
    const store = new VectorStore(this.dimensions, this.initialCapacity);
    store.restore(snapshot.vectors, snapshot.slotCount, snapshot.entries);
    const graph = snapshot.files.includes(GRAPH_FILE) ? await this.readGraph(snapshot.dir, store) : undefined;
    await this.stopBuilder();
    this.store = store;
    this.bulk = false;
    this.graph = graph ?? (store.size < this.buildInWorkerFrom ? this.buildGraph(store) : undefined);
    // Saved without a graph (a rebuild's, or the Orama index's): built in the background.
    if (!this.graph) this.startBuilder();
    return snapshot.info;
  }

  private async readGraph(dir: string, store: VectorStore): Promise<Graph> {
    const paramsText = await readFile(join(dir, PARAMS_FILE), "utf8").catch(() => "null");
    const params = GraphParams.safeParse(parseJsonOrNull(paramsText));
    if (!params.success) throw invalid(`vector snapshot in ${dir} has a graph without readable parameters`);
    const graph = new HierarchicalNSW("cosine", this.dimensions);
    try {
      await graph.readIndex(join(dir, GRAPH_FILE));
    } catch (error) {
      // `invalid` is what the loader treats as "derive the vectors again" rather than a failure.
      throw invalid(`vector snapshot in ${dir}: its graph cannot be read`, { cause: String(error) });
    }
    // The graph holds a node for every slot in use (freed slots are deleted nodes, or absent when the
    // graph was rebuilt after they were freed), and no label beyond the store's slots.
    const labels = new Set(graph.getIdsList());
    const matches =
      graph.getNumDimensions() === this.dimensions &&
      graph.getCurrentCount() <= store.slotCount &&
      [...labels].every((label) => label < store.slotCount) &&
      [...store.slots()].every((slot) => labels.has(slot));
    if (!matches) throw invalid(`vector snapshot in ${dir}: its graph does not match its vectors`);
    // Room for what the store may hold without a resize per insert (a read graph is full to the brim).
    const room = Math.max(this.initialCapacity, store.slotCount);
    if (graph.getMaxElements() < room) graph.resizeIndex(room);
    return graph;
  }

  private buildGraph(store: VectorStore): Graph {
    const graph = this.emptyGraph(Math.max(this.initialCapacity, store.slotCount));
    for (const slot of store.slots()) graph.addPoint(Array.from(store.vectorAt(slot)), slot);
    // Free slots below slotCount were never added to this graph; a later put into one adds it then.
    return graph;
  }

  private emptyGraph(capacity: number): Graph {
    const graph = new HierarchicalNSW("cosine", this.dimensions);
    graph.initIndex({ maxElements: capacity, m: this.m, efConstruction: this.efConstruction });
    return graph;
  }

  /**
   * Grows the graph geometrically, in one step. A graph read back from disk has room for exactly the
   * nodes it holds (hnswlib's readIndex), which is 0 for an empty one: growth is computed from the
   * index's own floor too, never by doubling the graph's capacity alone (doubling 0 never ends).
   */
  private ensureGraphCapacity(graph: Graph, minimum: number): void {
    const capacity = graph.getMaxElements();
    if (capacity >= minimum) return;
    graph.resizeIndex(Math.max(minimum, capacity * 2, this.initialCapacity));
  }

  private ensureOpen(): void {
    if (this.closed) throw internal(`vector index ${this.name} is closed`);
  }
}

function parseJsonOrNull(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
