import { createHash } from "node:crypto";
import { gunzipSync, gzipSync } from "node:zlib";
import { Objm, type ObjectStore } from "@nats-io/obj";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { naming } from "../../events/subjects.js";
import { foldAsOf, snapshotName, writeSnapshots } from "../../services/audit/snapshots.js";
import { hydrateAsOf } from "../../services/audit/time-travel.js";
import { EventStore, type StoredEvent } from "../../services/event-store.js";
import { AppCatalog } from "../../services/hydration/catalog.js";
import { Hydrator } from "../../services/hydration/service.js";
import { startLedger, type Ledger } from "../support/env.js";

/**
 * Issue 12 item 2: the as-of snapshot's hydration part (hydration's catalog and the claims), so a hydrate
 * as of a moment folds only the events after the snapshot. It is a cache like the other parts: a pack from
 * it equals the pack folded from the log, and a damaged, foreign or missing part is refused (the catalog
 * is then folded from the log) without refusing the rest of the snapshot.
 */
describe("as-of snapshots: hydration's catalog and claims part", () => {
  let ledger: Ledger;
  let store: EventStore;
  let bucket: ObjectStore;
  let events: StoredEvent[];
  let seqEnd: number;
  const app = "sh1";
  const all = () => true;
  const EVERY = 5;
  const input = { agent: "coder-1", task: "retry webhooks billing", branch: null, paths: ["src/billing/run.ts", "src/payments"], budget: 6000, readable: all };

  beforeAll(async () => {
    ledger = await startLedger({ app });
    store = await EventStore.open(ledger.nc, naming(ledger.prefix));
    bucket = await new Objm(ledger.nc).create(store.names.asOfSnapshotsBucket());
    const coder = ledger.client("coder-1");
    const alice = ledger.client("human:alice");
    const first = await coder.startSession({ task: "webhooks" });
    const v1 = await coder.propose({ title: "Retry webhooks three times", body: "Stripe webhooks: retry 3 times.", paths: ["src/payments/webhook.ts"] });
    await alice.approve(v1.memoryId);
    const fragile = await coder.propose({ title: "Billing migration is fragile", body: "Never run the billing migration twice.", kind: "fragile", paths: ["src/billing"] });
    await alice.approve(fragile.memoryId);
    await coder.claim("src/payments/webhook.ts", { kind: "lock", ttlMs: 3_600_000 });
    await coder.endSession(first.sessionId, { summary: "done" });
    // Changes after that session: what the next pack lists as "since your last session".
    await coder.propose({ memoryId: v1.memoryId, title: "Retry webhooks five times", body: "Stripe webhooks: retry 5 times, backoff exponential.", paths: ["src/payments/webhook.ts"] });
    await alice.approve(v1.memoryId);
    const other = await coder.propose({ title: "Old billing note", body: "billing runs nightly", kind: "fragile", paths: ["src/billing/nightly"] });
    await alice.approve(other.memoryId);
    await alice.supersede(other.memoryId, "wrong");
    const second = await coder.startSession({ task: "billing" });
    // Another agent's lock: the pack shows claims held by others.
    await ledger.client("bob").claim("src/billing/run.ts", { kind: "lock", ttlMs: 3_600_000 });
    const queue = await coder.propose({ title: "Queue names are per tenant", body: "tenant-<id> queue names.", paths: ["src/payments/queue.ts"] });
    await alice.approve(queue.memoryId);
    // The second session stays open: the pack's previous session is the first, and its changes are listed.
    expect(second.sessionId).toBeTruthy();
    seqEnd = await store.lastSeq(store.names.appStream(app));
    events = [];
    for await (const stored of store.readSubject(store.names.appStream(app), store.names.appEvents(app))) events.push(stored);
  });

  afterAll(async () => {
    await bucket?.destroy().catch(() => undefined);
    await ledger?.cleanup();
  });

  it("the catalog's exported state, restored and folded on, equals the catalog folded from the first event", () => {
    expect(events.map((e) => e.seq)).toEqual(Array.from({ length: seqEnd }, (_, i) => i + 1));
    const whole = new AppCatalog(app);
    whole.apply(events);
    for (let cut = 0; cut <= seqEnd; cut++) {
      const head = new AppCatalog(app);
      head.apply(events.slice(0, cut));
      const restored = AppCatalog.restore(JSON.parse(JSON.stringify(head.exportState())), app);
      expect(restored.appliedSeq).toBe(cut);
      restored.apply(events); // the ones at or below its sequence are skipped
      expect(restored.exportState(), `cut at ${cut}`).toEqual(whole.exportState());
      expect(restored.previousSession("coder-1", undefined)).toEqual(whole.previousSession("coder-1", undefined));
      expect(restored.changesAfter(0, 3, all)).toEqual(whole.changesAfter(0, 3, all));
      expect(restored.fragileOnPaths(["src/billing"])).toEqual(whole.fragileOnPaths(["src/billing"]));
    }
    // Another version or app is refused, never half restored.
    expect(() => AppCatalog.restore({ ...whole.exportState(), version: 2 as 1 }, app)).toThrow(/version/);
    expect(() => AppCatalog.restore(whole.exportState(), "other")).toThrow(/app/);
    expect(() => AppCatalog.restore({ ...whole.exportState(), records: null as never }, app)).toThrow(/malformed/);
  });

  const packAt = async (seq: number, noSnapshot: boolean) => hydrateAsOf(store, app, input, { seq }, { noSnapshot });

  it("hydrate as of N from a snapshot folds only the events after it, and equals hydrate as of N from the log", async () => {
    const fromLog = new Map<number, string>();
    for (let seq = 1; seq <= seqEnd; seq++) fromLog.set(seq, JSON.stringify((await packAt(seq, true)).pack));
    const written = await writeSnapshots(store, app, { every: EVERY, bucket });
    expect(written.written.map((w) => w.seq)).toEqual(Array.from({ length: Math.floor(seqEnd / EVERY) }, (_, i) => EVERY * (i + 1)));
    for (let seq = 1; seq <= seqEnd; seq++) {
      const fromSnapshot = await packAt(seq, false);
      const checkpoint = Math.floor(seq / EVERY) * EVERY;
      expect(fromSnapshot.from[app], `seq ${seq}`).toMatchObject({
        snapshotSeq: checkpoint === 0 ? null : checkpoint,
        hydrationFrom: checkpoint === 0 ? null : checkpoint,
        hydrationProblem: null,
        folded: seq - checkpoint,
      });
      expect(JSON.stringify(fromSnapshot.pack), `seq ${seq}`).toBe(fromLog.get(seq));
    }
    // Something in every section the catalog and the claims fill, at the end.
    const end = (await packAt(seqEnd, false)).pack;
    const included = (name: string) => end.sections.find((s) => s.name === name)?.included ?? [];
    expect(included("fragile").length).toBeGreaterThan(0);
    expect(included("changes").length).toBeGreaterThan(0);
    expect(included("claims").length).toBeGreaterThan(0);
  });

  it("hydrate as of the last event from a snapshot equals the live Hydrator over the same log", async () => {
    const asOf = await packAt(seqEnd, false);
    expect(asOf.from[app]!.hydrationFrom).toBe(Math.floor(seqEnd / EVERY) * EVERY);
    const live = await new Hydrator(store).hydrate(app, { ...input, visible: all });
    // No files root or claims reader here: the sections the live one fills from the log.
    const sections = (p: typeof live) => Object.fromEntries(p.sections.filter((s) => ["fragile", "relevant", "changes"].includes(s.name)).map((s) => [s.name, s.included]));
    expect(sections(asOf.pack)).toEqual(sections(live));
    expect(sections(live).changes!.length).toBeGreaterThan(0);
  });

  const newest = () => snapshotName(app, Math.floor(seqEnd / EVERY) * EVERY);
  /** Rewrites one object of a snapshot (stored gzipped) through `edit`; returns its bytes before. */
  const replace = async (name: string, edit: (text: string) => string) => {
    const info = await bucket.info(name);
    const bytes = (await bucket.getBlob(name))!;
    await bucket.putBlob({ name, description: info!.description }, gzipSync(edit(gunzipSync(bytes).toString("utf8"))));
    return { name, bytes, description: info!.description };
  };
  const restore = async (saved: { name: string; bytes: Uint8Array; description: string | undefined }) => {
    await bucket.putBlob({ name: saved.name, description: saved.description }, saved.bytes);
  };

  it("a damaged hydration part is refused: the catalog is folded from the log, the rest of the snapshot still serves, same pack", async () => {
    const expected = JSON.stringify((await packAt(seqEnd, true)).pack);
    const saved = await replace(`${newest()}.hydration`, (t) => t.replace("Retry webhooks five times", "Retry webhooks nine times"));
    const read = await packAt(seqEnd, false);
    expect(read.from[app]).toMatchObject({ snapshotSeq: Math.floor(seqEnd / EVERY) * EVERY, snapshotProblem: null, hydrationFrom: null });
    expect(read.from[app]!.hydrationProblem).toMatch(/hydration part does not match its digest/);
    expect(JSON.stringify(read.pack)).toBe(expected);
    expect(JSON.stringify(read.pack)).not.toContain("nine times");

    // Edited with its digest recomputed: the header no longer matches the main object's.
    await replace(saved.name, () => {
      const text = gunzipSync(saved.bytes).toString("utf8");
      const cut = text.indexOf("\n");
      const body = text.slice(cut + 1).replace("Retry webhooks five times", "Retry webhooks nine times");
      const header = { ...JSON.parse(text.slice(0, cut)), hydrationDigest: createHash("sha256").update(body).digest("hex") };
      return `${JSON.stringify(header)}\n${body}`;
    });
    const edited = await packAt(seqEnd, false);
    expect(edited.from[app]!.hydrationProblem).toMatch(/different snapshot/);
    expect(JSON.stringify(edited.pack)).toBe(expected);

    // Missing.
    await bucket.delete(saved.name);
    const missing = await packAt(seqEnd, false);
    expect(missing.from[app]!.hydrationProblem).toMatch(/missing/);
    expect(JSON.stringify(missing.pack)).toBe(expected);
    await restore(saved);
    expect((await packAt(seqEnd, false)).from[app]!.hydrationProblem).toBeNull();
  });

  it("a snapshot of the older format (no hydration part) still serves: the catalog and claims are folded from the log", async () => {
    const expected = JSON.stringify((await packAt(seqEnd, true)).pack);
    const withoutPart = (t: string) => {
      const cut = t.indexOf("\n");
      const { hydrationDigest: _gone, ...header } = JSON.parse(t.slice(0, cut)) as Record<string, unknown>;
      return `${JSON.stringify(header)}\n${t.slice(cut + 1)}`;
    };
    const main = await replace(newest(), withoutPart);
    const search = await replace(`${newest()}.search`, withoutPart);
    const read = await packAt(seqEnd, false);
    expect(read.from[app]).toMatchObject({ snapshotSeq: Math.floor(seqEnd / EVERY) * EVERY, snapshotProblem: null, hydrationFrom: null });
    expect(read.from[app]!.hydrationProblem).toMatch(/no hydration part/);
    expect(JSON.stringify(read.pack)).toBe(expected);
    // The main object's records are still checked and used for MEMORY.md and ranking.
    expect((await foldAsOf(store, app, { seq: seqEnd }, { search: true })).report).toMatchObject({ snapshotSeq: Math.floor(seqEnd / EVERY) * EVERY, snapshotProblem: null });
    await restore(main);
    await restore(search);
    expect((await packAt(seqEnd, false)).from[app]!.hydrationProblem).toBeNull();
  });
});
