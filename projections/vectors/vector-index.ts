import { z } from "zod";
import { invalid } from "../../schemas/errors.js";
import { AppName, FilePath, Id, MemoryKind, Scope, Tag, Version, nonEmptyLine } from "../../schemas/primitives.js";

/**
 * The vector channel of retrieval: one point per memory (its active version's embedding), searched by
 * cosine similarity and narrowed by the same fields the full-text channel filters on.
 *
 * Implementations (one conformance suite, test/vectors/conformance.ts, runs over each):
 *   - OramaVectorIndex (orama-vectors.ts): embedded default, exact (linear scan);
 *   - HnswVectorIndex (hnsw-vectors.ts): embedded, approximate (HNSW graph), for 100k-memory apps;
 *   - QdrantVectorIndex (qdrant-vectors.ts): a Qdrant server.
 *
 * Every input is checked before anything changes: a bad point (wrong dimensions, non-finite or zero
 * vector, malformed payload) makes the whole call fail with an `invalid` MemledgerError and leaves the
 * index as it was.
 */

/** What a point carries besides its vector: the fields filters use, and what produced the vector. */
export interface VectorPayload {
  app: string;
  scope: string;
  kind: MemoryKind;
  status: string;
  version: number;
  tags: string[];
  paths: string[];
  /** The embedding model that produced the vector; vectors of different models are not comparable. */
  modelId: string;
}

export interface VectorPoint {
  /** The memory id. */
  id: string;
  vector: Float32Array;
  payload: VectorPayload;
}

/**
 * Every field narrows the result; within a list field any one value matching is enough
 * (`tags: ["a", "b"]` keeps points tagged a or b). An empty list is refused: it would match nothing,
 * which is almost always a caller's bug rather than an intent.
 */
export interface VectorFilter {
  app?: string;
  scope?: string | string[];
  kind?: MemoryKind | MemoryKind[];
  status?: string | string[];
  tags?: string[];
  paths?: string[];
}

export interface VectorSearchOptions {
  /** How many hits at most. */
  k: number;
  filter?: VectorFilter;
}

export interface VectorHit {
  /** The memory id. */
  id: string;
  /** Cosine similarity in [-1, 1]; higher is closer. */
  score: number;
}

export interface VectorIndex {
  readonly name: string;
  readonly dimensions: number;
  /** Inserts or replaces points by id (a point's vector and payload are replaced whole). */
  upsert(points: readonly VectorPoint[]): Promise<void>;
  /** Removes points by id; unknown ids are ignored, so replaying a delete is harmless. */
  delete(ids: readonly string[]): Promise<void>;
  /** Hits sorted by score descending, ties by id ascending. */
  search(vector: Float32Array, options: VectorSearchOptions): Promise<VectorHit[]>;
  count(): Promise<number>;
  /** Removes every point (a projection rebuild starts from an empty index). */
  clear(): Promise<void>;
  close(): Promise<void>;
}

/** What `save` records beside the vectors, so a loader can tell which checkpoint they belong to. */
export interface VectorSnapshotInfo {
  /** Opaque to the index: the search projection stores its checkpoint (generation and seq) here. */
  label: string;
  count: number;
  dimensions: number;
  savedAt: string;
}

/**
 * An index that lives in this process and must be saved with its projection's checkpoint: `save`
 * writes a self-contained directory (replacing what was there), `load` replaces the index's content
 * with a saved directory's and returns what was recorded with it. A directory that is incomplete,
 * damaged or of other dimensions is refused with an `invalid` error and the index is left as it was.
 */
export interface PersistentVectorIndex extends VectorIndex {
  save(dir: string, label: string): Promise<VectorSnapshotInfo>;
  load(dir: string): Promise<VectorSnapshotInfo>;
}

export const isPersistentVectorIndex = (index: VectorIndex): index is PersistentVectorIndex =>
  typeof (index as Partial<PersistentVectorIndex>).save === "function" &&
  typeof (index as Partial<PersistentVectorIndex>).load === "function";

// ---------------------------------------------------------------------------------------------------
// Validation and the shared semantics every implementation must agree on (pure, no I/O).

export const MAX_SEARCH_K = 1000;
export const MAX_DIMENSIONS = 65_536;

const Status = z.string().regex(/^[a-z][a-z_-]{0,31}$/, "a lowercase word (e.g. active)");

export const VectorPayloadSchema = z.strictObject({
  app: AppName,
  scope: Scope,
  kind: MemoryKind,
  status: Status,
  version: Version,
  tags: z.array(Tag),
  paths: z.array(FilePath),
  modelId: nonEmptyLine(128),
});

