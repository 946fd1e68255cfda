import { internal } from "../../schemas/errors.js";

/**
 * The BM25 channel's own inverted index: postings in typed arrays, top-k term at a time (topK).
 *
 * Why not Orama's index. At 100k memories Orama keeps, per document, a stored copy, a frequency
 * object per text field, and a Set entry in every word's radix node; a query builds a Map entry per
 * matching document (common words and identifier parts match ~10k documents each) and sorts them all.
 * That garbage made the p99 (bench/search.ts: BM25 p99 60-114 ms, +732 MB RSS at 100k). Here a word's
 * postings are one Uint32Array of internal document ids (ascending) plus, for list fields, one
 * Uint8Array; a document costs a few slots in per-field Uint32Arrays and a run in one shared arena; a
 * query adds into per-index buffers it reuses and allocates per matched word and per candidate, never
 * per matched document.
 *
 * Scores are Orama's (fulltext-channel.ts chose it; exact-term-index.ts made it exact-token), to the bit:
 *   - per field, `idf * (d + tf (k + 1)) / (tf + k (1 - b + b len / avgLen))` times the field's boost,
 *     idf `ln(1 + (N - df + 0.5) / (df + 0.5))` with N the indexed documents and df Orama's token
 *     occurrences (one per list element holding the word);
 *   - tf is 1 / len (every tokenizer output is unique per value); for list fields (tags, paths) Orama
 *     keeps the frequencies and the length of the LAST element only, so a word of an earlier element
 *     scores with tf 0 and the last element's length: kept, since changing it would reorder results;
 *   - avgLen is Orama's running average, updated per insert (per list element) in the same arithmetic,
 *     so it drifts exactly as Orama's does;
 *   - contributions are added field by field, query word by query word, as Orama adds them, so equal
 *     texts get bit-equal scores, and ties go to the smaller internal id (first insertion), as in Orama.
 * One deliberate difference: Orama's removal of a list field with two or more elements sets that
 * field's average length to NaN (it reads the length it has just cleared), after which every document
 * matching through that field scores NaN and vanishes from results. Here removal undoes each element's
 * update in reverse order (the same result whenever a list has at most one element).
 *
 * Deletions tombstone the postings (high bit of the id) and compact a list once half of it is dead; a
 * re-inserted memory keeps its internal id (as in Orama) and revives its tombstones in place.
 */

export interface Bm25Params {
  k: number;
  b: number;
  d: number;
}

export interface FieldSpec {
  name: string;
  /** A list of values (tags, paths): Orama indexes each element as if it were the field's value. */
  list: boolean;
}

/** A field to search and its boost (Orama's `boost`, default 1). */
export interface WeightedField {
  field: string;
  boost: number;
}

/** What a document holds per field: its tokens (one array per list element for list fields). */
export type DocumentTokens = Record<string, readonly string[] | readonly (readonly string[])[]>;

/** Per-document filter values (Orama's enum fields). */
export interface DocumentAttributes {
  app: string;
  scope: string;
  kind: string;
  status: string;
  /** Lowercased tags (a set: duplicates do not matter). */
  tagKeys: readonly string[];
}

export interface AttributeFilter {
  app?: string | undefined;
  status?: string | undefined;
  scope?: readonly string[] | undefined;
  kind?: readonly string[] | undefined;
  tagKeys?: readonly string[] | undefined;
}

export interface ScoredDoc {
  id: string;
  score: number;
}

/** What a snapshot keeps: the internal ids (which fix the order of ties) and the running averages. */
export interface SavedCompactBm25 {
  format: "memledger-compact-bm25";
  version: 1;
  /** Memory id per internal id - 1, every memory ever indexed (Orama never frees an internal id). */
  ids: string[];
  /** Per field, the running average length (path-dependent, so saved rather than recomputed). */
  averages: Record<string, number>;
  /** Number of indexed documents when saved. */
  documents: number;
}

const DEAD = 0x80000000;
const ID_MASK = 0x7fffffff;

/**
 * Orama counts occurrences in a plain object, so a token naming an Object.prototype member
 * (`constructor`) reads the inherited member, not a number, and Orama scores it with df 0. Kept so
 * that scores stay Orama's.
 */
const INHERITED_TOKEN = (token: string): boolean => token in Object.prototype;

