// A deterministic stand-in for an embedding model that a worker thread can load (plain JavaScript: a
// worker cannot load TypeScript), for test/projections/search-worker.int.spec.ts: the same bag of
// hashed words (word-hash.mjs) as test/search/support.ts's WordHashEmbedder. Each thread that imports
// this module counts the texts it embedded there (`embeddedTexts`). With `failWith`, every embed throws
// a MemledgerError of that code, as a model server that is down would.
import { MemledgerError } from "../../dist/schemas/errors.js";
import { wordHashVector } from "./word-hash.mjs";

let embedded = 0;

/** Texts embedded by this thread's instances of the module so far. */
export const embeddedTexts = () => embedded;

export function wordHashEmbedder(options = {}) {
  const dimensions = options.dimensions ?? 32;
  return {
    modelId: `word-hash-module@${dimensions}`,
    dimensions,
    async embed(texts) {
      if (options.failWith) throw new MemledgerError(options.failWith, `word-hash embedder refuses (${options.failWith})`);
      embedded += texts.length;
      return texts.map((text) => wordHashVector(text, dimensions));
    },
  };
}