const oneOrMany = <T extends z.ZodType>(item: T) => z.union([item, z.array(item).min(1, "an empty list matches nothing; omit the field")]);

export const VectorFilterSchema = z.strictObject({
  app: AppName.optional(),
  scope: oneOrMany(Scope).optional(),
  kind: oneOrMany(MemoryKind).optional(),
  status: oneOrMany(Status).optional(),
  tags: z.array(Tag).min(1, "an empty list matches nothing; omit the field").optional(),
  paths: z.array(FilePath).min(1, "an empty list matches nothing; omit the field").optional(),
});

const SearchOptionsSchema = z.strictObject({
  k: z.number().int().min(1).max(MAX_SEARCH_K),
  filter: VectorFilterSchema.optional(),
});

/** A filter with every list field as a list, which is what every implementation translates from. */
export interface NormalizedFilter {
  app?: string;
  scope?: string[];
  kind?: string[];
  status?: string[];
  tags?: string[];
  paths?: string[];
}

const asList = (value: string | string[] | undefined): string[] | undefined =>
  value === undefined ? undefined : Array.isArray(value) ? [...new Set(value)] : [value];

export function checkDimensions(dimensions: number): number {
  if (!Number.isInteger(dimensions) || dimensions < 1 || dimensions > MAX_DIMENSIONS) {
    throw invalid(`vector dimensions must be an integer from 1 to ${MAX_DIMENSIONS}`, { dimensions });
  }
  return dimensions;
}

/** The vector's length, or throws when the vector cannot have a direction (cosine needs one). */
function checkVector(vector: unknown, dimensions: number, what: string): number {
  if (!(vector instanceof Float32Array)) throw invalid(`${what}: vector must be a Float32Array`);
  if (vector.length !== dimensions) {
    throw invalid(`${what}: vector has ${vector.length} dimensions, the index has ${dimensions}`, {
      expected: dimensions,
      actual: vector.length,
    });
  }
  let squared = 0;
  for (let i = 0; i < vector.length; i++) {
    const x = vector[i]!;
    if (!Number.isFinite(x)) throw invalid(`${what}: vector has a non-finite component at ${i}`);
    squared += x * x;
  }
  if (squared === 0) throw invalid(`${what}: a zero vector has no direction, so no cosine similarity`);
  // Summed in unitVector's order, so dividing by it gives unitVector's components to the bit.
  return Math.sqrt(squared);
}

/** A unit-length copy: cosine similarity of unit vectors is their dot product. */
export function unitVector(vector: Float32Array): Float32Array {
  let squared = 0;
  for (let i = 0; i < vector.length; i++) squared += vector[i]! * vector[i]!;
  const norm = Math.sqrt(squared);
  const unit = new Float32Array(vector.length);
  for (let i = 0; i < vector.length; i++) unit[i] = vector[i]! / norm;
  return unit;
}

/**
 * Eight running sums instead of one: the additions of one step no longer wait for each other, which
 * makes an exact scan faster, and it is the order of the SIMD kernel of exact scans (simd-dot.ts),
 * which must give the same float64 to the bit. Every embedded index scores through this function or
 * that kernel, so they agree exactly. Components past the last multiple of 8 go into the first sum.
 */
export function dot(a: Float32Array, b: Float32Array, bOffset = 0): number {
  const n = a.length;
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let s4 = 0;
  let s5 = 0;
  let s6 = 0;
  let s7 = 0;
  let i = 0;
  for (; i + 7 < n; i += 8) {
    const j = bOffset + i;
    s0 += a[i]! * b[j]!;
    s1 += a[i + 1]! * b[j + 1]!;
    s2 += a[i + 2]! * b[j + 2]!;
    s3 += a[i + 3]! * b[j + 3]!;
    s4 += a[i + 4]! * b[j + 4]!;
    s5 += a[i + 5]! * b[j + 5]!;
    s6 += a[i + 6]! * b[j + 6]!;
    s7 += a[i + 7]! * b[j + 7]!;
  }
  for (; i < n; i++) s0 += a[i]! * b[bOffset + i]!;
  return s0 + s1 + (s2 + s3) + (s4 + s5 + (s6 + s7));
}

const describeIssues = (error: z.ZodError): string =>
  error.issues.map((issue) => `${issue.path.join(".") || "(root)"}: ${issue.message}`).join("; ");

