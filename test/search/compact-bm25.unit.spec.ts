import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { FullTextChannel } from "../../projections/search/fulltext-channel.js";
import type { IndexedMemory } from "../../projections/search/memory-records.js";
import type { RetrievalFilter } from "../../projections/search/retrieval-filter.js";
import type { MemoryKind } from "../../schemas/primitives.js";
import { OramaFullTextChannel } from "./orama-reference.js";

/**
 * The compact BM25 index (projections/search/compact-bm25.ts) against the Orama channel it replaced
 * (orama-reference.ts, the old code unchanged): random corpora, edits and queries must give the same
 * hits, in the same order, with the same scores (1e-9) and the same identifier counts.
 *
 * The vocabulary is small on purpose: many documents share words and many scores tie, so the tie order
 * (first insertion) and the choice of candidates at the k-th score are exercised, not just the easy cases.
 */

const WORDS = ["webhook", "retry", "retries", "payment", "payments", "ledger", "invoice", "cache", "deploy", "token", "expired", "queue", "worker", "the", "and", "stripe", "handler", "go", "going", "constructor"];
const IDENTIFIERS = ["StripeWebhookHandler", "ERR_TOKEN_EXPIRED", "src/payments/webhook.ts", "useAuthStore", "retry_policy", "lib/cache.go", "PaymentWorker"];
const SCOPES = ["app", "team:payments", "team:infra"];
const KINDS: MemoryKind[] = ["note", "fact", "decision"];
const TAGS = ["payments", "DB", "ops", "webhooks"];
const PATHS = ["src/payments/webhook.ts", "src/payments", "lib/cache.go", "docs/retries.md"];

/**
 * Orama counts a word's documents in a plain object, so `constructor` reads Object.prototype's member:
 * it scores with document frequency 0 (kept by the compact index), and after a removal that count turns
 * NaN and every memory with the word vanishes (not kept: see the last tests). So `constructor` is in the
 * insert-only corpora only.
 */
const INHERITED = "constructor";
const word = fc.constantFrom(...WORDS, ...IDENTIFIERS);
const wordWithoutInherited = fc.constantFrom(...WORDS.filter((w) => w !== INHERITED), ...IDENTIFIERS);
const text = (max: number, removals = false) =>
  fc.array(removals ? wordWithoutInherited : word, { minLength: 0, maxLength: max }).map((words) => words.join(" "));

interface Spec {
  title: string;
  body: string;
  scope: string;
  kind: MemoryKind;
  tags: string[];
  paths: string[];
}

/**
 * Lists of at most `maxList` elements. Orama's removal of a longer list corrupts its averages (see the
 * last tests), so corpora with longer lists are insert-only.
 */
const spec = (maxList: number, removals = false): fc.Arbitrary<Spec> =>
  fc.record({
    title: text(5, removals),
    body: text(14, removals),
    scope: fc.constantFrom(...SCOPES),
    kind: fc.constantFrom(...KINDS),
    tags: fc.array(fc.constantFrom(...TAGS, "the", "webhook retry"), { maxLength: maxList }),
    paths: fc.array(fc.constantFrom(...PATHS), { maxLength: maxList }),
  });

const memoryOf = (id: string, s: Spec, version: number): IndexedMemory => ({
  memoryId: id,
  version,
  app: "app1",
  status: "active",
  importance: 3,
  ...s,
});

type Op = { type: "upsert"; id: number; spec: Spec } | { type: "remove"; id: number };

const ops = (maxList: number, removals: boolean): fc.Arbitrary<Op[]> =>
  fc.array(
    removals
      ? fc.oneof(
          { weight: 3, arbitrary: fc.record({ type: fc.constant("upsert" as const), id: fc.nat(24), spec: spec(maxList, true) }) },
          { weight: 1, arbitrary: fc.record({ type: fc.constant("remove" as const), id: fc.nat(24) }) },
        )
      : fc.record({ type: fc.constant("upsert" as const), id: fc.constant(0), spec: spec(maxList) }),
    { minLength: 1, maxLength: 70 },
  ).map((list) => (removals ? list : list.map((op, i) => ({ ...op, id: i }))));

const filter: fc.Arbitrary<RetrievalFilter> = fc.record(
  {
    scope: fc.oneof(fc.constantFrom(...SCOPES), fc.subarray(SCOPES)),
    kind: fc.oneof(fc.constantFrom(...KINDS), fc.subarray(KINDS)),
    tags: fc.subarray(["payments", "db", "OPS"], { maxLength: 2 }),
    app: fc.constantFrom("app1", "app2"),
    status: fc.constant("active" as const),
  },
  { requiredKeys: [] },
);

const query = fc.array(word, { minLength: 1, maxLength: 5 }).map((words) => words.join(" "));
const queries = fc.array(fc.record({ text: query, filter, limit: fc.integer({ min: 1, max: 40 }) }), { minLength: 1, maxLength: 8 });

function apply(channels: { upsert(m: IndexedMemory): void; remove(id: string): void }[], list: Op[]): void {
  list.forEach((op, i) => {
    for (const channel of channels) {
      if (op.type === "upsert") channel.upsert(memoryOf(`m${op.id}`, op.spec, i + 1));
      else channel.remove(`m${op.id}`);
    }
  });
}

