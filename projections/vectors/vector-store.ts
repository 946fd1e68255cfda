import { simdDot, type SimdDot } from "./simd-dot.js";
import { compareHits, dot, matchesFilter, type NormalizedFilter, type VectorHit, type VectorPayload, type VectorPoint } from "./vector-index.js";

/**
 * The canonical in-process copy of every point: unit vectors packed in one Float32Array, one slot per
 * memory, plus each slot's id and payload. The embedded indexes search through their own structures
 * but keep vectors here, because
 *   - Orama nulls the vector field of stored documents after some searches, so its documents cannot
 *     be the copy we save or re-insert from;
 *   - one packed array costs 4 bytes a component (a number[] costs 8 plus per-element overhead) and is
 *     written to disk as it is;
 *   - a slot number is a small non-negative integer, which is what hnswlib wants as a label.
 * Freed slots are reused, so the array stays as large as the most points ever held at once.
 *
 * The payload fields a filter names by value (app, scope, kind, status) are also kept dictionary-coded,
 * one small integer per slot per field (facets, below): a filtered search counts and lists the matching
 * slots from those arrays without reading a payload object, and only reads payloads for tags and paths.
 *
 * When the dimensions are a multiple of 8, the packed array lives in a WebAssembly memory, after room
 * for one float64 query, so exact scans score through the SIMD kernel of simd-dot.ts (bit-equal to
 * `dot`, about four times faster); otherwise, or without WebAssembly SIMD, in an ordinary array.
 */
export class VectorStore {
  private data: Float32Array;
  /** The SIMD kernel whose memory holds `data` (at byte `dataOffset`), when there is one. */
  private simd: SimdDot | undefined;
  private readonly dataOffset: number;
  private capacity: number;
  private ids: (string | undefined)[] = [];
  private payloads: (VectorPayload | undefined)[] = [];
  private readonly slotOf = new Map<string, number>();
  private freeSlots: number[] = [];
  /** Slots below this have been used at least once: the part of `data` worth saving. */
  private highWater = 0;
  private facets: Record<FacetField, Facet>;
  private matchScratch = new Int32Array(0);

  constructor(
    readonly dimensions: number,
    initialCapacity = 1024,
  ) {
    this.capacity = Math.max(1, initialCapacity);
    this.dataOffset = Math.ceil((dimensions * 8) / 16) * 16;
    this.data = this.allocate(this.capacity);
    this.facets = newFacets(this.capacity);
  }

  get size(): number {
    return this.slotOf.size;
  }

  /** One past the highest slot ever used. */
  get slotCount(): number {
    return this.highWater;
  }

  slotFor(id: string): number | undefined {
    return this.slotOf.get(id);
  }

  has(id: string): boolean {
    return this.slotOf.has(id);
  }

  idAt(slot: number): string | undefined {
    return this.ids[slot];
  }

  payloadAt(slot: number): VectorPayload | undefined {
    return this.payloads[slot];
  }

  payloadOf(id: string): VectorPayload | undefined {
    const slot = this.slotOf.get(id);
    return slot === undefined ? undefined : this.payloads[slot];
  }

  /** A view, not a copy: valid until the next `put` (which may grow the array). */
  vectorAt(slot: number): Float32Array {
    return this.data.subarray(slot * this.dimensions, (slot + 1) * this.dimensions);
  }

  vectorOf(id: string): Float32Array | undefined {
    const slot = this.slotOf.get(id);
    return slot === undefined ? undefined : this.vectorAt(slot);
  }

