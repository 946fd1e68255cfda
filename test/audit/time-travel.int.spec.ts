import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { gunzipSync, gzipSync } from "node:zlib";
import { join } from "node:path";
import { Objm, type ObjectStore } from "@nats-io/obj";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { naming } from "../../events/subjects.js";
import { filesProjection, readMemoryIndex } from "../../projections/files/index.js";
import { openSearchIndex, retrieve, searchProjection } from "../../projections/search/index.js";
import { mayRead } from "../../schemas/policy.js";
import { resolvePolicy } from "../../services/auth/load.js";
import { snapshotName, writeSnapshots, foldAsOf } from "../../services/audit/snapshots.js";
import { hydrateAsOf, memoryIndexAsOf, searchAsOf } from "../../services/audit/time-travel.js";
import { EventStore } from "../../services/event-store.js";
import { Hydrator } from "../../services/hydration/service.js";
import { rebuildProjections } from "../../services/projection-runner.js";
import { startLedger, type Ledger } from "../support/env.js";

/**
 * Issue 12: search and hydrate as of a moment, folded from the log with the projections' own folds, and
 * the as-of snapshots that make those reads fast, which are a cache: a damaged, edited or stale one is
 * refused and the answer is folded from the log instead, so it is the same either way.
 */
describe("time travel: search, hydrate and MEMORY.md as of a moment; snapshots are only a cache", () => {
  let ledger: Ledger;
  let store: EventStore;
  let dir: string;
  let bucket: ObjectStore;
  let memoryId: string;
  let secretId: string;
  let seqV1: number;
  let timeV1: string;
  let seqEnd: number;
  const app = "tt1";
  const all = () => true;
  const QUERIES = ["retry webhooks", "stripe", "tenant queue names", "fragile billing migration"];

  beforeAll(async () => {
    ledger = await startLedger({ app });
    store = await EventStore.open(ledger.nc, naming(ledger.prefix));
    dir = await mkdtemp(join(tmpdir(), "memledger-tt-"));
    bucket = await new Objm(ledger.nc).create(store.names.asOfSnapshotsBucket());
    const coder = ledger.client("coder-1");
    const bob = ledger.client("bob");
    const alice = ledger.client("human:alice");
    const v1 = await coder.propose({ title: "Retry webhooks three times", body: "Stripe webhooks: retry 3 times.", paths: ["src/payments/webhook.ts"], git: { branch: "fix/retries", worktree: "/w" } });
    memoryId = v1.memoryId;
    const approved = await alice.approve(memoryId);
    seqV1 = approved.seq;
    timeV1 = (await store.eventAt(store.names.appStream(app), seqV1))!.event.time;
    const fragile = await coder.propose({ title: "Billing migration is fragile", body: "Never run the billing migration twice.", kind: "fragile", paths: ["src/billing"] });
    await alice.approve(fragile.memoryId);
    const { sessionId } = await coder.startSession({ task: "webhooks" });
    await coder.endSession(sessionId, { summary: "done" });
    await new Promise((resolve) => setTimeout(resolve, 20)); // the next events are strictly later than timeV1's neighbours
    await coder.propose({ memoryId, title: "Retry webhooks five times", body: "Stripe webhooks: retry 5 times, backoff exponential.", paths: ["src/payments/webhook.ts"] });
    await alice.approve(memoryId);
    const queue = await coder.propose({ title: "Queue names are per tenant", body: "tenant-<id> queue names." });
    await alice.approve(queue.memoryId);
    await coder.claim("src/payments/webhook.ts", { kind: "lock", ttlMs: 3_600_000 });
    // Bob's scratchpad: only bob reads it under the default policy.
    const secret = await bob.propose({ title: "Retry webhooks: bob's private note", body: "Stripe retry notes of bob.", scope: "agent:bob" });
    secretId = secret.memoryId;
    await alice.approve(secretId);
    seqEnd = await store.lastSeq(store.names.appStream(app));
  });

  afterAll(async () => {
    await bucket?.destroy().catch(() => undefined);
    await ledger?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  it("search as of a sequence or a time ranks the memories of that moment", async () => {
    const then = await searchAsOf(store, app, "retry webhooks", { seq: seqV1 }, { k: 10, mode: "bm25", readable: all });
    expect(then.hits.map((h) => [h.memoryId, h.version])).toEqual([[memoryId, 1]]);
    expect(then.hits[0]!.body).toContain("retry 3 times");
    const byTime = await searchAsOf(store, app, "retry webhooks", { time: timeV1 }, { k: 10, mode: "bm25", readable: all });
    expect(byTime.hits).toEqual(then.hits);
    const now = await searchAsOf(store, app, "retry webhooks", {}, { k: 10, mode: "bm25", readable: all });
    expect(now.hits.find((h) => h.memoryId === memoryId)?.version).toBe(2);
  });

  it("search as of the last event equals the live search projection's answer, for several queries", async () => {
    const searchDir = join(dir, "search");
    await rebuildProjections(store, [searchProjection({ dir: searchDir })], { prefix: ledger.prefix, app, stream: store.names.appStream(app) });
    const live = await openSearchIndex(searchDir, app);
    for (const query of QUERIES) {
      const expected = (await retrieve([live], query, { k: 10, mode: "bm25" })).map((h) => h.memoryId);
      const asOf = (await searchAsOf(store, app, query, { seq: seqEnd }, { k: 10, mode: "bm25", readable: all })).hits.map((h) => h.memoryId);
      expect(asOf, query).toEqual(expected);
    }
  });

  it("the read policy applies as it does live: another agent's scratchpad is not shown", async () => {
    const { policy } = await resolvePolicy(undefined, {});
    const asAlice = (scope: string) => mayRead(policy, { kind: "agent", id: "alice" }, scope);
    const asBob = (scope: string) => mayRead(policy, { kind: "agent", id: "bob" }, scope);
    const alice = await searchAsOf(store, app, "stripe retry", {}, { k: 10, mode: "bm25", readable: asAlice });
    const bob = await searchAsOf(store, app, "stripe retry", {}, { k: 10, mode: "bm25", readable: asBob });
    expect(alice.hits.map((h) => h.memoryId)).not.toContain(secretId);
    expect(alice.hits.length).toBeGreaterThan(0);
    expect(bob.hits.map((h) => h.memoryId)).toContain(secretId);
    const pack = await hydrateAsOf(store, app, { agent: "alice", task: "stripe retry", branch: null, paths: [], budget: 4000, readable: asAlice }, {});
    expect(pack.pack.markdown).not.toContain("bob's private note");
  });

  it("hydrate as of a sequence is the pack of that moment, built like the live one", async () => {
    const input = { agent: "coder-1", task: "retry webhooks", branch: null, paths: ["src/billing/run.ts"], budget: 4000, readable: all };
    const then = await hydrateAsOf(store, app, input, { seq: seqV1 });
    expect(then.pack.markdown).toContain("retry 3 times");
    expect(then.pack.markdown).not.toContain("retry 5 times");
    expect(then.pack.markdown).not.toContain("Billing migration is fragile");
    const now = await hydrateAsOf(store, app, input, {});
    expect(now.pack.markdown).toContain("retry 5 times");
    expect(now.pack.markdown).toContain("Billing migration is fragile");
    // The live Hydrator over the same log (no files root or claims here): the same memories in every section it can fill.
    const live = await new Hydrator(store).hydrate(app, { ...input, visible: all });
    const sections = (p: typeof live) => Object.fromEntries(p.sections.filter((s) => ["fragile", "relevant", "changes"].includes(s.name)).map((s) => [s.name, s.included]));
    expect(sections(now.pack)).toEqual(sections(live));
    expect(sections(now.pack).relevant!.length).toBeGreaterThan(0);
  });

  it("MEMORY.md as of a sequence equals what the files projection rendered then", async () => {
    const root = join(dir, "files");
    await rebuildProjections(store, [filesProjection({ root })], { prefix: ledger.prefix, app, stream: store.names.appStream(app) });
    expect((await memoryIndexAsOf(store, app, { seq: seqEnd })).markdown).toBe(await readMemoryIndex(root, app));
  });

  describe("snapshots", () => {
    const reads = async (noSnapshot: boolean) => {
      const out: unknown[] = [];
      for (const seq of [seqV1, seqV1 + 3, seqEnd]) {
        out.push((await memoryIndexAsOf(store, app, { seq }, { noSnapshot })).markdown);
        for (const q of QUERIES) out.push((await searchAsOf(store, app, q, { seq }, { k: 10, mode: "bm25", readable: all, noSnapshot })).hits);
        out.push((await hydrateAsOf(store, app, { agent: "coder-1", task: "retry webhooks", branch: null, paths: ["src/billing"], budget: 4000, readable: all }, { seq }, { noSnapshot })).pack.markdown);
      }
      return out;
    };
    let fromLog: unknown[];

    it("are written every N events, used by as-of reads, and change no answer", async () => {
      fromLog = await reads(true);
      const written = await writeSnapshots(store, app, { every: 4, bucket });
      expect(written.written.map((w) => w.seq)).toEqual(Array.from({ length: Math.floor(seqEnd / 4) }, (_, i) => 4 * (i + 1)).filter((s) => s <= seqEnd));
      const { report } = await foldAsOf(store, app, { seq: seqEnd }, { search: true });
      expect(report).toMatchObject({ snapshotSeq: Math.floor(seqEnd / 4) * 4, snapshotProblem: null });
      expect(report.folded).toBe(seqEnd % 4);
      expect(await reads(false)).toEqual(fromLog);
      // Written again: nothing new to write.
      expect((await writeSnapshots(store, app, { every: 4, bucket })).written).toEqual([]);
    });

    const newest = () => snapshotName(app, Math.floor(seqEnd / 4) * 4);
    /** Rewrites a snapshot object (stored gzipped) through `edit`; returns the text it had. */
    const replace = async (name: string, edit: (text: string) => string) => {
      const info = await bucket.info(name);
      const text = gunzipSync((await bucket.getBlob(name))!).toString("utf8");
      await bucket.putBlob({ name, description: info!.description }, gzipSync(edit(text)));
      return text;
    };

    it("a damaged snapshot is refused: the read folds from the log, same answers", async () => {
      const original = await replace(newest(), (t) => t.replace("Retry webhooks five times", "Retry webhooks nine times"));
      const { report } = await foldAsOf(store, app, { seq: seqEnd });
      expect(report.snapshotSeq).toBeNull();
      expect(report.snapshotProblem).toMatch(/digest/);
      expect(await reads(false)).toEqual(fromLog);
      // `snapshot` writes the refused one again, from the log.
      const rewritten = await writeSnapshots(store, app, { every: 4, bucket });
      expect(rewritten.report.snapshotProblem).toMatch(/digest/);
      expect(rewritten.written.map((w) => w.seq)).toEqual([Math.floor(seqEnd / 4) * 4]);
      expect((await foldAsOf(store, app, { seq: seqEnd }, { search: true })).report).toMatchObject({ snapshotSeq: Math.floor(seqEnd / 4) * 4, snapshotProblem: null });
      expect(await reads(false)).toEqual(fromLog);
      expect(original).toBeTruthy();
    });

    it("an edited snapshot whose digest was recomputed is refused by the check against the log", async () => {
      const { createHash } = await import("node:crypto");
      const original = await replace(newest(), (t) => {
        const cut = t.indexOf("\n");
        const body = t.slice(cut + 1).replace("Retry webhooks five times", "Retry webhooks nine times");
        const header = { ...JSON.parse(t.slice(0, cut)), digest: createHash("sha256").update(body).digest("hex") };
        return `${JSON.stringify(header)}\n${body}`;
      });
      const { report, state } = await foldAsOf(store, app, { seq: seqEnd });
      expect(report.snapshotProblem).toMatch(/differs from its events in the log/);
      expect(JSON.stringify([...state.files!.values()])).not.toContain("nine times");
      expect(await reads(false)).toEqual(fromLog);
      await replace(newest(), () => original);
    });

    it("a missing search part is refused for ranking reads; MEMORY.md still uses the snapshot", async () => {
      const searchPart = `${newest()}.search`;
      const bytes = (await bucket.getBlob(searchPart))!;
      await bucket.delete(searchPart);
      expect((await foldAsOf(store, app, { seq: seqEnd }, { search: true })).report.snapshotProblem).toMatch(/missing/);
      expect((await foldAsOf(store, app, { seq: seqEnd })).report.snapshotProblem).toBeNull();
      expect(await reads(false)).toEqual(fromLog);
      await bucket.putBlob({ name: searchPart }, bytes);
    });

    it("a stale snapshot (the stream was deleted and written again) is refused", async () => {
      const other = "tt2";
      const coder = ledger.client("coder-1", other);
      const alice = ledger.client("human:alice", other);
      for (let i = 0; i < 3; i++) await alice.approve((await coder.propose({ title: `Old note ${i}`, body: `old ${i}` })).memoryId);
      const written = await writeSnapshots(store, other, { every: 2, bucket });
      expect(written.written.length).toBeGreaterThan(0);
      await store.deleteStream(store.names.appStream(other));
      // Created again here: the service's store still remembers the old one as existing.
      await store.ensureAppStream(other);
      for (let i = 0; i < 3; i++) await alice.approve((await coder.propose({ title: `New note ${i}`, body: `new ${i}` })).memoryId);
      const { report, state } = await foldAsOf(store, other, {}, { search: true });
      expect(report.snapshotSeq).toBeNull();
      expect(report.snapshotProblem).toMatch(/not the one it was taken at/);
      const index = (await memoryIndexAsOf(store, other, {})).markdown;
      expect(index).toContain("New note 2");
      expect(index).not.toContain("Old note");
      expect(index).toBe((await memoryIndexAsOf(store, other, {}, { noSnapshot: true })).markdown);
      expect(state.search!.indexedCount).toBe(3);
    });
  });
});
