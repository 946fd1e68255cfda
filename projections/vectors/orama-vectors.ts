import { create, insert, remove, search, type Orama, type WhereCondition } from "@orama/orama";
import { checkDimensions, compareHits, dot, prepareIds, preparePoints, prepareSearch, searchCutAtK, type NormalizedFilter, type PersistentVectorIndex, type VectorHit, type VectorPoint, type VectorSearchOptions, type VectorSnapshotInfo } from "./vector-index.js";
import { loadVectorSnapshot, saveVectorSnapshot } from "./vector-snapshot.js";
import { VectorStore } from "./vector-store.js";
import { internal } from "../../schemas/errors.js";

/**
 * The embedded default: an Orama vector field, filtered through `enum` fields (NOTES: `where` on a
 * `string` field is slow and not an exact match). Orama's vector search is an exact linear scan, so
 * results are exact and cost grows with the number of points the filter keeps (NOTES: p50 26 ms at
 * 10k, about 300 ms at 100k); HnswVectorIndex is the choice for large apps.
 *
 * Vectors live in a VectorStore, not in Orama documents: Orama sets a document's vector field to null
 * after a search that does not return vectors, so its documents cannot be saved or re-inserted from.
 * Orama copies each vector into its own Float32Array when a document is inserted; the number[] it
 * requires at insert is dropped right after, so a vector is held as float32 twice (store and Orama),
 * not additionally as a number[] of doubles.
 */
const schemaFor = (dimensions: number) =>
  ({
    embedding: `vector[${dimensions}]`,
    app: "enum",
    scope: "enum",
    kind: "enum",
    status: "enum",
    tags: "enum[]",
    paths: "enum[]",
  }) as const;

type VectorDb = Orama<ReturnType<typeof schemaFor>>;

export interface OramaVectorIndexOptions {
  dimensions: number;
  name?: string;
}

/** Orama calls return a promise only when a plugin or hook is async; this database has neither. */
function synchronously<T>(value: T | Promise<T>, what: string): T {
  if (value instanceof Promise) throw internal(`Orama ${what} went asynchronous; the vector index has no async hooks`);
  return value;
}

/** The filter as an Orama `where` clause over the enum fields (exact matches, any-of for lists). */
export function oramaWhere(filter: NormalizedFilter | undefined): Record<string, WhereCondition<never>> | undefined {
  if (!filter) return undefined;
  const where: Record<string, unknown> = {};
  if (filter.app !== undefined) where.app = { eq: filter.app };
  if (filter.scope) where.scope = { in: filter.scope };
  if (filter.kind) where.kind = { in: filter.kind };
  if (filter.status) where.status = { in: filter.status };
  if (filter.tags) where.tags = { containsAny: filter.tags };
  if (filter.paths) where.paths = { containsAny: filter.paths };
  return where as Record<string, WhereCondition<never>>;
}

export class OramaVectorIndex implements PersistentVectorIndex {
  readonly name: string;
  readonly dimensions: number;
  private readonly store: VectorStore;
  private db: VectorDb;
  private closed = false;

  constructor(options: OramaVectorIndexOptions) {
    this.dimensions = checkDimensions(options.dimensions);
    this.name = options.name ?? "orama";
    this.store = new VectorStore(this.dimensions);
    this.db = this.createDb();
  }

  async upsert(points: readonly VectorPoint[]): Promise<void> {
    this.ensureOpen();
    for (const point of preparePoints(points, this.dimensions)) {
      if (this.store.has(point.id)) synchronously(remove(this.db, point.id), "remove");
      this.store.put(point);
      this.insertDocument(point);
    }
  }

  async delete(ids: readonly string[]): Promise<void> {
    this.ensureOpen();
    for (const id of prepareIds(ids)) {
      if (this.store.remove(id) === undefined) continue;
      synchronously(remove(this.db, id), "remove");
    }
  }

  async search(vector: Float32Array, options: VectorSearchOptions): Promise<VectorHit[]> {
    this.ensureOpen();
    const { vector: query, k, filter } = prepareSearch(vector, options, this.dimensions);
    const where = oramaWhere(filter);
    // Orama breaks score ties by its internal ids, not by memory id.
    return searchCutAtK(k, async (limit) => {
      const result = synchronously(
        search(this.db, {
          mode: "vector",
          vector: { value: query, property: "embedding" },
          // Orama drops hits below 0.8 by default; a vector index returns the k nearest, however far.
          similarity: -2,
          limit,
          includeVectors: false,
          ...(where ? { where } : {}),
        }),
        "search",
      );
      // Rescored from the store: Orama divides by magnitudes it computes itself, which differs from
      // the unit-vector dot product in the last bit, and the embedded indexes must agree exactly.
      return result.hits.map((hit) => ({ id: hit.id, score: dot(query, this.store.vectorOf(hit.id)!) })).sort(compareHits);
    });
  }

  async count(): Promise<number> {
    this.ensureOpen();
    return this.store.size;
  }

  async clear(): Promise<void> {
    this.ensureOpen();
    this.store.clear();
    this.db = this.createDb();
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  async save(dir: string, label: string): Promise<VectorSnapshotInfo> {
    this.ensureOpen();
    return saveVectorSnapshot(dir, this.store, { label, writer: this.name });
  }

  /** Orama's own save/load is not used: its vectors are re-inserted from the store (NOTES: Orama's persistence fails at 100k with vectors). */
  async load(dir: string): Promise<VectorSnapshotInfo> {
    this.ensureOpen();
    const snapshot = await loadVectorSnapshot(dir, this.dimensions);
    this.store.restore(snapshot.vectors, snapshot.slotCount, snapshot.entries);
    this.db = this.createDb();
    for (const slot of this.store.slots()) {
      this.insertDocument({ id: this.store.idAt(slot)!, vector: this.store.vectorAt(slot), payload: this.store.payloadAt(slot)! });
    }
    return snapshot.info;
  }

  private createDb(): VectorDb {
    return create({ schema: schemaFor(this.dimensions), sort: { enabled: false } });
  }

  private insertDocument(point: VectorPoint): void {
    const document = {
      id: point.id,
      embedding: Array.from(point.vector) as number[] | null,
      app: point.payload.app,
      scope: point.payload.scope,
      kind: point.payload.kind,
      status: point.payload.status,
      tags: point.payload.tags,
      paths: point.payload.paths,
    };
    synchronously(insert(this.db, document as never), "insert");
    // Orama keeps this object as the stored document and has copied the vector into its index.
    document.embedding = null;
  }

  private ensureOpen(): void {
    if (this.closed) throw internal(`vector index ${this.name} is closed`);
  }
}
