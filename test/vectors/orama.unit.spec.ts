import { OramaVectorIndex } from "../../projections/vectors/orama-vectors.js";
import { defineVectorIndexConformance } from "./conformance.js";

defineVectorIndexConformance("orama", {
  persistent: true,
  create: async (dimensions) => new OramaVectorIndex({ dimensions }),
});
