import { QdrantClient, type Schemas } from "@qdrant/js-client-rest";
import { v5 as uuidv5 } from "uuid";
import { invalid, isMemledgerError, internal, unavailable } from "../../schemas/errors.js";
import { checkDimensions, prepareIds, preparePoints, prepareSearch, searchCutAtK, type NormalizedFilter, type VectorHit, type VectorIndex, type VectorPoint, type VectorSearchOptions } from "./vector-index.js";

/**
 * The vector index on a Qdrant server (HNSW built in, persistence and replication are Qdrant's).
 *
 * - Qdrant point ids must be unsigned integers or UUIDs, and memory ids are neither, so a point's id is
 *   the UUID v5 of its memory id (deterministic: the same memory always lands on the same point, and
 *   an upsert replaces it); the memory id itself travels in the payload as `memoryId`.
 * - The collection is created when missing (cosine distance, size = dimensions) with a payload index
 *   on every filtered field; an existing collection of another size or distance is refused.
 * - Writes wait for Qdrant to apply them (`wait: true`), so a search right after sees them, as with
 *   the embedded indexes.
 * - Qdrant normalizes vectors of a cosine collection and returns the cosine similarity as the score.
 */

/** Fixed namespace for memory-id → point-id UUIDs. Changing it orphans every stored point. */
export const MEMORY_POINT_NAMESPACE = "6f1f3c1e-5d8a-4c63-9a57-3f0f8e2b4d71";

export const pointIdOf = (memoryId: string): string => uuidv5(memoryId, MEMORY_POINT_NAMESPACE);

/** Payload fields with a keyword index (exact match), and the integer one. */
const KEYWORD_FIELDS = ["memoryId", "app", "scope", "kind", "status", "tags", "paths", "modelId"] as const;
const INTEGER_FIELDS = ["version"] as const;

/** Points per upsert request: keeps a request of 512-d vectors to about 1.5 MB of JSON. */
const UPSERT_BATCH = 256;

/** The filter as Qdrant conditions: every field must hold; `match.any` keeps a point whose value (or any of its list values) is listed. */
export function qdrantFilter(filter: NormalizedFilter | undefined): Schemas["Filter"] | undefined {
  if (!filter) return undefined;
  const must: Schemas["FieldCondition"][] = [];
  if (filter.app !== undefined) must.push({ key: "app", match: { value: filter.app } });
  for (const field of ["scope", "kind", "status", "tags", "paths"] as const) {
    const values = filter[field];
    if (values) must.push({ key: field, match: { any: values } });
  }
  return must.length > 0 ? { must } : undefined;
}

export interface QdrantVectorIndexOptions {
  /** e.g. http://127.0.0.1:6333 */
  url: string;
  apiKey?: string;
  /** Letters, digits, '_' and '-'; one collection per app and embedding model is the intended use. */
  collection: string;
  dimensions: number;
  name?: string;
  /** Search exactly (full scan on the server) instead of through Qdrant's HNSW graph. */
  exact?: boolean;
  /** Milliseconds per request. */
  timeout?: number;
}

const COLLECTION_NAME = /^[A-Za-z0-9_-]{1,255}$/;

/** Qdrant's errors as the ledger's: unreachable is `unavailable` (retry), anything else `internal`. */
function asLedgerError(error: unknown, what: string): Error {
  if (isMemledgerError(error)) return error;
  const message = error instanceof Error ? error.message : String(error);
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause.message : undefined;
  const unreachable =
    /fetch failed|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|timeout|aborted/i.test(`${message} ${cause ?? ""}`) ||
    (error instanceof Error && /Timeout|ResourceExhausted/.test(error.constructor.name));
  return unreachable ? unavailable(`Qdrant ${what}: ${message}`, { cause }) : internal(`Qdrant ${what}: ${message}`);
}

export class QdrantVectorIndex implements VectorIndex {
  readonly name: string;
  readonly dimensions: number;
  readonly collection: string;
  private readonly exact: boolean;
  private closed = false;

  private constructor(
    private readonly client: QdrantClient,
    options: QdrantVectorIndexOptions,
  ) {
    this.dimensions = options.dimensions;
    this.collection = options.collection;
    this.name = options.name ?? `qdrant:${options.collection}`;
    this.exact = options.exact ?? false;
  }

  /** Connects and makes sure the collection and its payload indexes exist. */
  static async open(options: QdrantVectorIndexOptions): Promise<QdrantVectorIndex> {
    checkDimensions(options.dimensions);
    if (!COLLECTION_NAME.test(options.collection)) throw invalid("Qdrant collection: letters, digits, '_' and '-' only", { collection: options.collection });
    const client = new QdrantClient({
      url: options.url,
      ...(options.apiKey ? { apiKey: options.apiKey } : {}),
      ...(options.timeout ? { timeout: options.timeout } : {}),
      // The version check runs a request in the background at construction and only logs; the
      // collection calls below fail loudly anyway when the server is unreachable or incompatible.
      checkCompatibility: false,
    });
    const index = new QdrantVectorIndex(client, options);
    await index.ensureCollection();
    return index;
  }

