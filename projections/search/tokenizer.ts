import type { Tokenizer } from "@orama/orama";
import { stemmer } from "stemmer";

/**
 * Tokens for text written by and for programmers.
 *
 * Orama's default English tokenizer lowercases and splits on anything that is not a Latin letter, digit,
 * `_`, `'` or `-`. That loses what people search a code memory for: `src/payments/webhook.ts` becomes
 * four common words, and `StripeWebhookHandler` one opaque token that a query for "webhook handler"
 * never reaches. It also drops every non-Latin letter (Cyrillic, Greek, CJK vanish from the index).
 *
 * Here every whitespace-separated chunk yields
 *   - the whole identifier, lowercased (`src/payments/webhook.ts`, `err_token_expired`,
 *     `stripewebhookhandler`): rare, so a query naming the identifier ranks its memory first;
 *   - each path segment whole (`webhook.ts`), so a file name finds the memory that names its full path;
 *   - the words inside (`src`, `payment`, `webhook`, `ts`; `stripe`, `webhook`, `handler`), so prose
 *     queries still reach identifiers.
 * Words of plain ASCII letters are reduced to their Porter stem (`payments` → `payment`, `expired` →
 * `expir`, `going` → `go`), so "retried webhooks" finds a note about "retrying a webhook". Whole
 * identifiers are never stemmed (`stripewebhookhandlers` stays itself, and the exact-identifier field
 * holds only whole tokens), nor are words with digits or other scripts, which Porter's English rules
 * do not fit. Measured on LoCoMo turns (`npm run eval`, recall@10 over categories 1-4, with BM25 b 0.1):
 * BM25 0.647 → 0.683, hybrid 0.678 → 0.704.
 * Queries go through the same function (Orama tokenizes the search term with the index's tokenizer),
 * so the identifier in a query produces the same whole token as in the document.
 *
 * Tokens are unique per call: Orama's BM25 counts a token's document frequency once per insert call
 * and its default tokenizer deduplicates too.
 */