/** The payload's fields, in the schema's order (the order a checked payload's keys come in). */
const PAYLOAD_FIELDS = Object.keys(VectorPayloadSchema.shape) as (keyof VectorPayload)[];
/** Payload fields that are lists: the schema checks each item. */
const LIST_FIELDS = new Set<string>(["tags", "paths"] satisfies (keyof VectorPayload)[]);
/** Values remembered per field before the memory starts over. */
const MAX_ACCEPTED_VALUES = 65_536;

/**
 * The values (list items, for lists) of each payload field the schema has accepted. Each field's schema
 * is a function of that field's value alone, and the object's schema is only those fields (strict), so
 * a payload whose own keys are exactly the fields and whose every value was accepted before is
 * accepted. Rebuilding an index upserts tens of thousands of payloads that repeat the same app, scopes,
 * kinds, statuses, model, tags and paths; running the schema on each was most of an upsert's time (8k
 * points: 90 ms of 137).
 */
const acceptedValues = new Map<string, Set<unknown>>(PAYLOAD_FIELDS.map((field) => [field, new Set<unknown>()]));

const wasAccepted = (field: string, value: unknown): boolean => acceptedValues.get(field)!.has(value);

function rememberAccepted(payload: VectorPayload): void {
  for (const field of PAYLOAD_FIELDS) {
    const seen = acceptedValues.get(field)!;
    if (seen.size >= MAX_ACCEPTED_VALUES) seen.clear();
    const value = payload[field];
    if (Array.isArray(value)) for (const item of value) seen.add(item);
    else seen.add(value);
  }
}

/** A copy of `payload` in the schema's key order when every value of it was accepted before, else undefined. */
function payloadAcceptedBefore(payload: unknown): VectorPayload | undefined {
  if (typeof payload !== "object" || payload === null || Array.isArray(payload)) return undefined;
  if (Object.keys(payload).length !== PAYLOAD_FIELDS.length) return undefined;
  const copy: Record<string, unknown> = {};
  for (const field of PAYLOAD_FIELDS) {
    if (!Object.hasOwn(payload, field)) return undefined;
    const value = (payload as Record<string, unknown>)[field];
    if (LIST_FIELDS.has(field)) {
      if (!Array.isArray(value)) return undefined;
      const items: unknown[] = new Array(value.length);
      for (let i = 0; i < value.length; i++) {
        // A hole reads as undefined, which no field accepts.
        if (!wasAccepted(field, value[i])) return undefined;
        items[i] = value[i];
      }
      copy[field] = items;
    } else {
      if (!wasAccepted(field, value)) return undefined;
      copy[field] = value;
    }
  }
  return copy as unknown as VectorPayload;
}

/** The payload as the schema checks it (a copy), or the schema's error; remembered values skip the schema. */
function checkPayload(payload: unknown): { success: true; data: VectorPayload } | { success: false; error: z.ZodError } {
  const known = payloadAcceptedBefore(payload);
  if (known) return { success: true, data: known };
  const parsed = VectorPayloadSchema.safeParse(payload);
  if (parsed.success) rememberAccepted(parsed.data);
  return parsed;
}

/** A point of a checked upsert batch: the caller's vector, not yet copied, and its length. */
export interface CheckedPoint extends VectorPoint {
  /** What `vector` is divided by to be of unit length (see unitVector). */
  norm: number;
}

/**
 * Checks a whole upsert batch before anything is written. When the same id appears twice, the later
 * point wins, as if the batch had been applied one point at a time. The vectors are the caller's own
 * arrays: an index that keeps them divides by `norm` as it copies them into its storage (one copy, not
 * a unit copy and then a second into the store: at a rebuild's 80k vectors, the intermediate copies
 * were 160 MB of garbage), and must do so before it waits for anything, since the caller may reuse them.
 */
export function checkPoints(points: readonly VectorPoint[], dimensions: number): CheckedPoint[] {
  if (!Array.isArray(points)) throw invalid("points must be an array");
  const byId = new Map<string, CheckedPoint>();
  points.forEach((point, position) => {
    const what = `point ${position}`;
    const id = Id.safeParse(point?.id);
    if (!id.success) throw invalid(`${what}: id ${describeIssues(id.error)}`, { position });
    const payload = checkPayload(point.payload);
    if (!payload.success) throw invalid(`${what} (${point.id}): payload ${describeIssues(payload.error)}`, { id: point.id });
    const norm = checkVector(point.vector, dimensions, `${what} (${point.id})`);
    byId.delete(id.data);
    byId.set(id.data, { id: id.data, vector: point.vector, norm, payload: payload.data });
  });
  return [...byId.values()];
}