/** One word's postings in one field. */
class Postings {
  /** Internal ids, ascending; DEAD marks a removed entry. Small arrays stay on V8's heap (no backing store). */
  ids: Uint32Array;
  /** List fields only: 1 when the word is in the document's last element (Orama's tf is then 1 / len). */
  last: Uint8Array | undefined;
  n = 0;
  dead = 0;
  /** Orama's token occurrences: + 1 per element holding the word, - 1 on removal. */
  df = 0;

  constructor(list: boolean) {
    this.ids = new Uint32Array(2);
    this.last = list ? new Uint8Array(2) : undefined;
  }

  get live(): number {
    return this.n - this.dead;
  }

  /** Position of `doc` (alive or dead), or -(insertion point) - 1. */
  private find(doc: number): number {
    let lo = 0;
    let hi = this.n - 1;
    const ids = this.ids;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const at = ids[mid]! & ID_MASK;
      if (at < doc) lo = mid + 1;
      else if (at > doc) hi = mid - 1;
      else return mid;
    }
    return -lo - 1;
  }

  private grow(): void {
    const ids = new Uint32Array(this.ids.length * 2);
    ids.set(this.ids);
    this.ids = ids;
    if (this.last) {
      const last = new Uint8Array(ids.length);
      last.set(this.last);
      this.last = last;
    }
  }

  add(doc: number, inLast: boolean): void {
    let at: number;
    if (this.n === 0 || (this.ids[this.n - 1]! & ID_MASK) < doc) {
      at = this.n;
    } else {
      const found = this.find(doc);
      if (found >= 0) {
        if (this.ids[found]! >= DEAD) {
          this.ids[found] = doc;
          this.dead -= 1;
        }
        if (this.last) this.last[found] = inLast ? 1 : 0;
        return;
      }
      at = -found - 1;
    }
    if (this.n === this.ids.length) this.grow();
    if (at < this.n) {
      this.ids.copyWithin(at + 1, at, this.n);
      this.last?.copyWithin(at + 1, at, this.n);
    }
    this.ids[at] = doc;
    if (this.last) this.last[at] = inLast ? 1 : 0;
    this.n += 1;
  }

  kill(doc: number): void {
    const found = this.find(doc);
    if (found < 0 || this.ids[found]! >= DEAD) return;
    this.ids[found] = doc | DEAD;
    this.dead += 1;
  }

  /** Drops tombstones once they are half the list (amortised O(1) per removal). */
  maybeCompact(): void {
    if (this.dead === 0 || this.dead * 2 < this.n) return;
    const { ids, last } = this;
    let w = 0;
    for (let r = 0; r < this.n; r++) {
      const id = ids[r]!;
      if (id >= DEAD) continue;
      ids[w] = id;
      if (last) last[w] = last[r]!;
      w += 1;
    }
    this.n = w;
    this.dead = 0;
    if (ids.length > 16 && w * 4 < ids.length) {
      let size = 2;
      while (size < w) size *= 2;
      this.ids = ids.slice(0, size);
      if (last) this.last = last.slice(0, size);
    }
  }
}

interface FieldIndex {
  spec: FieldSpec;
  terms: Map<string, Postings>;
  /** Orama's field length per internal id (for list fields: the last element's token count). */
  lengths: Uint32Array<ArrayBuffer>;
  /** Orama's running average field length. */
  avg: number;
}

/** Interned strings for the filter fields: one small integer per document and field. */
class Dictionary {
  private readonly codes = new Map<string, number>();
  readonly values: string[] = [];
  code(value: string): number {
    let code = this.codes.get(value);
    if (code === undefined) {
      code = this.values.length;
      this.codes.set(value, code);
      this.values.push(value);
    }
    return code;
  }
  lookup(value: string): number | undefined {
    return this.codes.get(value);
  }
}

/** A query's matched word in one field, with what scoring needs. */
interface Cursor {
  postings: Postings;
  lengths: Uint32Array<ArrayBuffer>;
  avg: number;
  idf: number;
  boost: number;
  list: boolean;
  at: number;
}

function growU32(array: Uint32Array<ArrayBuffer>, size: number): Uint32Array<ArrayBuffer> {
  if (size <= array.length) return array;
  let next = Math.max(array.length * 2, 16);
  while (next < size) next *= 2;
  const grown = new Uint32Array(next);
  grown.set(array);
  return grown;
}

/** Allows every document (no filter). */
type Allow = ((doc: number) => boolean) | undefined;