  /**
   * Stores a unit vector, `point.vector` divided by `norm` as it is copied in (the same float32
   * components as unitVector's copy); a known id keeps its slot.
   */
  put(point: VectorPoint, norm = 1): { slot: number; replaced: boolean } {
    let slot = this.slotOf.get(point.id);
    const replaced = slot !== undefined;
    if (slot === undefined) {
      slot = this.freeSlots.pop() ?? this.highWater;
      if (slot >= this.capacity) this.grow(slot + 1);
      if (slot >= this.highWater) this.highWater = slot + 1;
      this.slotOf.set(point.id, slot);
      this.ids[slot] = point.id;
    }
    const at = slot * this.dimensions;
    if (norm === 1) this.data.set(point.vector, at);
    else {
      const { vector } = point;
      const data = this.data;
      for (let i = 0; i < vector.length; i++) data[at + i] = vector[i]! / norm;
    }
    this.payloads[slot] = point.payload;
    for (const field of FACET_FIELDS) this.facets[field].set(slot, point.payload[field]);
    return { slot, replaced };
  }

  remove(id: string): number | undefined {
    const slot = this.slotOf.get(id);
    if (slot === undefined) return undefined;
    this.slotOf.delete(id);
    this.ids[slot] = undefined;
    this.payloads[slot] = undefined;
    for (const field of FACET_FIELDS) this.facets[field].unset(slot);
    this.data.fill(0, slot * this.dimensions, (slot + 1) * this.dimensions);
    this.freeSlots.push(slot);
    return slot;
  }

  clear(): void {
    this.slotOf.clear();
    this.ids = [];
    this.payloads = [];
    this.freeSlots = [];
    this.highWater = 0;
    this.data.fill(0);
    this.facets = newFacets(this.capacity);
  }

  /** Slots in use, ascending. */
  *slots(): IterableIterator<number> {
    for (let slot = 0; slot < this.highWater; slot++) if (this.ids[slot] !== undefined) yield slot;
  }

  /**
   * Slots in use whose payload the filter keeps, ascending: a view of one buffer reused by every call
   * (valid until the next call), so a search allocates no array the size of its filter. The coded
   * fields are tested on the facet arrays (the rarest first); payloads are read only when the filter
   * names tags or paths.
   */
  matchingSlots(filter: NormalizedFilter | undefined): Int32Array {
    const tests: { codes: Int32Array; wanted: Uint8Array; count: number }[] = [];
    for (const field of FACET_FIELDS) {
      const value = filter?.[field];
      if (value === undefined) continue;
      const test = this.facets[field].wanted(typeof value === "string" ? [value] : value);
      if (test.count === 0) return new Int32Array(0);
      tests.push(test);
    }
    tests.sort((a, b) => a.count - b.count);
    const readPayload = filter?.tags !== undefined || filter?.paths !== undefined;
    if (this.matchScratch.length < this.highWater) this.matchScratch = new Int32Array(this.capacity);
    const out = this.matchScratch;
    let n = 0;
    const end = this.highWater;
    if (tests.length === 0) {
      // Tags or paths only: every slot in use, its payload read.
      for (let slot = 0; slot < end; slot++) if (this.ids[slot] !== undefined && matchesFilter(this.payloads[slot]!, filter)) out[n++] = slot;
      return out.subarray(0, n);
    }
    // Codes are value + 1 and 0 for a slot not in use, and `wanted` has a 1 at each wanted value's
    // code only: a slot not in use never passes. Locals, not properties, in the loop: it runs 100k times.
    const codes = tests[0]!.codes;
    const wanted = tests[0]!.wanted;
    const rest = tests.slice(1);
    if (rest.length === 0 && !readPayload) {
      // The common case (one scope, or one kind): one test, the tightest loop.
      for (let slot = 0; slot < end; slot++) if (wanted[codes[slot]!] === 1) out[n++] = slot;
      return out.subarray(0, n);
    }
    for (let slot = 0; slot < end; slot++) {
      if (wanted[codes[slot]!] !== 1) continue;
      if (rest.length > 0 && !rest.every((t) => t.wanted[t.codes[slot]!] === 1)) continue;
      if (readPayload && !matchesFilter(this.payloads[slot]!, filter)) continue;
      out[n++] = slot;
    }
    return out.subarray(0, n);
  }

  /** Exact cosine scores of a unit query against the given slots (all in use). */
  score(query: Float32Array, slots: Iterable<number>): VectorHit[] {
    const hits: VectorHit[] = [];
    for (const slot of slots) {
      hits.push({ id: this.ids[slot]!, score: dot(query, this.data, slot * this.dimensions) });
    }
    return hits;
  }

