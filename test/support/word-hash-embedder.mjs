// A deterministic stand-in for an embedding model that a worker thread can load (plain JavaScript: a
// worker cannot load TypeScript), for test/projections/search-worker.int.spec.ts: the same bag of hashed
// words as test/search/support.ts's WordHashEmbedder. Each thread that imports this module counts the
// texts it embedded there (`embeddedTexts`). With `failWith`, every embed throws a MemledgerError of
// that code, as a model server that is down would.
import { MemledgerError } from "../../dist/schemas/errors.js";

let embedded = 0;

/** Texts embedded by this thread's instances of the module so far. */
export const embeddedTexts = () => embedded;

export function wordHashEmbedder(options = {}) {
  const dimensions = options.dimensions ?? 32;
  const vectorOf = (text) => {
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
  };
  return {
    modelId: `word-hash-module@${dimensions}`,
    dimensions,
    async embed(texts) {
      if (options.failWith) throw new MemledgerError(options.failWith, `word-hash embedder refuses (${options.failWith})`);
      embedded += texts.length;
      return texts.map(vectorOf);
    },
  };
}
