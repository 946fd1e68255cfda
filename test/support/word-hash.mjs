// The bag of hashed words behind the tests' deterministic stand-ins for an embedding model (test/search/
// support.ts's WordHashEmbedder, and word-hash-embedder.mjs, which a worker thread can load): identifiers
// split into their parts, words of three letters and more hashed into `dimensions` buckets, normalized.
export function wordHashVector(text, dimensions) {
  const vector = new Float32Array(dimensions);
  const words = text
    .replace(/([a-z0-9])([A-Z])/g, "$1 $2")
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((word) => word.length > 2);
  for (const word of words) {
    let hash = 2166136261;
    for (let i = 0; i < word.length; i++) hash = Math.imul(hash ^ word.charCodeAt(i), 16777619);
    vector[(hash >>> 0) % dimensions] += 1;
  }
  const norm = Math.hypot(...vector);
  return norm === 0 ? vector : vector.map((x) => x / norm);
}
