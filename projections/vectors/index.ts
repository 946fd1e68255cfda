export * from "./vector-index.js";
export { VectorStore } from "./vector-store.js";
export { OramaVectorIndex, type OramaVectorIndexOptions } from "./orama-vectors.js";
export { HnswVectorIndex, type HnswVectorIndexOptions } from "./hnsw-vectors.js";
export { QdrantVectorIndex, pointIdOf, qdrantFilter, type QdrantVectorIndexOptions } from "./qdrant-vectors.js";
export { VECTOR_BACKENDS, VECTORS_ENV, vectorBackendFromEnv, openVectorIndex, dropVectorIndex, qdrantCollectionOf } from "./backend.js";
export type { VectorBackendKind, VectorBackendConfig, VectorIndexPlace } from "./backend.js";
