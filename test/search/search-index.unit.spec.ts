import { describe, expect, test } from "vitest";
import { SearchIndex, searchMemories, type VectorChanges, type VectorSink, type VectorWriteStats } from "../../projections/search/index.js";
import { EventLog } from "./events.js";

const ids = (index: SearchIndex, query: string, options: Parameters<typeof searchMemories>[2] = { k: 10 }) =>
  searchMemories(index, query, options).map((hit) => hit.memoryId);

const build = (log: EventLog): SearchIndex => {
  const index = new SearchIndex(log.app, "test");
  index.apply(log.events);
  return index;
};

describe("search index over the memory lifecycle", () => {
  test("a proposal is not searchable until approved; then its active version is", () => {
    const log = new EventLog();
    log.propose("m1", { title: "Retry policy for flaky uploads", body: "Uploads retry three times with jitter." });
    const index = build(log);
    expect(ids(index, "jitter")).toEqual([]);
    expect(index.recordCount).toBe(1);

    log.approve("m1", 1);
    index.apply(log.after(index.appliedSeq));
    const [hit] = searchMemories(index, "jitter", { k: 5 });
    expect(hit).toMatchObject({ memoryId: "m1", version: 1, title: "Retry policy for flaky uploads", scope: "app", kind: "note" });
    expect(hit?.snippet).toContain("jitter");
  });

  test("an approved revision replaces the old text; a pending one does not", () => {
    const log = new EventLog();
    log.write("m1", { title: "Cache settings", body: "The cache uses memcached with a 60s TTL." });
    const v2 = log.propose("m1", { title: "Cache settings", body: "The cache uses redis with a 300s TTL." });
    const index = build(log);
    expect(ids(index, "memcached")).toEqual(["m1"]);
    expect(ids(index, "redis")).toEqual([]);

    log.approve("m1", v2);
    index.apply(log.after(index.appliedSeq));
    expect(ids(index, "memcached")).toEqual([]);
    expect(ids(index, "redis")).toEqual(["m1"]);
    expect(searchMemories(index, "redis", { k: 1 })[0]?.version).toBe(2);
    expect(index.indexedCount).toBe(1);
  });

  test("a rollback brings back the earlier version's text", () => {
    const log = new EventLog();
    log.write("m1", { title: "Deploy window", body: "Deploys happen on tuesday mornings." });
    log.write("m1", { title: "Deploy window", body: "Deploys happen on thursday evenings." });
    log.rollback("m1", 2, 1);
    const index = build(log);
    expect(ids(index, "tuesday")).toEqual(["m1"]);
    expect(ids(index, "thursday")).toEqual([]);
    expect(searchMemories(index, "tuesday", { k: 1 })[0]?.version).toBe(1);
  });

  test("supersede removes a memory; a rejected version is never indexed", () => {
    const log = new EventLog();
    log.write("old", { title: "Auth uses sessions", body: "Login creates a server-side session." });
    log.write("new", { title: "Auth uses tokens", body: "Login issues a bearer token." });
    log.supersede("old", "new");
    const rejected = log.propose("new", { title: "Auth uses magic links", body: "Login sends a passwordless email." });
    log.reject("new", rejected);
    log.propose("never", { title: "Passwordless experiment", body: "A passwordless trial." });
    log.reject("never", 1);
    const index = build(log);
    expect(ids(index, "login")).toEqual(["new"]);
    expect(ids(index, "passwordless")).toEqual([]);
    expect(ids(index, "session")).toEqual([]);
    expect(index.indexedCount).toBe(1);
    // The superseded memory keeps its approved versions (a consolidation revert may reinstate it); rejected versions are dropped.
    expect(index.record("old")?.versions.map((v) => v.version)).toEqual([1]);
    expect(index.record("new")?.versions.map((v) => v.version)).toEqual([1]);
  });

  test("a reinstated memory (memory.reinstated, a consolidation revert) is found again at its active version", () => {
    const log = new EventLog();
    log.write("old", { title: "Auth uses sessions", body: "Login creates a server-side session." });
    log.supersede("old");
    expect(ids(build(log), "session")).toEqual([]);
    log.reinstate("old");
    const index = build(log);
    expect(ids(index, "session")).toEqual(["old"]);
    expect(index.indexedCount).toBe(1);
  });

  test("re-applying events (at-least-once delivery) changes nothing", () => {
    const log = new EventLog();
    log.write("m1", { title: "Queue backpressure", body: "Workers pause consumers when the queue exceeds 10k." });
    log.propose("m1", { title: "Queue backpressure", body: "Workers shed load when lag grows." });
    log.write("m2", { title: "Queue naming", body: "Queues are named after the consuming service." });
    const index = build(log);
    const before = searchMemories(index, "queue workers", { k: 10 });
    index.apply(log.events);
    index.apply(log.events.slice(2, 4));
    expect(searchMemories(index, "queue workers", { k: 10 })).toEqual(before);
    expect(index.record("m1")?.versions).toHaveLength(2);
    expect(index.appliedSeq).toBe(log.lastSeq);
  });

  test("session events only advance the sequence", () => {
    const log = new EventLog();
    log.sessionStarted("s1");
    log.write("m1", { title: "Linting", body: "Run the linter before pushing." });
    log.sessionStarted("s2");
    const index = build(log);
    expect(index.appliedSeq).toBe(4);
    expect(index.recordCount).toBe(1);
  });

  test("filters by scope, kind and tags (all tags, case-insensitive)", () => {
    const log = new EventLog();
    log.write("a", { title: "Database migrations", body: "Run migrations in a transaction.", scope: "app", kind: "convention", tags: ["DB", "ops"] });
    log.write("t", { title: "Database migrations for payments", body: "Payments migrations need approval.", scope: "team:payments", kind: "procedure", tags: ["db"] });
    log.write("o", { title: "Database vendors", body: "Migrations to a new vendor need legal review.", scope: "org", kind: "decision", tags: ["vendors"] });
    const index = build(log);
    expect(ids(index, "migrations").sort()).toEqual(["a", "o", "t"]);
    expect(ids(index, "migrations", { k: 10, scope: "team:payments" })).toEqual(["t"]);
    expect(ids(index, "migrations", { k: 10, scope: "app" })).toEqual(["a"]);
    expect(ids(index, "migrations", { k: 10, kind: "decision" })).toEqual(["o"]);
    expect(ids(index, "migrations", { k: 10, tags: ["db"] }).sort()).toEqual(["a", "t"]);
    expect(ids(index, "migrations", { k: 10, tags: ["db", "OPS"] })).toEqual(["a"]);
    expect(ids(index, "migrations", { k: 10, scope: "team:other" })).toEqual([]);
    // A memory keeps its scope through revisions: the filter follows the active version.
    log.write("t", { title: "Payments schema changes", body: "Schema changes need approval.", scope: "team:payments", tags: ["db"] });
    index.apply(log.after(index.appliedSeq));
    expect(ids(index, "migrations", { k: 10, scope: "team:payments" })).toEqual([]);
  });

  test("k limits results, ranks by score, and a query without words finds nothing", () => {
    const log = new EventLog();
    for (let i = 0; i < 20; i++) log.write(`m${i}`, { title: `Note ${i}`, body: `Kafka partition note number ${i}.` });
    log.write("best", { title: "Kafka partitions", body: "Kafka partitions: key by tenant so a partition keeps per-tenant order." });
    const index = build(log);
    const hits = searchMemories(index, "kafka partition", { k: 5 });
    expect(hits).toHaveLength(5);
    expect(hits[0]?.memoryId).toBe("best");
    for (let i = 1; i < hits.length; i++) expect(hits[i - 1]!.score).toBeGreaterThanOrEqual(hits[i]!.score);
    expect(searchMemories(index, "the of and", { k: 5 })).toEqual([]);
    expect(searchMemories(index, "   ", { k: 5 })).toEqual([]);
  });
});

