import { countTokens } from "gpt-tokenizer/encoding/o200k_base";

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
