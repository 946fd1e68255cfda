import { createRequire } from "node:module";

/**
 * The BPE tables take about a second to load: more than the rest of `memledger up`'s start. They are
 * loaded on the first count (a hydrate), synchronously, since counting is synchronous.
 */
let loadedCountTokens: ((text: string) => number) | undefined;
function countTokens(text: string): number {
  loadedCountTokens ??= (createRequire(import.meta.url)("gpt-tokenizer/encoding/o200k_base") as { countTokens: (text: string) => number }).countTokens;
  return loadedCountTokens(text);
}

/**
 * How a context pack measures text. The budget is a promise about what the agent's model will be
 * charged, so it is counted with a real BPE tokenizer, never estimated from characters.
 */
export interface TokenCounter {
  /** Which encoding counts (shown in the pack's metadata so a reader knows what the numbers mean). */
  readonly encoding: string;
  count(text: string): number;
  /** The longest prefix of `text` that counts at most `maxTokens` tokens (never cuts a character in two). */
  truncate(text: string, maxTokens: number): string;
}

/**
 * o200k_base (GPT-4o and later), bundled with gpt-tokenizer: no download at run time. Other model
 * families tokenize differently, but within a few percent on English and code, and the budget is a
 * ceiling the caller chooses with that slack in mind.
 */
export const o200kTokens: TokenCounter = {
  encoding: "o200k_base",
  count: (text) => (text === "" ? 0 : countTokens(text)),
  truncate(text, maxTokens) {
    if (maxTokens <= 0) return "";
    if (countTokens(text) <= maxTokens) return text;
    // Binary search over character prefixes, counting each. Not encode-then-decode: gpt-tokenizer's
    // decode keeps the bytes of a character cut in two for its next call, so the same prefix decoded
    // twice could differ, and packs must be byte-for-byte deterministic.
    let fits = 0;
    let tooLong = text.length;
    while (tooLong - fits > 1) {
      const mid = (fits + tooLong) >>> 1;
      if (countTokens(withoutLoneSurrogate(text.slice(0, mid))) <= maxTokens) fits = mid;
      else tooLong = mid;
    }
    return withoutLoneSurrogate(text.slice(0, fits));
  },
};

/** A prefix cut between the halves of a surrogate pair ends in half a character: drop it. */
function withoutLoneSurrogate(text: string): string {
  const last = text.charCodeAt(text.length - 1);
  return last >= 0xd800 && last <= 0xdbff ? text.slice(0, -1) : text;
}

/**
 * A counter that remembers what it counted: packs of one app repeat most of their text from request
 * to request (MEMORY.md lines, change lines, memory heads and bodies, the "omitted" notes), and BPE is
 * the bulk of a pack's CPU. Keyed by the text itself (V8 hashes a string by content once), so the
 * numbers are exactly the inner counter's. Bounded by total characters kept, oldest out.
 */
export function memoizedTokens(inner: TokenCounter, options: { maxChars?: number; maxTextLength?: number } = {}): TokenCounter {
  const maxChars = options.maxChars ?? 8_000_000;
  // Longer texts (a whole pack) are rarely seen twice; counting them again costs less than keeping them.
  const maxTextLength = options.maxTextLength ?? 16_384;
  const counts = new Map<string, number>();
  const truncated = new Map<string, string>();
  let chars = 0;
  const remember = <V>(cache: Map<string, V>, key: string, value: V, size: number): V => {
    cache.set(key, value);
    chars += size;
    while (chars > maxChars) {
      const oldest = counts.size >= truncated.size ? counts : truncated;
      const first = (oldest as Map<string, unknown>).keys().next();
      if (first.done) break;
      const value = (oldest as Map<string, unknown>).get(first.value);
      (oldest as Map<string, unknown>).delete(first.value);
      chars -= first.value.length + (typeof value === "string" ? value.length : 0);
    }
    return value;
  };
  // First in, first out: cheaper than reordering on every hit, and a hot text evicted is counted once more.
  const lookup = <V>(cache: Map<string, V>, key: string): V | undefined => cache.get(key);
  return {
    encoding: inner.encoding,
    count(text) {
      if (text.length > maxTextLength) return inner.count(text);
      return lookup(counts, text) ?? remember(counts, text, inner.count(text), text.length);
    },
    truncate(text, maxTokens) {
      if (text.length > maxTextLength) return inner.truncate(text, maxTokens);
      const key = `${maxTokens}\u0000${text}`;
      const hit = lookup(truncated, key);
      if (hit !== undefined) return hit;
      const cut = inner.truncate(text, maxTokens);
      return remember(truncated, key, cut, key.length + cut.length);
    },
  };
}
