import { HnswVectorIndex } from "../../projections/vectors/hnsw-vectors.js";
import { defineVectorIndexConformance } from "./conformance.js";

// Small indexes are scanned exactly by default; the second run forces every search through the graph.
defineVectorIndexConformance("hnsw", {
  persistent: true,
  create: async (dimensions) => new HnswVectorIndex({ dimensions }),
});

defineVectorIndexConformance("hnsw, graph search only", {
  persistent: true,
  create: async (dimensions) => new HnswVectorIndex({ dimensions, exactScanLimit: 0, initialCapacity: 4 }),
});