export class CompactBm25Index {
  private readonly fields: FieldIndex[];
  private readonly fieldByName = new Map<string, FieldIndex>();
  /** Every Postings ever created, by list id (a document's arena run names its lists by these). */
  private readonly lists: Postings[] = [];
  private readonly listIds = new Map<Postings, number>();
  private readonly internalOf = new Map<string, number>();
  /** Memory id per internal id; index 0 unused (Orama's internal ids start at 1). */
  private readonly idOf: string[] = [""];
  private alive = new Uint8Array(16);
  private scratch: QueryScratch = {
    counted: new Float64Array(LENGTH_TABLE),
    uncounted: new Float64Array(LENGTH_TABLE),
    sums: new Float64Array(16),
    touched: new Uint32Array(16),
    touchedSums: new Float64Array(16),
  };
  private count = 0;
  // Filter attributes, interned.
  private readonly apps = new Dictionary();
  private readonly scopes = new Dictionary();
  private readonly kinds = new Dictionary();
  private readonly statuses = new Dictionary();
  private readonly tagSets = new Dictionary();
  private readonly tagSetMembers: Set<string>[] = [];
  private appOf = new Uint32Array(16);
  private scopeOf = new Uint32Array(16);
  private kindOf = new Uint32Array(16);
  private statusOf = new Uint32Array(16);
  private tagSetOf = new Uint32Array(16);
  /**
   * What each document put in the index, for removal: per field (in field order) the element count
   * (list fields only), then per element its token count and the list ids of its tokens. One shared
   * Uint32Array; runs of removed documents are waste, reclaimed when they are half of it.
   */
  private arena = new Uint32Array(1024);
  private arenaUsed = 0;
  private arenaWaste = 0;
  private runStart = new Uint32Array(16);
  private runEnd = new Uint32Array(16);

  constructor(
    fields: readonly FieldSpec[],
    private readonly params: Bm25Params,
  ) {
    this.fields = fields.map((spec) => ({ spec, terms: new Map(), lengths: new Uint32Array(16), avg: 0 }));
    for (const field of this.fields) this.fieldByName.set(field.spec.name, field);
  }

  get size(): number {
    return this.count;
  }

  has(id: string): boolean {
    const doc = this.internalOf.get(id);
    return doc !== undefined && this.alive[doc] === 1;
  }

  private internalId(id: string): number {
    let doc = this.internalOf.get(id);
    if (doc === undefined) {
      doc = this.idOf.length;
      if (doc > ID_MASK) throw internal("BM25 index: more than 2^31 internal ids");
      this.internalOf.set(id, doc);
      this.idOf.push(id);
    }
    return doc;
  }

  private ensureDocCapacity(doc: number): void {
    if (doc < this.alive.length) return;
    let size = this.alive.length * 2;
    while (size <= doc) size *= 2;
    const alive = new Uint8Array(size);
    alive.set(this.alive);
    this.alive = alive;
    this.appOf = growU32(this.appOf, alive.length);
    this.scopeOf = growU32(this.scopeOf, alive.length);
    this.kindOf = growU32(this.kindOf, alive.length);
    this.statusOf = growU32(this.statusOf, alive.length);
    this.tagSetOf = growU32(this.tagSetOf, alive.length);
    this.runStart = growU32(this.runStart, alive.length);
    this.runEnd = growU32(this.runEnd, alive.length);
    for (const field of this.fields) field.lengths = growU32(field.lengths, alive.length);
  }

  private push(value: number): void {
    if (this.arenaUsed === this.arena.length) this.arena = growU32(this.arena, this.arenaUsed + 1);
    this.arena[this.arenaUsed++] = value;
  }

  private listId(postings: Postings): number {
    let id = this.listIds.get(postings);
    if (id === undefined) {
      id = this.lists.length;
      this.lists.push(postings);
      this.listIds.set(postings, id);
    }
    return id;
  }