/** Characters that may sit inside one identifier, path, or package name; anything else separates chunks. */
const CHUNK = /[\p{L}\p{N}\p{M}_\-./\\@$#:]+/gu;
/** Punctuation that ends a sentence or wraps an identifier rather than belonging to it. */
const EDGE_PUNCTUATION = /^[\-./\\:#@$]+|[\-./\\:#]+$/gu;
/** Separators inside an identifier: what splits it into words. */
const WORD_SEPARATOR = /[^\p{L}\p{N}\p{M}]+/u;
const PATH_SEPARATOR = /[/\\]/;
/** camelCase and PascalCase boundaries: `useAuthStore` → use Auth Store, `HTTPServer` → HTTP Server. */
const LOWER_UPPER = /(\p{Ll}|\p{N})(\p{Lu})/gu;
const UPPER_UPPER_LOWER = /(\p{Lu})(\p{Lu}\p{Ll})/gu;
const COMBINING_MARKS = /\p{M}/gu;

/** Longer whole tokens are hashes, URLs with query strings or base64: only their parts are useful. */
const MAX_WHOLE_TOKEN_LENGTH = 128;
const MAX_WORD_LENGTH = 64;

/**
 * Words so common in English prose that they carry no ranking signal and, through Orama's prefix
 * matching ("the" also matches "then", "there"), add noise. Only dropped as standalone words:
 * an identifier that contains one (`the_end`, `useAuthStore`) keeps its whole token.
 */
const STOP_WORDS = new Set(
  `a an and are as at be but by for from has have how i if in into is it its of on or so such that the their then there these
  they this to was we were what when where which while who why will with you your do does did can could should would not no
  our us my me he she him her them than too very just also about over after before`.split(/\s+/),
);

/**
 * What the tokens of a text are made of, for indexes saved to disk: a snapshot whose BM25 index was
 * built with other tokens is re-indexed from its records (snapshot.ts). 1: no stemming; 2: Porter stems.
 */
export const TOKENIZER_VERSION = 2;

const PLAIN_ASCII_WORD = /^[a-z]+$/;
/** The Porter stem of a plain ASCII word (after case folding and the stop-word check); other words as they are. */
const stem = (word: string): string => (PLAIN_ASCII_WORD.test(word) ? stemmer(word) : word);

const NON_ASCII = /[^\x00-\x7f]/;
/** Lowercase without diacritics (café → cafe); the Unicode work only for text that needs it. */
const fold = (text: string): string =>
  NON_ASCII.test(text) ? text.normalize("NFKD").replace(COMBINING_MARKS, "").toLowerCase() : text.toLowerCase();

function wordsOf(identifier: string): string[] {
  const spaced = identifier.replace(UPPER_UPPER_LOWER, "$1 $2").replace(LOWER_UPPER, "$1 $2");
  return spaced.split(/[^\p{L}\p{N}\p{M}]+/u).filter((w) => w.length > 0);
}

interface TextTokens {
  /** Everything: words and whole identifiers. */
  all: string[];
  /** Only whole identifiers: compound chunks, their path segments and camelCase runs. */
  identifiers: string[];
  /** Only the chunk-level identifiers, as written (lowercased): what a query names. */
  named: string[];
}

/** What one chunk contributes, in order: whole identifiers (with whether the chunk names them), then words. */
interface ChunkTokens {
  wholes: readonly (readonly [token: string, named: boolean])[];
  words: readonly string[];
}

const NO_TOKENS: ChunkTokens = { wholes: [], words: [] };

function chunkTokensUncached(raw: string): ChunkTokens {
  const chunk = raw.replace(EDGE_PUNCTUATION, "");
  if (chunk.length === 0) return NO_TOKENS;
  const wholes: (readonly [string, boolean])[] = [];
  const addWhole = (token: string, isNamed: boolean) => {
    if (token.length === 0 || token.length > MAX_WHOLE_TOKEN_LENGTH) return;
    wholes.push([token, isNamed]);
  };
  const words = wordsOf(chunk);
  const compound = words.length > 1;
  if (compound) {
    addWhole(fold(chunk), true);
    if (PATH_SEPARATOR.test(chunk)) {
      for (const segment of chunk.split(PATH_SEPARATOR)) {
        if (wordsOf(segment).length > 1) addWhole(fold(segment), false);
      }
    }
    // `useAuthStore` inside `src/useAuthStore.ts`: the camelCase run is itself an identifier.
    for (const part of chunk.split(WORD_SEPARATOR)) {
      if (part !== chunk && wordsOf(part).length > 1) addWhole(fold(part), false);
    }
  }
  const kept: string[] = [];
  for (const word of words) {
    const folded = fold(word);
    if (!compound && STOP_WORDS.has(folded)) continue;
    if (folded.length <= MAX_WORD_LENGTH) kept.push(stem(folded));
  }
  return { wholes, words: kept };
}

/**
 * A chunk's tokens depend on the chunk alone, and prose repeats its words: indexing spent most of its
 * tokenizer time re-deriving the same few thousand chunks (regex splits, case folding), so they are
 * remembered. Bounded: the cache is dropped when full; long chunks (hashes, URLs) are never kept.
 */
const CHUNK_CACHE_LIMIT = 50_000;
const CACHEABLE_CHUNK_LENGTH = 64;
const chunkCache = new Map<string, ChunkTokens>();

function chunkTokens(raw: string): ChunkTokens {
  if (raw.length > CACHEABLE_CHUNK_LENGTH) return chunkTokensUncached(raw);
  let tokens = chunkCache.get(raw);
  if (tokens === undefined) {
    tokens = chunkTokensUncached(raw);
    if (chunkCache.size >= CHUNK_CACHE_LIMIT) chunkCache.clear();
    chunkCache.set(raw, tokens);
  }
  return tokens;
}

function analyze(text: string): TextTokens {
  const all = new Set<string>();
  const identifiers = new Set<string>();
  const named = new Set<string>();
  for (const match of text.matchAll(CHUNK)) {
    const { wholes, words } = chunkTokens(match[0]);
    for (const [token, isNamed] of wholes) {
      all.add(token);
      identifiers.add(token);
      if (isNamed) named.add(token);
    }
    for (const word of words) all.add(word);
  }
  return { all: [...all], identifiers: [...identifiers], named: [...named] };
}

/**
 * The tokens and the whole identifiers of each text, in one pass per text. The identifiers of texts
 * joined by whitespace are the ordered union of each text's (a chunk never spans whitespace), so
 * `identifiers` equals `identifierTokens(texts.join("\n"))` without analyzing everything twice.
 */
export function tokenizeTexts(texts: readonly string[]): { tokens: string[][]; identifiers: string[] } {
  const identifiers = new Set<string>();
  const tokens = texts.map((text) => {
    const analyzed = analyze(text);
    for (const identifier of analyzed.identifiers) identifiers.add(identifier);
    return analyzed.all;
  });
  return { tokens, identifiers: [...identifiers] };
}

/** The tokens of one text; pure and deterministic (Orama re-tokenizes stored documents to remove them). */
export const tokenizeText = (text: string): string[] => analyze(text).all;

/** The same chunks as CHUNK, scanned with exec (this instance's lastIndex is reset on every call). */
const CHUNK_SCAN = new RegExp(CHUNK.source, CHUNK.flags);

/**
 * Whether any of `text`'s tokens is in `wanted`: `tokenizeText(text).some((t) => wanted.has(t))`,
 * stopping at the first chunk that has one. A search result's snippet asks this of its body's lines;
 * tokenizing each line in full (three sets per line, an iterator's match per word) was most of what a
 * BM25 query allocated at 100k memories, and so most of its garbage-collection pauses.
 */
export function mentionsAny(text: string, wanted: ReadonlySet<string>): boolean {
  CHUNK_SCAN.lastIndex = 0;
  for (let match = CHUNK_SCAN.exec(text); match !== null; match = CHUNK_SCAN.exec(text)) {
    const { wholes, words } = chunkTokens(match[0]);
    for (const [token] of wholes) if (wanted.has(token)) return true;
    for (const word of words) if (wanted.has(word)) return true;
  }
  return false;
}

/** The whole identifiers in a text, for the exact-identifier field. */
export const identifierTokens = (text: string): string[] => analyze(text).identifiers;

/** The identifiers a query names, whole: `where is ERR_TOKEN_EXPIRED handled?` names `err_token_expired`. */
export const namedIdentifiers = (query: string): string[] => analyze(query).named;

/**
 * An Orama tokenizer component. Orama passes the property being indexed (and none for a search term):
 * the properties in `wholeTokenProperties` hold space-separated identifiers already tokenized by
 * {@link identifierTokens}, and are split on spaces only, so that an exact search on them matches a
 * whole identifier and never one of its words.
 */
export interface IdentifierAwareTokenizer extends Tokenizer {
  /**
   * Runs `search` with query terms taken as one whole identifier each. Orama tokenizes a search term
   * without saying which property it searches, so the exact-identifier lookup says it here; Orama's
   * search is synchronous, so no other search can run in between.
   */
  wholeTokenQuery<T>(search: () => T): T;
}

export function identifierAwareTokenizer(wholeTokenProperties: readonly string[] = []): IdentifierAwareTokenizer {
  const whole = new Set(wholeTokenProperties);
  const splitWhole = (raw: string) => [...new Set(raw.split(" ").filter((t) => t.length > 0))];
  let queryAsWholeTokens = false;
  return {
    language: "english",
    // Orama's interface requires the cache; tokenizeText is cheap enough not to need it.
    normalizationCache: new Map(),
    tokenize: (raw: string, _language?: string, prop?: string) => {
      if (typeof raw !== "string") return [];
      if (prop !== undefined ? whole.has(prop) : queryAsWholeTokens) return splitWhole(raw);
      return tokenizeText(raw);
    },
    wholeTokenQuery<T>(search: () => T): T {
      queryAsWholeTokens = true;
      try {
        return search();
      } finally {
        queryAsWholeTokens = false;
      }
    },
  };
}