type Hits = ReturnType<FullTextChannel["search"]>;

function expectSame(actual: Hits, expected: Hits, what: string): void {
  expect(actual.map((hit) => hit.memoryId), what).toEqual(expected.map((hit) => hit.memoryId));
  expect(actual.map((hit) => hit.identifiersMatched), what).toEqual(expected.map((hit) => hit.identifiersMatched));
  actual.forEach((hit, i) => {
    const want = expected[i]!.score;
    expect(Math.abs(hit.score - want), `${what}: score of ${hit.memoryId}`).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(want)));
  });
}

function checkAgainstOrama(list: Op[], qs: { text: string; filter: RetrievalFilter; limit: number }[]): void {
  const compact = new FullTextChannel();
  const orama = new OramaFullTextChannel();
  apply([compact, orama], list);
  expect(compact.size).toBe(orama.size);
  for (const q of qs) {
    const what = `${JSON.stringify(q)}`;
    expectSame(compact.search(q.text, q.filter, q.limit), orama.search(q.text, q.filter, q.limit), what);
  }
  // A snapshot round trip ranks the same as the index it was taken from.
  const restored = FullTextChannel.importIndex(JSON.parse(JSON.stringify(compact.exportIndex())), activeOf(list));
  for (const q of qs) expectSame(restored.search(q.text, q.filter, q.limit), compact.search(q.text, q.filter, q.limit), `restored ${JSON.stringify(q)}`);
}

/** The memories a sequence of operations leaves indexed, with the views last upserted. */
function activeOf(list: Op[]): IndexedMemory[] {
  const active = new Map<string, IndexedMemory>();
  list.forEach((op, i) => {
    if (op.type === "upsert") active.set(`m${op.id}`, memoryOf(`m${op.id}`, op.spec, i + 1));
    else active.delete(`m${op.id}`);
  });
  return [...active.values()];
}

