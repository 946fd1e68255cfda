import { z } from "zod";

/** Which channels answer a search: full text, dense vectors, or both fused by reciprocal rank. */
export const RetrievalMode = z.enum(["bm25", "vector", "hybrid"]);
export type RetrievalMode = z.infer<typeof RetrievalMode>;
export const RETRIEVAL_MODES: readonly RetrievalMode[] = RetrievalMode.options;
