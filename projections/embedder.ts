import { internal } from "../schemas/errors.js";

/**
 * Turns texts into vectors for semantic search. Every implementation keeps the same contract, so the
 * search projection, the cache and the tests never care which model is behind it:
 *
 * - one vector per input, in input order; a row is never dropped;
 * - every vector has `dimensions` entries and unit L2 length, so cosine similarity is a plain dot product;
 * - an empty or whitespace-only text gets the ZERO vector (all entries 0, length 0, see `isZeroVector`).
 *   It is never sent to the model: USE-lite throws on '' and silently drops '' rows inside a batch, and
 *   OpenAI refuses empty inputs with a 400. A zero vector scores 0 against every query, which is the honest
 *   answer for "no text", and keeps a projection rebuild from stopping on one blank memory. Vector indexes
 *   that normalise (cosine spaces in hnswlib) should skip zero vectors rather than divide by zero.
 */
export interface Embedder {
  /** Names the model and its version; cached vectors are keyed by it, so a different model never reuses them. */
  readonly modelId: string;
  readonly dimensions: number;
  embed(texts: readonly string[]): Promise<Float32Array[]>;
  /**
   * Optional: `embed`'s vectors handed over one at a time as they come (`each(index, vector)`, positions
   * in any order), for a caller that writes them as it goes instead of holding them all. CachedEmbedder
   * has it: a rebuild's warm read of 80k vectors is one scan of the cache, written as it is read.
   */
  embedEach?(texts: readonly string[], each: (index: number, vector: Float32Array) => void | Promise<void>): Promise<void>;
}

/** Blank texts carry no meaning to embed; see the Embedder contract for what they get instead. */
export const isBlankText = (text: string): boolean => text.trim().length === 0;

export const isZeroVector = (vector: ArrayLike<number>): boolean => {
  for (let i = 0; i < vector.length; i++) if (vector[i] !== 0) return false;
  return true;
};

/** Scales a vector to unit length. Refuses non-finite entries and the zero vector: both mean a broken model. */
export function l2Normalize(vector: ArrayLike<number>): Float32Array {
  let sumOfSquares = 0;
  for (let i = 0; i < vector.length; i++) {
    const x = vector[i]!;
    if (!Number.isFinite(x)) throw internal(`embedding has a non-finite entry at ${i}`, { index: i });
    sumOfSquares += x * x;
  }
  if (sumOfSquares === 0) throw internal("the model returned a zero vector for a non-blank text");
  const scale = 1 / Math.sqrt(sumOfSquares);
  const out = new Float32Array(vector.length);
  for (let i = 0; i < vector.length; i++) out[i] = vector[i]! * scale;
  return out;
}

/** Dot product; for the unit vectors an Embedder returns this is the cosine similarity. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw internal(`cannot compare vectors of ${a.length} and ${b.length} dimensions`);
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i]! * b[i]!;
  return sum;
}