  /** Indexes a document that is not indexed (callers remove it first), as Orama's insert does. */
  insert(id: string, tokens: DocumentTokens, attributes: DocumentAttributes): void {
    const doc = this.internalId(id);
    if (doc < this.alive.length && this.alive[doc] === 1) throw internal(`BM25 index: ${id} is already indexed`);
    this.ensureDocCapacity(doc);
    this.count += 1;
    const n = this.count;
    this.alive[doc] = 1;
    this.appOf[doc] = this.apps.code(attributes.app);
    this.scopeOf[doc] = this.scopes.code(attributes.scope);
    this.kindOf[doc] = this.kinds.code(attributes.kind);
    this.statusOf[doc] = this.statuses.code(attributes.status);
    this.tagSetOf[doc] = this.tagSetCode(attributes.tagKeys);
    this.runStart[doc] = this.arenaUsed;
    for (const field of this.fields) {
      const value = tokens[field.spec.name] ?? [];
      const elements = (field.spec.list ? value : [value]) as readonly (readonly string[])[];
      if (field.spec.list) this.push(elements.length);
      elements.forEach((element, e) => {
        const inLast = e === elements.length - 1;
        const len = element.length;
        field.avg = (field.avg * (n - 1) + len) / n;
        field.lengths[doc] = len;
        this.push(len);
        for (const token of element) {
          let postings = field.terms.get(token);
          if (!postings) {
            postings = new Postings(field.spec.list);
            field.terms.set(token, postings);
          }
          postings.df += 1;
          postings.add(doc, inLast);
          this.push(this.listId(postings));
        }
      });
    }
    this.runEnd[doc] = this.arenaUsed;
  }

  /** Removes a document; false when it is not indexed. */
  remove(id: string): boolean {
    const doc = this.internalOf.get(id);
    if (doc === undefined || this.alive[doc] !== 1) return false;
    const n = this.count;
    let at = this.runStart[doc]!;
    const end = this.runEnd[doc]!;
    for (const field of this.fields) {
      const touched: Postings[] = [];
      const elements = field.spec.list ? this.arena[at++]! : 1;
      const lens: number[] = [];
      for (let e = 0; e < elements; e++) {
        const len = this.arena[at++]!;
        lens.push(len);
        for (let t = 0; t < len; t++) {
          const postings = this.lists[this.arena[at++]!]!;
          postings.df -= 1;
          postings.kill(doc);
          touched.push(postings);
        }
      }
      // Each element's average update undone, last first (see the class comment on Orama's NaN).
      for (let e = lens.length - 1; e >= 0; e--) field.avg = n > 1 ? (field.avg * n - lens[e]!) / (n - 1) : 0;
      field.lengths[doc] = 0;
      for (const postings of touched) postings.maybeCompact();
    }
    if (at !== end) throw internal(`BM25 index: the arena run of ${id} is damaged`);
    this.alive[doc] = 0;
    this.count -= 1;
    this.arenaWaste += end - this.runStart[doc]!;
    if (this.arenaWaste > 4096 && this.arenaWaste * 2 > this.arenaUsed) this.compactArena();
    return true;
  }

  private compactArena(): void {
    const next = new Uint32Array(Math.max(1024, this.arenaUsed - this.arenaWaste));
    let used = 0;
    for (let doc = 1; doc < this.idOf.length; doc++) {
      if (this.alive[doc] !== 1) continue;
      const start = this.runStart[doc]!;
      const end = this.runEnd[doc]!;
      next.set(this.arena.subarray(start, end), used);
      this.runStart[doc] = used;
      used += end - start;
      this.runEnd[doc] = used;
    }
    this.arena = next;
    this.arenaUsed = used;
    this.arenaWaste = 0;
  }

  private tagSetCode(tagKeys: readonly string[]): number {
    const key = [...new Set(tagKeys)].sort().join("\u0000");
    const code = this.tagSets.code(key);
    if (this.tagSetMembers.length <= code) this.tagSetMembers.push(new Set(tagKeys));
    return code;
  }