describe("compact BM25 index: the same hits, order and scores as the Orama channel it replaced", () => {
  test("random corpora with lists of several tags and paths", () => {
    fc.assert(fc.property(ops(3, false), queries, checkAgainstOrama), { numRuns: 100 });
  });

  test("random corpora with replacements, removals and re-insertions (lists of at most one element)", () => {
    fc.assert(fc.property(ops(1, true), queries, checkAgainstOrama), { numRuns: 100 });
  });

  test("a large corpus with common words: the candidates at the k-th score, the top k stays Orama's", () => {
    fc.assert(
      fc.property(fc.array(spec(1, true), { minLength: 200, maxLength: 300 }), queries, fc.array(fc.nat(199), { maxLength: 40 }), (specs, qs, removed) => {
        const list: Op[] = specs.map((s, id) => ({ type: "upsert", id, spec: s }));
        for (const id of removed) list.push({ type: "remove", id });
        checkAgainstOrama(list, qs);
      }),
      { numRuns: 6 },
    );
  });

  test("lists long enough to be read from the length table, and bodies longer than the table, rank as in Orama", () => {
    // Five words, so that each is in most of 1,100+ memories: lists of 512 postings or more read their
    // contributions from a table by field length (compact-bm25.ts, topK), up to 256 tokens; a tenth of
    // the bodies are longer than that. Tags repeat too, in lists of up to three (insert-only: see above),
    // so a word is in the last element or an earlier one.
    const few = fc.constantFrom("webhook", "retry", "payments", "ledger", "StripeWebhookHandler");
    const words = (min: number, max: number) => fc.array(few, { minLength: min, maxLength: max }).map((w) => w.join(" "));
    const long: fc.Arbitrary<Spec> = fc.record({
      title: words(0, 4),
      body: fc.oneof({ weight: 9, arbitrary: words(1, 12) }, { weight: 1, arbitrary: words(257, 300) }),
      scope: fc.constantFrom(...SCOPES),
      kind: fc.constantFrom(...KINDS),
      tags: fc.array(fc.constantFrom("payments", "the"), { minLength: 1, maxLength: 3 }),
      paths: fc.array(fc.constantFrom(...PATHS), { maxLength: 2 }),
    });
    const longQueries = fc.array(fc.record({ text: words(1, 4), filter, limit: fc.integer({ min: 1, max: 60 }) }), { minLength: 1, maxLength: 6 });
    fc.assert(
      fc.property(fc.array(long, { minLength: 1100, maxLength: 1200 }), longQueries, (specs, qs) => {
        expect(specs.filter((s) => s.body.split(" ").includes("retry")).length).toBeGreaterThanOrEqual(512);
        expect(specs.filter((s) => s.tags.includes("payments")).length).toBeGreaterThanOrEqual(512);
        expect(specs.some((s) => s.body.split(" ").length > 256)).toBe(true);
        checkAgainstOrama(specs.map((spec, id) => ({ type: "upsert", id, spec })), qs);
      }),
      // No shrinking: shrinking corpora of 1,100 memories takes minutes; the seed printed replays a failure.
      { numRuns: 3, endOnFailure: true },
    );
  });

  test("the best memory of a long list is found when only its contribution tells it apart (length table, last tag)", () => {
    // A long list's documents are picked by sums read from a table; the one memory that should win, by
    // a single contribution, is among 600 that score almost as well. A wrong table entry would leave
    // it out of the candidates.
    const filler = (i: number, tags: string[], words: number): IndexedMemory =>
      // `words` distinct tokens (a field's length counts distinct tokens), the first one "retry".
      memoryOf(`f${i}`, { title: "", body: Array.from({ length: words }, (_, w) => (w === 0 ? "retry" : `w${w}`)).join(" "), scope: "app", kind: "note", tags, paths: [] }, 1);
    const cases: { what: string; winner: IndexedMemory; others: (i: number) => IndexedMemory; query: string }[] = [
      {
        what: "the tag in the last element (tf 1 / length) against earlier ones (tf 0)",
        winner: memoryOf("winner", { title: "", body: "ledger", scope: "app", kind: "note", tags: ["ops", "payments"], paths: [] }, 1),
        others: (i) => filler(i, ["payments", "ops"], 3),
        query: "payments",
      },
      {
        what: "a body of 255 tokens (from the table) against bodies of 257 (computed)",
        winner: filler(-1, [], 255),
        others: (i) => filler(i, [], 257),
        query: "retry",
      },
      {
        what: "a body of 257 tokens (computed) against bodies of 258",
        winner: filler(-1, [], 257),
        others: (i) => filler(i, [], 258),
        query: "retry",
      },
    ];
    for (const { what, winner, others, query } of cases) {
      const compact = new FullTextChannel();
      const orama = new OramaFullTextChannel();
      for (const channel of [compact, orama]) {
        for (let i = 0; i < 300; i++) channel.upsert(others(i));
        channel.upsert(winner);
        for (let i = 300; i < 600; i++) channel.upsert(others(i));
      }
      const [best] = orama.search(query, {}, 1);
      expect(best?.memoryId, what).toBe(winner.memoryId);
      expectSame(compact.search(query, {}, 1), orama.search(query, {}, 1), what);
      expectSame(compact.search(query, {}, 5), orama.search(query, {}, 5), what);
    }
  });

  test("removing a memory with two tags keeps the others findable by tag (Orama's averages went NaN here)", () => {
    const compact = new FullTextChannel();
    const orama = new OramaFullTextChannel();
    const m = (id: string, tags: string[]) => memoryOf(id, { title: `Note ${id}`, body: "Body text.", scope: "app", kind: "note", tags, paths: [] }, 1);
    for (const channel of [compact, orama]) {
      channel.upsert(m("m1", ["alpha", "beta"]));
      channel.upsert(m("m2", ["gamma"]));
      channel.upsert(m("m3", ["gamma", "delta"]));
    }
    expectSame(compact.search("gamma", {}, 10), orama.search("gamma", {}, 10), "before the removal");
    for (const channel of [compact, orama]) channel.remove("m1");
    expect(orama.search("gamma", {}, 10)).toEqual([]);
    expect(compact.search("gamma", {}, 10).map((hit) => hit.memoryId)).toEqual(["m2", "m3"]);
    // The averages are those of an index that never held m1.
    const fresh = new FullTextChannel();
    fresh.upsert(m("m2", ["gamma"]));
    fresh.upsert(m("m3", ["gamma", "delta"]));
    expectSame(compact.search("gamma", {}, 10), fresh.search("gamma", {}, 10), "after the removal");
  });

  test("removing a memory that says `constructor` keeps the others findable by it (Orama's count went NaN)", () => {
    const compact = new FullTextChannel();
    const orama = new OramaFullTextChannel();
    const m = (id: string, body: string) => memoryOf(id, { title: "", body, scope: "app", kind: "note", tags: [], paths: [] }, 1);
    for (const channel of [compact, orama]) {
      channel.upsert(m("m1", "constructor"));
      channel.upsert(m("m2", "constructor webhook"));
    }
    expectSame(compact.search("constructor", {}, 10), orama.search("constructor", {}, 10), "before the removal");
    for (const channel of [compact, orama]) channel.remove("m1");
    expect(orama.search("constructor", {}, 10)).toEqual([]);
    expect(compact.search("constructor", {}, 10).map((hit) => hit.memoryId)).toEqual(["m2"]);
  });

  test("a saved index that does not name the memories it held is refused", () => {
    const channel = new FullTextChannel();
    const m = memoryOf("m1", { title: "Payment retries", body: "Retried with backoff.", scope: "app", kind: "note", tags: [], paths: [] }, 1);
    channel.upsert(m);
    const saved = channel.exportIndex();
    expect(() => FullTextChannel.importIndex({ ...saved, ids: [] }, [m])).toThrow(/missing from the saved index/);
    expect(() => FullTextChannel.importIndex(saved, [])).toThrow(/disagree/);
    expect(() => FullTextChannel.importIndex({ ...saved, averages: {} }, [m])).toThrow(/average length/);
    expect(FullTextChannel.importIndex(saved, [m]).search("retrying payments", {}, 5).map((hit) => hit.memoryId)).toEqual(["m1"]);
  });
});