  /**
   * The best `k` of the given slots (all in use) for a unit query: what `topHits(score(query, slots), k)`
   * gives (scores rounded to float32, score descending, ties by id ascending), but kept in a bounded
   * heap of slot numbers while scanning, so a scan of 10k slots makes k hit objects, not 10k, and sorts
   * nothing but the k.
   */
  topK(query: Float32Array, slots: ArrayLike<number>, k: number): VectorHit[] {
    const size = Math.min(k, slots.length);
    if (size === 0) return [];
    const heapScore = new Float64Array(size);
    const heapSlot = new Int32Array(size);
    const ids = this.ids;
    const data = this.data;
    const dimensions = this.dimensions;
    // The heap's root is its worst hit: lowest score, and among equal scores the greatest id.
    const worse = (i: number, j: number): boolean =>
      heapScore[i]! < heapScore[j]! || (heapScore[i] === heapScore[j] && ids[heapSlot[i]!]! > ids[heapSlot[j]!]!);
    const swap = (i: number, j: number): void => {
      const s = heapScore[i]!;
      heapScore[i] = heapScore[j]!;
      heapScore[j] = s;
      const t = heapSlot[i]!;
      heapSlot[i] = heapSlot[j]!;
      heapSlot[j] = t;
    };
    const simd = this.simd;
    if (simd) new Float64Array(simd.memory.buffer, 0, dimensions).set(query);
    const bytesPerVector = dimensions * 4;
    const dataOffset = this.dataOffset;
    let filled = 0;
    for (let n = 0; n < slots.length; n++) {
      const slot = slots[n]!;
      const score = Math.fround(simd ? simd.dot(0, dataOffset + slot * bytesPerVector, dimensions) : dot(query, data, slot * dimensions));
      if (filled < size) {
        heapScore[filled] = score;
        heapSlot[filled] = slot;
        for (let i = filled++; i > 0; ) {
          const parent = (i - 1) >> 1;
          if (!worse(i, parent)) break;
          swap(i, parent);
          i = parent;
        }
        continue;
      }
      const rootScore = heapScore[0]!;
      if (score < rootScore || (score === rootScore && ids[slot]! > ids[heapSlot[0]!]!)) continue;
      heapScore[0] = score;
      heapSlot[0] = slot;
      for (let i = 0; ; ) {
        const left = 2 * i + 1;
        if (left >= size) break;
        const right = left + 1;
        const child = right < size && worse(right, left) ? right : left;
        if (!worse(child, i)) break;
        swap(i, child);
        i = child;
      }
    }
    const hits: VectorHit[] = [];
    for (let i = 0; i < size; i++) hits.push({ id: ids[heapSlot[i]!]!, score: heapScore[i]! });
    return hits.sort(compareHits);
  }

  /** The packed vectors of slots [0, slotCount): what a snapshot writes. Freed slots hold zeros. */
  packedVectors(): Float32Array {
    return this.data.subarray(0, this.highWater * this.dimensions);
  }

  /**
   * Replaces the whole content from a snapshot: `vectors` holds `slotCount` packed unit vectors and
   * `entries` names the slots in use (the others become free).
   */
  restore(vectors: Float32Array, slotCount: number, entries: Iterable<{ slot: number; id: string; payload: VectorPayload }>): void {
    this.capacity = Math.max(1024, slotCount);
    this.data = this.allocate(this.capacity);
    this.data.set(vectors.subarray(0, slotCount * this.dimensions));
    this.slotOf.clear();
    this.ids = new Array(slotCount);
    this.payloads = new Array(slotCount);
    this.highWater = slotCount;
    for (const { slot, id, payload } of entries) {
      this.slotOf.set(id, slot);
      this.ids[slot] = id;
      this.payloads[slot] = payload;
    }
    this.facets = newFacets(this.capacity);
    for (let slot = 0; slot < slotCount; slot++) {
      const payload = this.payloads[slot];
      if (payload !== undefined) for (const field of FACET_FIELDS) this.facets[field].set(slot, payload[field]);
    }
    this.freeSlots = [];
    for (let slot = slotCount - 1; slot >= 0; slot--) if (this.ids[slot] === undefined) this.freeSlots.push(slot);
  }