  /** The filter as a per-document test on interned codes, or null when nothing can match. */
  private allowOf(filter: AttributeFilter): Allow | null {
    const tests: ((doc: number) => boolean)[] = [];
    if (filter.app !== undefined) {
      const code = this.apps.lookup(filter.app);
      if (code === undefined) return null;
      const appOf = this.appOf;
      tests.push((doc) => appOf[doc] === code);
    }
    if (filter.status !== undefined) {
      const code = this.statuses.lookup(filter.status);
      if (code === undefined) return null;
      const statusOf = this.statusOf;
      tests.push((doc) => statusOf[doc] === code);
    }
    const oneOf = (values: readonly string[], dictionary: Dictionary, codes: Uint32Array): boolean => {
      const allowed = new Uint8Array(dictionary.values.length);
      let any = false;
      for (const value of values) {
        const code = dictionary.lookup(value);
        if (code !== undefined) {
          allowed[code] = 1;
          any = true;
        }
      }
      if (!any) return false;
      tests.push((doc) => allowed[codes[doc]!] === 1);
      return true;
    };
    if (filter.scope !== undefined && !oneOf(filter.scope, this.scopes, this.scopeOf)) return null;
    if (filter.kind !== undefined && !oneOf(filter.kind, this.kinds, this.kindOf)) return null;
    if (filter.tagKeys !== undefined && filter.tagKeys.length > 0) {
      const wanted = filter.tagKeys;
      // Per tag set, not per document: decided once per distinct set of tags.
      const verdict = new Int8Array(this.tagSetMembers.length);
      const tagSetOf = this.tagSetOf;
      const members = this.tagSetMembers;
      tests.push((doc) => {
        const set = tagSetOf[doc]!;
        let v = verdict[set]!;
        if (v === 0) {
          const have = members[set]!;
          v = wanted.every((tag) => have.has(tag)) ? 1 : -1;
          verdict[set] = v;
        }
        return v === 1;
      });
    }
    if (tests.length === 0) return undefined;
    if (tests.length === 1) return tests[0];
    return (doc) => {
      for (const test of tests) if (!test(doc)) return false;
      return true;
    };
  }

  /**
   * The best `limit` documents for `terms` over `fields` (Orama's full-text search with threshold 1:
   * any word may match), by score descending then internal id ascending, each with Orama's score.
   */
  search(terms: readonly string[], fields: readonly WeightedField[], filter: AttributeFilter, limit: number): ScoredDoc[] {
    if (limit <= 0 || terms.length === 0 || this.count === 0) return [];
    const allow = this.allowOf(filter);
    if (allow === null) return [];
    const N = this.count;
    const cursors: Cursor[] = [];
    for (const { field: name, boost } of fields) {
      const field = this.fieldByName.get(name);
      if (!field) throw internal(`BM25 index: no field ${name}`);
      for (const term of terms) {
        const postings = field.terms.get(term);
        if (!postings || postings.live === 0) continue;
        const df = INHERITED_TOKEN(term) ? 0 : postings.df;
        const idf = Math.log(1 + (N - df + 0.5) / (df + 0.5));
        const avg = field.avg;
        cursors.push({ postings, lengths: field.lengths, avg, idf, boost, list: field.spec.list, at: 0 });
      }
    }
    if (cursors.length === 0) return [];
    if (this.scratch.sums.length < this.idOf.length) {
      const size = Math.max(this.idOf.length, this.scratch.sums.length * 2);
      this.scratch = { ...this.scratch, sums: new Float64Array(size), touched: new Uint32Array(size), touchedSums: new Float64Array(size) };
    }
    return topK(cursors, this.params, allow, limit, this.scratch).map(([doc, score]) => ({ id: this.idOf[doc]!, score }));
  }

  /** The memory ids of indexed documents, in internal id order. */
  *documentIds(): Generator<string> {
    for (let doc = 1; doc < this.idOf.length; doc++) if (this.alive[doc] === 1) yield this.idOf[doc]!;
  }

  save(): SavedCompactBm25 {
    const averages: Record<string, number> = {};
    for (const field of this.fields) averages[field.spec.name] = field.avg;
    return { format: "memledger-compact-bm25", version: 1, ids: this.idOf.slice(1), averages, documents: this.count };
  }

  /**
   * Re-creates internal ids and running averages from `saved`; the caller then inserts the saved
   * documents (in any order) and calls {@link finishLoad}.
   */
  beginLoad(saved: SavedCompactBm25): void {
    if (this.idOf.length > 1) throw internal("BM25 index: load into a used index");
    for (const id of saved.ids) this.internalId(id);
  }

  /** Internal id of a memory in a loaded index (for inserting in id order), or undefined. */
  internalIdOf(id: string): number | undefined {
    return this.internalOf.get(id);
  }

  finishLoad(saved: SavedCompactBm25): void {
    if (this.count !== saved.documents) throw internal("search snapshot: the saved index and the memory records disagree");
    for (const field of this.fields) {
      const avg = saved.averages[field.spec.name];
      if (typeof avg !== "number" || !Number.isFinite(avg)) throw internal(`search snapshot: no average length for ${field.spec.name}`);
      field.avg = avg;
    }
  }
}

/** Orama's per-field BM25 for one posting. */
function contribution(c: Cursor, doc: number, at: number, k: number, b: number, d: number): number {
  return fieldScore(c, c.lengths[doc]!, !c.list || c.postings.last![at] === 1, k, b, d);
}

