import { Objm } from "@nats-io/obj";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { naming } from "../../events/subjects.js";
import { SnapshotWriter } from "../../services/audit/snapshot-writer.js";
import { foldAsOf, snapshotName } from "../../services/audit/snapshots.js";
import { EventStore } from "../../services/event-store.js";
import { readLeases } from "../../services/leader-lease.js";
import { eventually, until } from "../support/eventually.js";
import { startLedger, type Ledger } from "../support/env.js";

/**
 * Issue 12 item 2: `memledger up` writes as-of snapshots as events accumulate. Two writers (two `up`
 * instances) on one prefix: one holds each app's lease and writes; after N events exactly one snapshot
 * per checkpoint exists, each written once; when the writer stops, the other takes over and goes on.
 */
describe("snapshot writer: one instance writes an app's as-of snapshots every N events", () => {
  let ledger: Ledger;
  let store: EventStore;
  const app = "sw1";
  const EVERY = 4;
  const writes: { holder: string; app: string; seq: number }[] = [];
  const errors: string[] = [];
  const writers: SnapshotWriter[] = [];

  const startWriter = async (holder: string) => {
    const writer = await SnapshotWriter.start(ledger.nc, {
      prefix: ledger.prefix,
      every: EVERY,
      checkEveryMs: 50,
      discoverEveryMs: 100,
      leaseTtlMs: 1_500,
      holder,
      onError: (err, where) => errors.push(`${where}: ${(err as Error).message}`),
      onWritten: (a, seqs) => writes.push(...seqs.map((seq) => ({ holder, app: a, seq }))),
    });
    writers.push(writer);
    return writer;
  };

  /** Appends `n` events (proposals and approvals) to the app. */
  const append = async (n: number) => {
    const coder = ledger.client("coder-1");
    const alice = ledger.client("human:alice");
    for (let i = 0; i < n; i += 2) {
      const { memoryId } = await coder.propose({ title: `Note ${i} ${Math.random()}`, body: `body ${i}` });
      if (i + 1 < n) await alice.approve(memoryId);
    }
  };

  const mainObjects = async () => {
    const bucket = await new Objm(ledger.nc).open(store.names.asOfSnapshotsBucket());
    return (await bucket.list()).filter((i) => !i.deleted && i.name.startsWith(`${app}/`)).map((i) => i.name).sort();
  };

  beforeAll(async () => {
    ledger = await startLedger({ app });
    store = await EventStore.open(ledger.nc, naming(ledger.prefix));
  });

  afterAll(async () => {
    for (const w of writers) await w.stop().catch(() => undefined);
    await ledger?.cleanup();
  });

  it("after N events, exactly one snapshot per checkpoint, each written once by one instance", async () => {
    await append(2);
    const a = await startWriter("writer-a");
    const b = await startWriter("writer-b");
    await until("one writer leads the app", () => expect([...a.leading, ...b.leading]).toEqual([app]));
    await append(EVERY * 3 - 2 + 1); // 13 events: checkpoints 4, 8 and 12 passed
    const last = await store.lastSeq(store.names.appStream(app));
    expect(last).toBe(EVERY * 3 + 1);
    await until("three checkpoints written", () => expect(writes.map((w) => w.seq).sort((x, y) => x - y)).toEqual([4, 8, 12]));
    const leader = a.leading.length > 0 ? "writer-a" : "writer-b";
    expect(new Set(writes.map((w) => w.holder))).toEqual(new Set([leader]));
    const names = [4, 8, 12].map((seq) => snapshotName(app, seq));
    expect(await mainObjects()).toEqual(names.flatMap((n) => [n, `${n}.hydration`, `${n}.search`]).sort());
    // The lease is in the leases bucket under its name, held by the writer that wrote.
    expect((await readLeases(ledger.nc, store.names)).get(store.names.asOfSnapshotLease(app))?.holder).toBe(leader);
    // An as-of read uses the newest one, every part of it.
    const { report } = await foldAsOf(store, app, { seq: last }, { search: true, hydration: true });
    expect(report).toMatchObject({ snapshotSeq: 12, snapshotProblem: null, hydrationFrom: 12, hydrationProblem: null, folded: 1 });
    expect(errors).toEqual([]);
  });

  it("when the writer stops, the other instance takes over and writes the next checkpoints, still once each", async () => {
    const leading = writers.find((w) => w.leading.includes(app))!;
    const follower = writers.find((w) => w !== leading)!;
    await leading.stop();
    await until("the other writer leads", () => expect(follower.leading).toEqual([app]));
    await append(EVERY * 2);
    await until("checkpoints 16 and 20 written", () => expect(writes.map((w) => w.seq).sort((x, y) => x - y)).toEqual([4, 8, 12, 16, 20]));
    const names = [4, 8, 12, 16, 20].map((seq) => snapshotName(app, seq));
    expect(await mainObjects()).toEqual(names.flatMap((n) => [n, `${n}.hydration`, `${n}.search`]).sort());
    expect(errors).toEqual([]);
  });

  it("`every` 0 writes nothing and takes no lease", async () => {
    const off = await SnapshotWriter.start(ledger.nc, { prefix: ledger.prefix, every: 0, checkEveryMs: 20, holder: "writer-off" });
    writers.push(off);
    await append(EVERY);
    await eventually("the running writer catches up", () => (writes.some((w) => w.seq === 24) ? true : undefined));
    expect(off.leading).toEqual([]);
    expect(writes.filter((w) => w.holder === "writer-off")).toEqual([]);
  });
});