  /** A zeroed array for `capacity` vectors: in a new SIMD kernel's memory when the dimensions allow. */
  private allocate(capacity: number): Float32Array {
    const length = capacity * this.dimensions;
    this.simd = this.dimensions % 8 === 0 ? simdDot(Math.ceil((this.dataOffset + length * 4) / PAGE)) : undefined;
    return this.simd ? new Float32Array(this.simd.memory.buffer, this.dataOffset, length) : new Float32Array(length);
  }

  private grow(minimum: number): void {
    let capacity = this.capacity;
    while (capacity < minimum) capacity *= 2;
    const simd = this.simd;
    if (simd) {
      // Grown in place: the memory keeps its content, only the view is new.
      const needed = Math.ceil((this.dataOffset + capacity * this.dimensions * 4) / PAGE);
      const pages = simd.memory.buffer.byteLength / PAGE;
      try {
        if (needed > pages) simd.memory.grow(needed - pages);
        this.data = new Float32Array(simd.memory.buffer, this.dataOffset, capacity * this.dimensions);
      } catch {
        // Past what WebAssembly may address: an ordinary array from here on.
        const data = new Float32Array(capacity * this.dimensions);
        data.set(new Float32Array(simd.memory.buffer, this.dataOffset, this.capacity * this.dimensions));
        this.simd = undefined;
        this.data = data;
      }
    } else {
      const data = new Float32Array(capacity * this.dimensions);
      data.set(this.data);
      this.data = data;
    }
    this.capacity = capacity;
    for (const field of FACET_FIELDS) this.facets[field].grow(capacity);
  }
}

const PAGE = 65_536;

const FACET_FIELDS = ["app", "scope", "kind", "status"] as const;
type FacetField = (typeof FACET_FIELDS)[number];

const newFacets = (capacity: number): Record<FacetField, Facet> => ({
  app: new Facet(capacity),
  scope: new Facet(capacity),
  kind: new Facet(capacity),
  status: new Facet(capacity),
});

/**
 * One payload field, dictionary-coded: `codes[slot]` is the code of the slot's value (0 for a slot not
 * in use; the first value seen is 1), `counts[code]` how many slots hold it. Codes are never reused; a
 * field has few distinct values (apps, scopes, kinds, statuses), so the dictionary stays small.
 */
class Facet {
  private readonly codeOf = new Map<string, number>();
  private readonly counts: number[] = [0];
  codes: Int32Array;

  constructor(capacity: number) {
    this.codes = new Int32Array(capacity);
  }

  set(slot: number, value: string): void {
    this.unset(slot);
    let code = this.codeOf.get(value);
    if (code === undefined) {
      code = this.counts.length;
      this.codeOf.set(value, code);
      this.counts.push(0);
    }
    this.codes[slot] = code;
    this.counts[code]!++;
  }

  unset(slot: number): void {
    const code = this.codes[slot]!;
    if (code === 0) return;
    this.counts[code]!--;
    this.codes[slot] = 0;
  }

  grow(capacity: number): void {
    if (capacity <= this.codes.length) return;
    const codes = new Int32Array(capacity);
    codes.set(this.codes);
    this.codes = codes;
  }

  /** A mask over codes with 1 at the wanted values', and how many slots hold one of them. */
  wanted(values: readonly string[]): { codes: Int32Array; wanted: Uint8Array; count: number } {
    const wanted = new Uint8Array(this.counts.length);
    let count = 0;
    for (const value of new Set(values)) {
      const code = this.codeOf.get(value);
      if (code === undefined) continue;
      wanted[code] = 1;
      count += this.counts[code]!;
    }
    return { codes: this.codes, wanted, count };
  }
}