describe("deferred indexing (fresh rebuild targets)", () => {
  test("indexing each memory's final version once finds exactly what indexing every event finds", async () => {
    const log = new EventLog();
    const words = ["webhook", "retry", "ledger", "invoice", "StripeWebhookHandler", "token", "cache", "deploy"];
    for (let i = 0; i < 60; i++) {
      const id = `m${i}`;
      // Equal texts on purpose: equal scores, ordered by Orama's internal ids (first insertion).
      const text = (n: number) => ({ title: `Note ${words[n % words.length]}`, body: `About ${words[(n * 3) % words.length]} and ${words[(n + 1) % words.length]}.` });
      log.write(id, text(i));
      if (i % 3 === 0) log.write(id, text(i + 1));
      if (i % 5 === 0) log.rollback(id, 2, 1);
      if (i % 7 === 0) log.supersede(id);
      if (i % 11 === 0) log.propose(id, text(i + 2));
    }
    const live = new SearchIndex(log.app, "live");
    for (let i = 0; i < log.events.length; i += 4) live.apply(log.events.slice(i, i + 4));

    const fresh = new SearchIndex(log.app, "fresh");
    fresh.deferIndexing();
    fresh.apply(log.events.slice(0, 100));
    expect(fresh.indexedCount).toBe(0);
    await fresh.materialize(); // an early commit, then the rest
    fresh.apply(log.events.slice(100));
    await fresh.materialize();
    fresh.indexImmediately();

    expect(fresh.indexedCount).toBe(live.indexedCount);
    // Same hits in the same order; scores equal up to the last bits of Orama's running average field
    // length, which it updates per insert and remove (the live index did more of them).
    const rounded = (hits: ReturnType<typeof searchMemories>) => hits.map((hit) => ({ ...hit, score: hit.score.toPrecision(12) }));
    for (const query of [...words, "note about retry", "ledger invoice cache"]) {
      const expected = searchMemories(live, query, { k: 50 });
      expect(expected.length, query).toBeGreaterThan(0);
      expect(rounded(searchMemories(fresh, query, { k: 50 })), query).toEqual(rounded(expected));
    }
  });
});

