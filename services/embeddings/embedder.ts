import { internal, invalid } from "../../schemas/errors.js";
import { isBlankText, l2Normalize } from "../../projections/embedder.js";

// The contract and the vector arithmetic live beside the projections that use them (projections never
// import from services/); the embedders here implement it.
export type { Embedder } from "../../projections/embedder.js";
export { isBlankText, isZeroVector, l2Normalize, dot } from "../../projections/embedder.js";

export const DEFAULT_BATCH_SIZE = 32;

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