  async upsert(points: readonly VectorPoint[]): Promise<void> {
    this.ensureOpen();
    const prepared = preparePoints(points, this.dimensions);
    for (let start = 0; start < prepared.length; start += UPSERT_BATCH) {
      const batch = prepared.slice(start, start + UPSERT_BATCH).map((point) => ({
        id: pointIdOf(point.id),
        vector: Array.from(point.vector),
        payload: { ...point.payload, memoryId: point.id },
      }));
      await this.call("upsert", () => this.client.upsert(this.collection, { wait: true, points: batch }));
    }
  }

  async delete(ids: readonly string[]): Promise<void> {
    this.ensureOpen();
    const prepared = prepareIds(ids);
    if (prepared.length === 0) return;
    await this.call("delete", () => this.client.delete(this.collection, { wait: true, points: prepared.map(pointIdOf) }));
  }

  async search(vector: Float32Array, options: VectorSearchOptions): Promise<VectorHit[]> {
    this.ensureOpen();
    const { vector: query, k, filter } = prepareSearch(vector, options, this.dimensions);
    const where = qdrantFilter(filter);
    const queryVector = Array.from(query);
    // Qdrant orders equal scores its own way; searchCutAtK settles ties at the cut by memory id.
    return searchCutAtK(k, async (limit) => {
      const response = await this.call("query", () =>
        this.client.query(this.collection, {
          query: queryVector,
          limit,
          with_payload: ["memoryId"],
          ...(where ? { filter: where } : {}),
          ...(this.exact ? { params: { exact: true } } : {}),
        }),
      );
      return response.points.map((point) => {
        const memoryId = point.payload?.memoryId;
        if (typeof memoryId !== "string") throw internal(`Qdrant point ${String(point.id)} has no memoryId in its payload`);
        return { id: memoryId, score: point.score };
      });
    });
  }

  async count(): Promise<number> {
    this.ensureOpen();
    const result = await this.call("count", () => this.client.count(this.collection, { exact: true }));
    return result.count;
  }

  /** Drops and recreates the collection: faster than deleting every point, and leaves no tombstones. */
  async clear(): Promise<void> {
    this.ensureOpen();
    await this.call("delete collection", () => this.client.deleteCollection(this.collection));
    await this.ensureCollection();
  }

  /** The REST client holds no connection that needs closing; later calls are refused. */
  async close(): Promise<void> {
    this.closed = true;
  }

  /** Removes the collection on the server (tests, and an app that is gone). */
  async dropCollection(): Promise<void> {
    await this.call("delete collection", () => this.client.deleteCollection(this.collection));
  }

  private async ensureCollection(): Promise<void> {
    const { exists } = await this.call("collection exists", () => this.client.collectionExists(this.collection));
    if (!exists) {
      try {
        await this.client.createCollection(this.collection, { vectors: { size: this.dimensions, distance: "Cosine" } });
      } catch (error) {
        // Another process may have created it between the check and the create: that is fine if it
        // now exists; the shape is checked below either way.
        const again = await this.call("collection exists", () => this.client.collectionExists(this.collection));
        if (!again.exists) throw asLedgerError(error, "create collection");
      }
    }
    const info = await this.call("get collection", () => this.client.getCollection(this.collection));
    const vectors = info.config.params.vectors as Schemas["VectorParams"] | Record<string, Schemas["VectorParams"]> | undefined;
    const params = vectors && "size" in vectors ? (vectors as Schemas["VectorParams"]) : undefined;
    if (!params || params.size !== this.dimensions || params.distance !== "Cosine") {
      throw invalid(`Qdrant collection ${this.collection} exists with other vectors than ${this.dimensions}-d cosine`, {
        collection: this.collection,
        vectors: vectors as unknown as Record<string, unknown>,
      });
    }
    // Creating an index that exists is accepted by Qdrant, so this is safe on every open.
    for (const field of KEYWORD_FIELDS) {
      await this.call("create payload index", () => this.client.createPayloadIndex(this.collection, { wait: true, field_name: field, field_schema: "keyword" }));
    }
    for (const field of INTEGER_FIELDS) {
      await this.call("create payload index", () => this.client.createPayloadIndex(this.collection, { wait: true, field_name: field, field_schema: "integer" }));
    }
  }

  private async call<T>(what: string, request: () => Promise<T>): Promise<T> {
    try {
      return await request();
    } catch (error) {
      throw asLedgerError(error, what);
    }
  }

  private ensureOpen(): void {
    if (this.closed) throw internal(`vector index ${this.name} is closed`);
  }
}
