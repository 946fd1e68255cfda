import { dot, matchesFilter, type NormalizedFilter, type VectorHit, type VectorPayload, type VectorPoint } from "./vector-index.js";

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
 */
export class VectorStore {
  private data: Float32Array;
  private capacity: number;
  private ids: (string | undefined)[] = [];
  private payloads: (VectorPayload | undefined)[] = [];
  private readonly slotOf = new Map<string, number>();
  private freeSlots: number[] = [];
  /** Slots below this have been used at least once: the part of `data` worth saving. */
  private highWater = 0;

  constructor(
    readonly dimensions: number,
    initialCapacity = 1024,
  ) {
    this.capacity = Math.max(1, initialCapacity);
    this.data = new Float32Array(this.capacity * dimensions);
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

  /** Stores a unit vector; a known id keeps its slot. */
  put(point: VectorPoint): { slot: number; replaced: boolean } {
    let slot = this.slotOf.get(point.id);
    const replaced = slot !== undefined;
    if (slot === undefined) {
      slot = this.freeSlots.pop() ?? this.highWater;
      if (slot >= this.capacity) this.grow(slot + 1);
      if (slot >= this.highWater) this.highWater = slot + 1;
      this.slotOf.set(point.id, slot);
      this.ids[slot] = point.id;
    }
    this.data.set(point.vector, slot * this.dimensions);
    this.payloads[slot] = point.payload;
    return { slot, replaced };
  }

  remove(id: string): number | undefined {
    const slot = this.slotOf.get(id);
    if (slot === undefined) return undefined;
    this.slotOf.delete(id);
    this.ids[slot] = undefined;
    this.payloads[slot] = undefined;
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
  }

  /** Slots in use, ascending. */
  *slots(): IterableIterator<number> {
    for (let slot = 0; slot < this.highWater; slot++) if (this.ids[slot] !== undefined) yield slot;
  }

  /** Slots in use whose payload the filter keeps. */
  matchingSlots(filter: NormalizedFilter | undefined): number[] {
    const matching: number[] = [];
    for (let slot = 0; slot < this.highWater; slot++) {
      const payload = this.payloads[slot];
      if (payload !== undefined && matchesFilter(payload, filter)) matching.push(slot);
    }
    return matching;
  }

  /** Exact cosine scores of a unit query against the given slots (all in use). */
  score(query: Float32Array, slots: Iterable<number>): VectorHit[] {
    const hits: VectorHit[] = [];
    for (const slot of slots) {
      hits.push({ id: this.ids[slot]!, score: dot(query, this.data, slot * this.dimensions) });
    }
    return hits;
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
    this.data = new Float32Array(this.capacity * this.dimensions);
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
    this.freeSlots = [];
    for (let slot = slotCount - 1; slot >= 0; slot--) if (this.ids[slot] === undefined) this.freeSlots.push(slot);
  }

  private grow(minimum: number): void {
    let capacity = this.capacity;
    while (capacity < minimum) capacity *= 2;
    const data = new Float32Array(capacity * this.dimensions);
    data.set(this.data);
    this.data = data;
    this.capacity = capacity;
  }
}
