export * from "./vector-index.js";
export { VectorStore } from "./vector-store.js";
export { OramaVectorIndex, type OramaVectorIndexOptions } from "./orama-vectors.js";
export { HnswVectorIndex, type HnswVectorIndexOptions } from "./hnsw-vectors.js";
export { QdrantVectorIndex, pointIdOf, qdrantFilter, type QdrantVectorIndexOptions } from "./qdrant-vectors.js";
