/** See word-hash.mjs. */
export function wordHashVector(text: string, dimensions: number): Float32Array;