/** Orama's per-field BM25 of a word in a field of `length` tokens: tf is 1 / length when `counted`, else 0 (see the header). */
function fieldScore(c: Cursor, length: number, counted: boolean, k: number, b: number, d: number): number {
  const tf = counted ? 1 / length : 0;
  const bm25 = (c.idf * (d + tf * (k + 1))) / (tf + k * (1 - b + (b * length) / c.avg));
  return bm25 * c.boost;
}

/** Advances to the first live entry at or after `doc` (galloping, then binary search). */
function seek(c: Cursor, doc: number): void {
  const ids = c.postings.ids;
  const n = c.postings.n;
  let at = c.at;
  if (at < n && (ids[at]! & ID_MASK) < doc) {
    let step = 1;
    let hi = at + 1;
    while (hi < n && (ids[hi]! & ID_MASK) < doc) {
      at = hi;
      step *= 2;
      hi = at + step;
    }
    if (hi > n) hi = n;
    let lo = at + 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((ids[mid]! & ID_MASK) < doc) lo = mid + 1;
      else hi = mid;
    }
    at = lo;
  }
  while (at < n && ids[at]! >= DEAD) at++;
  c.at = at;
}

/** The current document of a cursor, or Infinity when exhausted. */
const current = (c: Cursor): number => (c.at < c.postings.n ? c.postings.ids[c.at]! : Number.POSITIVE_INFINITY);

/** Slack on a sum of contributions added in another order than the exact score's (their difference is below 1e-13 of it). */
const SUM_SLACK = 1 + 1e-9;

/** Field lengths below this read a list's contribution from a table (topK); longer ones compute it. */
const LENGTH_TABLE = 256;
/** Lists shorter than this compute each contribution: filling the table would cost more. */
const TABLE_FROM_POSTINGS = 2 * LENGTH_TABLE;

/** Per-index buffers a query reuses (queries are synchronous): see topK. */
export interface QueryScratch {
  /** One list's contribution by field length, when the word counts (tf = 1 / length) and when it does not. */
  counted: Float64Array;
  uncounted: Float64Array;
  /** Running sum per internal id; all zeros between queries. */
  sums: Float64Array;
  /** The documents a query touched, and then their sums. */
  touched: Uint32Array;
  touchedSums: Float64Array;
}

/**
 * The best `limit` documents, exactly.
 *
 * 1. Every list adds its contributions into `scratch.sums`, one list after the other (term at a time):
 *    each document's score, summed in another order than Orama's.
 * 2. T is the `limit`-th largest sum among the allowed documents. Those `limit` documents score at
 *    least T / SUM_SLACK exactly, so a document can only enter if its sum reaches T / SUM_SLACK².
 * 3. Those few candidates are scored again in Orama's summation order (field, then query word), bit for
 *    bit the score Orama gives, in id order (so every cursor only moves forward), and the best `limit`
 *    by (score, then smaller id) are kept.
 *
 * Why this shape, measured on long questions at 100k memories: walking the lists document at a time
 * with MaxScore (the smallest current document of 15 to 20 essential lists, then probing the others for
 * it) visited 40k to 70k documents to score about 900, because the threshold rose only as the walk went.
 * Adding up every list costs a few nanoseconds a posting (63k postings a query on average), and only
 * about `limit` documents are then looked up.
 */
