import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { mentionsAny, tokenizeText } from "../../projections/search/tokenizer.js";

// Pieces a memory body is made of: prose (with stop words and words the stemmer changes), identifiers in
// every spelling the tokenizer splits, paths, non-ASCII letters, and punctuation at chunk edges.
const PIECES = [
  "the", "webhook", "retries", "Retrying", "happy", "happiness", "payments", "ERR_TOKEN_EXPIRED", "StripeWebhookHandler",
  "useAuthStore", "src/payments/webhook.ts", "lib\\ledger\\client.ts", "E_CONN_RESET", "naïve", "Ünïcödé", "café", "..",
  "-flag", "#42", "@alice", "$HOME", "a.b.c", "x", "2024-05-01", "did", "What", "(parenthesised)", "end.", "—",
];
const SEPARATORS = [" ", "\n", "  ", "\t", ", ", "; ", "\n\n"];

const text = fc
  .array(fc.tuple(fc.constantFrom(...PIECES), fc.constantFrom(...SEPARATORS)), { maxLength: 12 })
  .map((parts) => parts.map(([piece, sep]) => piece + sep).join(""));

describe("mentionsAny: whether a text has any of the wanted tokens, as tokenizeText says", () => {
  it("agrees with tokenizeText(text).some(wanted.has) on generated texts and token sets", () => {
    fc.assert(
      fc.property(text, fc.array(text, { maxLength: 3 }), fc.array(fc.constantFrom(...PIECES), { maxLength: 3 }), (body, others, raw) => {
        // Wanted tokens as a query's: another text's tokens, and raw pieces that are not tokens at all.
        const wanted = new Set([...others.flatMap((other) => tokenizeText(other)), ...raw]);
        expect(mentionsAny(body, wanted)).toBe(tokenizeText(body).some((token) => wanted.has(token)));
      }),
      { numRuns: 500 },
    );
  });

  it("finds stemmed words, whole identifiers and their parts, and nothing in stop words or an empty set", () => {
    expect(mentionsAny("We keep retrying the payment", new Set(tokenizeText("retries")))).toBe(true);
    expect(mentionsAny("see StripeWebhookHandler.ts", new Set(["stripewebhookhandler"]))).toBe(true);
    expect(mentionsAny("see StripeWebhookHandler.ts", new Set(["webhook"]))).toBe(true);
    expect(mentionsAny("what did the", new Set(["the", "what", "did"]))).toBe(false);
    expect(mentionsAny("anything at all", new Set())).toBe(false);
    expect(mentionsAny("", new Set(["x"]))).toBe(false);
  });

  it("starts every call at the text's beginning, after a call that stopped early", () => {
    const wanted = new Set(tokenizeText("webhook"));
    expect(mentionsAny("webhook then a long tail of other words", wanted)).toBe(true);
    expect(mentionsAny("webhook", wanted)).toBe(true);
    expect(mentionsAny("no match here", wanted)).toBe(false);
    expect(mentionsAny("webhook", wanted)).toBe(true);
  });
});