/**
 * A sink that records what it is sent and settles each write when the test says (our own interface: the
 * real one, on a thread of its own, is tested against NATS in test/projections/vector-thread.int.spec.ts).
 */
class RecordingSink implements VectorSink {
  readonly modelId = "recording";
  readonly writes: { changes: VectorChanges; indexedWhenSent: number; settle: (error?: Error) => void }[] = [];
  readonly saved: string[] = [];
  constructor(private readonly indexedCount: () => number) {}
  write(changes: VectorChanges): Promise<VectorWriteStats> {
    return new Promise((resolve, reject) => {
      const settle = (error?: Error) => (error ? reject(error) : resolve({ embedded: changes.size, upserted: changes.size, removed: 0 }));
      this.writes.push({ changes: new Map(changes), indexedWhenSent: this.indexedCount(), settle });
    });
  }
  async save(dir: string): Promise<void> {
    this.saved.push(dir);
  }
  async close(): Promise<void> {}
}

describe("a fresh index whose vectors go to a sink (written on another thread)", () => {
  const history = () => {
    const log = new EventLog();
    for (let i = 0; i < 30; i++) log.write(`m${i}`, { title: `Note ${i} webhook`, body: `About retry ${i}.` });
    log.supersede("m3");
    return log;
  };
  const freshWithSink = (log: EventLog) => {
    const fresh = new SearchIndex(log.app, "fresh");
    const sink = new RecordingSink(() => fresh.indexedCount);
    fresh.attachVectorSink(sink);
    fresh.deferIndexing();
    return { fresh, sink };
  };

  test("sends each memory's final vector change once, before BM25 is indexed, and materialize does not wait for the write", async () => {
    const log = history();
    const { fresh, sink } = freshWithSink(log);
    fresh.apply(log.events);
    await fresh.materialize(); // resolves while the write is still open
    expect(sink.writes).toHaveLength(1);
    const [write] = sink.writes;
    expect(write!.indexedWhenSent).toBe(0);
    expect([...write!.changes.keys()].sort()).toEqual(Array.from({ length: 30 }, (_, i) => `m${i}`).filter((id) => id !== "m3").sort());
    expect(fresh.indexedCount).toBe(29);
    expect(fresh.pendingVectorCount).toBe(0);
    expect(fresh.vectors).toBeUndefined(); // nothing searches through a sink

    let written = false;
    const waiting = fresh.vectorsWritten().then(() => (written = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(written).toBe(false);
    write!.settle();
    await waiting;
    expect(written).toBe(true);
  });

  test("a failed write is what vectorsWritten rejects with, never an unhandled rejection", async () => {
    const log = history();
    const { fresh, sink } = freshWithSink(log);
    fresh.apply(log.events.slice(0, 20));
    await fresh.materialize();
    fresh.apply(log.events.slice(20));
    await fresh.materialize();
    expect(sink.writes).toHaveLength(2);
    // m3 was indexed by the first materialize and superseded since: the second removes it.
    expect(sink.writes[1]!.changes.get("m3")).toBeNull();
    sink.writes[0]!.settle(new Error("the model is down"));
    sink.writes[1]!.settle();
    await expect(fresh.vectorsWritten()).rejects.toThrow("the model is down");
  });

  test("a sink is attached only to an empty index without a channel", () => {
    const log = history();
    const used = new SearchIndex(log.app, "used");
    used.apply(log.events);
    expect(() => used.attachVectorSink(new RecordingSink(() => 0))).toThrow("a vector sink must be attached to an empty index");
    const twice = new SearchIndex(log.app, "twice");
    twice.attachVectorSink(new RecordingSink(() => 0));
    expect(() => twice.attachVectorSink(new RecordingSink(() => 0))).toThrow("already has a vector channel");
  });
});

describe("the branch each version was proposed on (retrieval's branch boost)", () => {
  test("is kept per version, replaced by a later proposal of the same version, exported for kept versions only, and restored", () => {
    const log = new EventLog();
    log.write("m1", { title: "Build cache", body: "Cache the build.", branch: "feature/cache" });
    log.propose("m1", { title: "Build cache", body: "Cache the build twice.", branch: "feature/cache-2" });
    log.write("m2", { title: "No branch", body: "Proposed outside git." });
    const rejected = log.propose("m3", { title: "Rejected idea", body: "Never mind.", branch: "spike" });
    log.reject("m3", rejected);
    log.write("m4", { title: "Kept", body: "On main.", branch: "main" });
    const index = build(log);
    expect(index.branchOf("m1", 1)).toBe("feature/cache");
    expect(index.branchOf("m1", 2)).toBe("feature/cache-2");
    expect(index.branchOf("m1", 3)).toBeUndefined();
    expect(index.branchOf("m2", 1)).toBeUndefined();
    expect(index.branchOf("unknown", 1)).toBeUndefined();

    // A rejected version is dropped from its record, so its branch is not exported.
    const state = index.exportState();
    expect(state.branches).toEqual([
      ["m1", 1, "feature/cache"],
      ["m1", 2, "feature/cache-2"],
      ["m4", 1, "main"],
    ]);
    const records = [...state.records];
    const restored = SearchIndex.restore({ app: log.app, generation: "restored", seq: state.seq, records, branches: state.branches, fullText: state.fullText });
    for (const [memoryId, version] of [["m1", 1], ["m1", 2], ["m2", 1], ["m4", 1], ["m3", 1]] as const) {
      expect(restored.branchOf(memoryId, version), `${memoryId} v${version}`).toBe(memoryId === "m3" ? undefined : index.branchOf(memoryId, version));
    }
    // Restoring the same pair twice (a snapshot with a repeated line) keeps one entry for it.
    const twice = SearchIndex.restore({ app: log.app, generation: "twice", seq: state.seq, records, branches: [...state.branches, ["m1", 1, "feature/other"]] });
    expect(twice.branchOf("m1", 1)).toBe("feature/other");
    expect(twice.exportState().branches.filter(([id, version]) => id === "m1" && version === 1)).toEqual([["m1", 1, "feature/other"]]);
  });
});