function topK(cursors: Cursor[], { k, b, d }: Bm25Params, allow: Allow, limit: number, scratch: QueryScratch): [number, number][] {
  const { counted, uncounted, sums, touched, touchedSums } = scratch;
  // 1. Every list, term at a time. Every contribution is positive (idf > 0), so a touched document's sum is not 0.
  // A long list reads its contributions from a table by field length (the same numbers, computed once
  // per length rather than once per posting: two divisions were most of this loop).
  let count = 0;
  for (const c of cursors) {
    const { ids, n, last } = c.postings;
    const lengths = c.lengths;
    const tabled = n >= TABLE_FROM_POSTINGS;
    if (tabled) {
      for (let length = 0; length < LENGTH_TABLE; length++) {
        counted[length] = fieldScore(c, length, true, k, b, d);
        if (c.list) uncounted[length] = fieldScore(c, length, false, k, b, d);
      }
    }
    for (let at = 0; at < n; at++) {
      const doc = ids[at]!;
      if (doc >= DEAD) continue;
      const length = lengths[doc]!;
      const part =
        tabled && length < LENGTH_TABLE ? (!c.list || last![at] === 1 ? counted[length]! : uncounted[length]!) : contribution(c, doc, at, k, b, d);
      const sum = sums[doc]!;
      if (sum === 0) touched[count++] = doc;
      sums[doc] = sum + part;
    }
  }
  // 2. The allowed documents' sums (leaving `sums` zero), and the limit-th largest in a min-heap.
  let kept = 0;
  for (let i = 0; i < count; i++) {
    const doc = touched[i]!;
    const sum = sums[doc]!;
    sums[doc] = 0;
    if (allow !== undefined && !allow(doc)) continue;
    touched[kept] = doc;
    touchedSums[kept] = sum;
    kept++;
  }
  if (kept === 0) return [];
  const floor = kthLargest(touchedSums, kept, Math.min(limit, kept)) / (SUM_SLACK * SUM_SLACK);
  // Candidates as positions in `touched`, in id order.
  const candidates: number[] = [];
  for (let i = 0; i < kept; i++) if (touchedSums[i]! >= floor) candidates.push(i);
  candidates.sort((x, y) => touched[x]! - touched[y]!);
  // 3. Exact scores, in Orama's order, into a min-heap of `limit` on (score, then larger id) whose root
  // is the worst kept. Many candidates tie when few words match (an identifier query's list): once the
  // heap is full, a candidate whose sum cannot reach the root's score is not scored again.
  for (const c of cursors) {
    c.at = 0;
    seek(c, 0);
  }
  const size = Math.min(limit, candidates.length);
  const heapDocs = new Uint32Array(size);
  const heapScores = new Float64Array(size);
  let held = 0;
  const worse = (i: number, j: number): boolean =>
    heapScores[i]! < heapScores[j]! || (heapScores[i] === heapScores[j] && heapDocs[i]! > heapDocs[j]!);
  const swap = (i: number, j: number) => {
    const score = heapScores[i]!;
    heapScores[i] = heapScores[j]!;
    heapScores[j] = score;
    const doc = heapDocs[i]!;
    heapDocs[i] = heapDocs[j]!;
    heapDocs[j] = doc;
  };
  for (const i of candidates) {
    const doc = touched[i]!;
    // Candidates come in id order, so one that only ties the root comes after it and loses the tie.
    if (held === size && touchedSums[i]! * SUM_SLACK <= heapScores[0]!) continue;
    let score = 0;
    for (const c of cursors) {
      seek(c, doc);
      if (current(c) === doc) score += contribution(c, doc, c.at, k, b, d);
    }
    if (held < size) {
      heapScores[held] = score;
      heapDocs[held] = doc;
      for (let at = held++; at > 0; ) {
        const parent = (at - 1) >> 1;
        if (!worse(at, parent)) break;
        swap(at, parent);
        at = parent;
      }
    } else if (score > heapScores[0]!) {
      heapScores[0] = score;
      heapDocs[0] = doc;
      for (let at = 0; ; ) {
        const l = 2 * at + 1;
        const r = l + 1;
        let w = at;
        if (l < held && worse(l, w)) w = l;
        if (r < held && worse(r, w)) w = r;
        if (w === at) break;
        swap(at, w);
        at = w;
      }
    }
  }
  const out: [number, number][] = [];
  for (let i = 0; i < held; i++) out.push([heapDocs[i]!, heapScores[i]!]);
  return out.sort((x, y) => (y[1] === x[1] ? x[0] - y[0] : y[1] - x[1]));
}

/** The `rank`-th largest of values[0 .. n) (1 = the largest), by a min-heap of `rank` values. */
function kthLargest(values: Float64Array, n: number, rank: number): number {
  const heap = new Float64Array(rank);
  let size = 0;
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    if (size < rank) {
      let at = size++;
      while (at > 0) {
        const parent = (at - 1) >> 1;
        if (heap[parent]! <= v) break;
        heap[at] = heap[parent]!;
        at = parent;
      }
      heap[at] = v;
    } else if (v > heap[0]!) {
      let at = 0;
      for (;;) {
        const l = 2 * at + 1;
        if (l >= size) break;
        const r = l + 1;
        const child = r < size && heap[r]! < heap[l]! ? r : l;
        if (heap[child]! >= v) break;
        heap[at] = heap[child]!;
        at = child;
      }
      heap[at] = v;
    }
  }
  return heap[0]!;
}
