import { internal, invalid } from "../../schemas/errors.js";

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
}

export const DEFAULT_BATCH_SIZE = 32;

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

export function checkBatchSize(batchSize: number): number {
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw invalid(`embedding batch size must be a positive integer, got ${batchSize}`, { batchSize });
  }
  return batchSize;
}

export function chunk<T>(items: readonly T[], size: number): T[][] {
  checkBatchSize(size);
  const chunks: T[][] = [];
  for (let i = 0; i < items.length; i += size) chunks.push(items.slice(i, i + size));
  return chunks;
}

/** What one backend call returns for a batch of non-blank texts: raw rows, in the batch's order. */
export type EmbedBatch = (texts: string[]) => Promise<ArrayLike<number>[]>;

export interface EmbedInBatchesOptions {
  batchSize: number;
  /** The expected width; `undefined` when the backend has not told us yet (learned from the first row). */
  dimensions: number | undefined;
  /** Asked only when every text is blank and the width is still unknown, to size the zero vectors. */
  resolveDimensions: () => Promise<number>;
  /** Names the backend in error messages. */
  modelId: string;
}

/**
 * The one place the Embedder contract is enforced, shared by every backend: blank texts are set aside
 * and get zero vectors, the rest go to the backend in batches of `batchSize`, every returned row is
 * counted, width-checked and normalised, and the result is reassembled in input order.
 */
export async function embedInBatches(
  texts: readonly string[],
  embedBatch: EmbedBatch,
  options: EmbedInBatchesOptions,
): Promise<Float32Array[]> {
  const results: (Float32Array | undefined)[] = new Array(texts.length);
  const pending: number[] = [];
  texts.forEach((text, index) => {
    if (typeof text !== "string") throw invalid(`text ${index} is not a string`, { index });
    if (!isBlankText(text)) pending.push(index);
  });

  let dimensions = options.dimensions;
  for (const batch of chunk(pending, options.batchSize)) {
    const rows = await embedBatch(batch.map((index) => texts[index]!));
    if (rows.length !== batch.length) {
      throw internal(`${options.modelId} returned ${rows.length} vectors for ${batch.length} texts`, {
        modelId: options.modelId,
        expected: batch.length,
        received: rows.length,
      });
    }
    rows.forEach((row, i) => {
      dimensions ??= row.length;
      if (row.length !== dimensions) {
        throw internal(`${options.modelId} returned a ${row.length}-dimensional vector, expected ${dimensions}`, {
          modelId: options.modelId,
          expected: dimensions,
          received: row.length,
        });
      }
      results[batch[i]!] = l2Normalize(row);
    });
  }

  if (pending.length < texts.length) {
    const width = dimensions ?? (await options.resolveDimensions());
    for (let i = 0; i < texts.length; i++) results[i] ??= new Float32Array(width);
  }
  return results as Float32Array[];
}
