import { createHash } from "node:crypto";
import { invalid } from "../../schemas/errors.js";
import { HnswVectorIndex } from "./hnsw-vectors.js";
import { OramaVectorIndex } from "./orama-vectors.js";
import { QdrantVectorIndex } from "./qdrant-vectors.js";
import type { VectorIndex } from "./vector-index.js";

/**
 * Which VectorIndex the search projection keeps its vectors in:
 *   - `hnsw` (default): embedded HNSW graph (hnswlib-node, a dependency that `npm ci` builds with
 *     node-gyp); exact, like Orama, whenever the query (or its filter) leaves at most 4,096 candidate
 *     points, approximate above; its graph saved with the snapshot so a restart does not rebuild it.
 *     The default because the exact scan does not scale: bench/search.ts measured Orama's vector
 *     search at p99 87 ms at 10k memories, and NOTES about 300 ms p50 at 100k;
 *   - `orama`: embedded, exact linear scan; fine up to a few thousand memories per app;
 *   - `qdrant`: a Qdrant server (the default when QDRANT_URL is set), one collection per app,
 *     generation and embedding model.
 */
export const VECTOR_BACKENDS = ["orama", "hnsw", "qdrant"] as const;
export type VectorBackendKind = (typeof VECTOR_BACKENDS)[number];

export interface VectorBackendConfig {
  kind: VectorBackendKind;
  qdrant?: { url: string; apiKey?: string | undefined };
}

/** What MEMLEDGER_VECTORS defaults to without QDRANT_URL. */
export const DEFAULT_EMBEDDED_BACKEND: VectorBackendKind = "hnsw";

export const VECTORS_ENV = { kind: "MEMLEDGER_VECTORS", qdrantUrl: "QDRANT_URL", qdrantApiKey: "QDRANT_API_KEY" } as const;

/** The backend the environment asks for; null when `MEMLEDGER_VECTORS=off` (BM25 only). */
export function vectorBackendFromEnv(env: NodeJS.ProcessEnv = process.env): VectorBackendConfig | null {
  const read = (name: string): string | undefined => env[name]?.trim() || undefined;
  const qdrantUrl = read(VECTORS_ENV.qdrantUrl);
  const kind = read(VECTORS_ENV.kind) ?? (qdrantUrl ? "qdrant" : DEFAULT_EMBEDDED_BACKEND);
  if (kind === "off") return null;
  if (!(VECTOR_BACKENDS as readonly string[]).includes(kind)) {
    throw invalid(`${VECTORS_ENV.kind} must be one of ${VECTOR_BACKENDS.join(", ")} or off, got ${JSON.stringify(kind)}`, { kind });
  }
  if (kind === "qdrant") {
    if (!qdrantUrl) throw invalid(`${VECTORS_ENV.kind}=qdrant needs ${VECTORS_ENV.qdrantUrl} (e.g. http://127.0.0.1:6333)`);
    return { kind, qdrant: { url: qdrantUrl, apiKey: read(VECTORS_ENV.qdrantApiKey) } };
  }
  return { kind: kind as VectorBackendKind };
}

/** Where one vector index belongs: one per app, projection generation and embedding model. */
export interface VectorIndexPlace {
  prefix: string;
  app: string;
  generation: string;
  modelId: string;
  dimensions: number;
}

/**
 * The Qdrant collection of a place. The model is part of the name (hashed: model ids hold characters a
 * collection name may not), so switching models starts an empty collection instead of mixing vectors.
 */
export function qdrantCollectionOf(place: Omit<VectorIndexPlace, "dimensions">): string {
  const model = createHash("sha256").update(place.modelId).digest("hex").slice(0, 8);
  return `${place.prefix}-${place.app}-${place.generation}-${model}`;
}

/** Opens (Qdrant: creates when missing) the index of a place. Embedded indexes start empty. */
export async function openVectorIndex(config: VectorBackendConfig, place: VectorIndexPlace): Promise<VectorIndex> {
  switch (config.kind) {
    case "orama":
      return new OramaVectorIndex({ dimensions: place.dimensions });
    case "hnsw":
      return new HnswVectorIndex({ dimensions: place.dimensions });
    case "qdrant": {
      if (!config.qdrant) throw invalid("the qdrant vector backend needs a URL");
      return QdrantVectorIndex.open({
        url: config.qdrant.url,
        ...(config.qdrant.apiKey ? { apiKey: config.qdrant.apiKey } : {}),
        collection: qdrantCollectionOf(place),
        dimensions: place.dimensions,
      });
    }
  }
}

/** Frees what a replaced generation's index holds outside this process (its Qdrant collection). */
export async function dropVectorIndex(config: VectorBackendConfig, place: VectorIndexPlace): Promise<void> {
  if (config.kind !== "qdrant") return;
  const index = (await openVectorIndex(config, place)) as QdrantVectorIndex;
  await index.dropCollection();
}