/** {@link checkPoints}, each vector replaced by a unit-length copy of its own. */
export function preparePoints(points: readonly VectorPoint[], dimensions: number): VectorPoint[] {
  return checkPoints(points, dimensions).map(({ id, vector, payload }) => ({ id, vector: unitVector(vector), payload }));
}

export function prepareIds(ids: readonly string[]): string[] {
  if (!Array.isArray(ids)) throw invalid("ids must be an array");
  ids.forEach((id, position) => {
    const parsed = Id.safeParse(id);
    if (!parsed.success) throw invalid(`id ${position}: ${describeIssues(parsed.error)}`, { position });
  });
  return [...new Set(ids)];
}

export interface PreparedSearch {
  /** Unit length. */
  vector: Float32Array;
  k: number;
  filter: NormalizedFilter | undefined;
}

export function prepareSearch(vector: Float32Array, options: VectorSearchOptions, dimensions: number): PreparedSearch {
  checkVector(vector, dimensions, "query");
  const parsed = SearchOptionsSchema.safeParse(options);
  if (!parsed.success) throw invalid(`search options: ${describeIssues(parsed.error)}`);
  const raw = parsed.data.filter;
  let filter: NormalizedFilter | undefined;
  if (raw) {
    filter = {};
    if (raw.app !== undefined) filter.app = raw.app;
    for (const field of ["scope", "kind", "status", "tags", "paths"] as const) {
      const list = asList(raw[field]);
      if (list) filter[field] = list;
    }
    if (Object.keys(filter).length === 0) filter = undefined;
  }
  return { vector: unitVector(vector), k: parsed.data.k, filter };
}

const anyOf = (wanted: string[] | undefined, actual: string): boolean => wanted === undefined || wanted.includes(actual);
const intersects = (wanted: string[] | undefined, actual: readonly string[]): boolean =>
  wanted === undefined || actual.some((value) => wanted.includes(value));

/** The one definition of what a filter keeps; the embedded indexes use it, Qdrant's is translated from it. */
export function matchesFilter(payload: VectorPayload, filter: NormalizedFilter | undefined): boolean {
  if (!filter) return true;
  return (
    (filter.app === undefined || filter.app === payload.app) &&
    anyOf(filter.scope, payload.scope) &&
    anyOf(filter.kind, payload.kind) &&
    anyOf(filter.status, payload.status) &&
    intersects(filter.tags, payload.tags) &&
    intersects(filter.paths, payload.paths)
  );
}

/** Score descending, then id ascending (code-unit order, the same in every implementation). */
export function compareHits(a: VectorHit, b: VectorHit): number {
  if (a.score !== b.score) return b.score - a.score;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/**
 * Keeps the best `k` hits in order. Scores are rounded to float32 precision first: implementations
 * compute the same cosine with different accumulation orders, and the last bits must not decide ties.
 */
export function topHits(hits: VectorHit[], k: number): VectorHit[] {
  for (const hit of hits) hit.score = Math.fround(hit.score);
  hits.sort(compareHits);
  return hits.length > k ? hits.slice(0, k) : hits;
}

/**
 * For indexes that return a score-sorted list cut at a limit and break ties their own way: asks for
 * one more than k to see whether a tie straddles the cut, and only then for more, so that hits tied at
 * the cut are chosen by id like everywhere else.
 */
export async function searchCutAtK(k: number, fetch: (limit: number) => Promise<VectorHit[]>): Promise<VectorHit[]> {
  let limit = k + 1;
  for (;;) {
    const hits = await fetch(limit);
    if (!tiedPastCut(hits, k, limit)) return topHits(hits, k);
    limit *= 2;
  }
}

/** searchCutAtK for a synchronous fetch: the caller's search runs to its end without yielding. */
export function cutAtK(k: number, fetch: (limit: number) => VectorHit[]): VectorHit[] {
  let limit = k + 1;
  for (;;) {
    const hits = fetch(limit);
    if (!tiedPastCut(hits, k, limit)) return topHits(hits, k);
    limit *= 2;
  }
}

function tiedPastCut(hits: VectorHit[], k: number, limit: number): boolean {
  const cut = hits[k - 1];
  const last = hits[limit - 1];
  return hits.length >= limit && cut !== undefined && last !== undefined && Math.fround(last.score) === Math.fround(cut.score);
}
