import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chained, contentHash } from "../../events/chain.js";
import { naming } from "../../events/subjects.js";
import { verifyLedger, verifyStream, type ProblemKind } from "../../services/audit/verify.js";
import { EventStore } from "../../services/event-store.js";
import { startLedger, type Ledger } from "../support/env.js";

/**
 * Tamper evidence: events written through the command service are chained; `verify` passes on the real
 * stream and on a faithful copy, and finds every kind of tampering in a tampered copy of the stream
 * (edited, re-hashed, removed, reordered, inserted, deleted, junk, chain stripped). Copies are streams of
 * their own app under the test's prefix, built from the original messages' bytes.
 */
describe("verify: tamper evidence", () => {
  let ledger: Ledger;
  let store: EventStore;
  let jsm: JetStreamManager;
  let original: { subject: string; data: Uint8Array; seq: number }[];
  let copies = 0;
  const enc = new TextEncoder();
  const dec = new TextDecoder();

  beforeAll(async () => {
    ledger = await startLedger({ app: "chain1" });
    store = await EventStore.open(ledger.nc, naming(ledger.prefix));
    jsm = await jetstreamManager(ledger.nc);
    const agent = ledger.client("coder-1");
    const alice = ledger.client("human:alice");
    const a = await agent.propose({ title: "A", body: "first" });
    await alice.approve(a.memoryId);
    await agent.propose({ memoryId: a.memoryId, title: "A2", body: "second" });
    await alice.approve(a.memoryId);
    const b = await agent.propose({ title: "B", body: "other" });
    await alice.reject(b.memoryId, "no");
    await agent.claim("task-1", { ttlMs: 60_000 });
    const stream = store.names.appStream(ledger.app);
    original = [];
    const last = await store.lastSeq(stream);
    for (let seq = 1; seq <= last; seq++) {
      const m = await jsm.direct.getMessage(stream, { seq });
      original.push({ subject: m!.subject, data: m!.data, seq });
    }
  });

  afterAll(async () => {
    await ledger?.cleanup();
  });

  /** A copy of the app's stream as another app's, with `tamper` applied to the list of messages first. */
  async function copy(tamper: (messages: { subject: string; data: Uint8Array }[]) => { subject: string; data: Uint8Array }[], afterCopy?: (stream: string) => Promise<void>) {
    const app = `copy${++copies}`;
    const names = store.names;
    const stream = names.appStream(app);
    await jsm.streams.add({ name: stream, subjects: [names.appEvents(app)], allow_direct: true, deny_delete: false });
    const from = names.appEvents(ledger.app).slice(0, -1);
    const into = names.appEvents(app).slice(0, -1);
    for (const m of tamper(original.map((o) => ({ subject: o.subject, data: o.data })))) {
      await ledger.nc.request(into + m.subject.slice(from.length), m.data);
    }
    await afterCopy?.(stream);
    return verifyStream(store, stream);
  }
  const json = (data: Uint8Array) => JSON.parse(dec.decode(data)) as Record<string, unknown>;
  const bytes = (value: unknown) => enc.encode(JSON.stringify(value));
  const kinds = (problems: { kind: ProblemKind }[]) => problems.map((p) => p.kind);
  const firstOnSubjectWithNext = () => original.findIndex((m, i) => original.slice(i + 1).some((n) => n.subject === m.subject));

  it("chains every event written through the command service, and the real stream verifies", async () => {
    for (const m of original) {
      const event = json(m.data);
      expect(event.hash).toBe(contentHash(event));
    }
    const [report] = await verifyLedger(store, ledger.app);
    expect(report).toMatchObject({ messages: original.length, chained: original.length, unchained: 0, problems: [] });
    expect((await copy((ms) => ms)).problems).toEqual([]);
  });

  it("finds an edited event (its hash no longer matches its content)", async () => {
    const report = await copy((ms) => ms.map((m, i) => (i === 0 ? { ...m, data: bytes({ ...json(m.data), data: { ...(json(m.data).data as object), body: "forged" } }) } : m)));
    expect(kinds(report.problems)).toEqual(["hash_mismatch"]);
    expect(report.problems[0]!.seq).toBe(1);
  });

  it("finds an edited event whose hash was recomputed (the next event's link breaks)", async () => {
    const i = firstOnSubjectWithNext();
    const report = await copy((ms) => ms.map((m, j) => (j === i ? { ...m, data: bytes(chained({ ...json(m.data), data: { ...(json(m.data).data as object), title: "forged" } }, (json(m.data).prevHash as string | null) ?? null)) } : m)));
    expect(kinds(report.problems)).toEqual(["broken_link"]);
  });

  it("finds a removed event, two events swapped, and an inserted forgery", async () => {
    const i = firstOnSubjectWithNext();
    expect(kinds((await copy((ms) => ms.filter((_, j) => j !== i))).problems)).toContain("broken_link");
    const next = original.findIndex((m, j) => j > i && m.subject === original[i]!.subject);
    const swapped = await copy((ms) => ms.map((m, j) => (j === i ? ms[next]! : j === next ? ms[i]! : m)));
    expect(kinds(swapped.problems)).toContain("broken_link");
    const forged = chained({ ...json(original[i]!.data), id: "forged-1" }, json(original[i]!.data).hash as string);
    const inserted = await copy((ms) => [...ms.slice(0, i + 1), { subject: ms[i]!.subject, data: bytes(forged) }, ...ms.slice(i + 1)]);
    expect(kinds(inserted.problems)).toEqual(["broken_link"]);
  });

  it("finds a deleted message (a missing sequence), junk that is not an event, and a stripped chain", async () => {
    const deleted = await copy((ms) => ms, async (stream) => {
      await jsm.streams.deleteMessage(stream, 3);
    });
    expect(kinds(deleted.problems)).toContain("missing_sequence");
    const junk = await copy((ms) => [...ms.slice(0, 2), { subject: ms[0]!.subject, data: enc.encode("not json") }, ...ms.slice(2)]);
    expect(kinds(junk.problems)).toEqual(["not_an_event"]);
    const i = firstOnSubjectWithNext();
    const next = original.findIndex((m, j) => j > i && m.subject === original[i]!.subject);
    const stripped = await copy((ms) => ms.map((m, j) => (j === next ? { ...m, data: bytes({ ...json(m.data), hash: undefined, prevHash: undefined }) } : m)));
    expect(kinds(stripped.problems)).toContain("unchained_after_chained");
  });

  it("counts events written before chains as unchained, not as failures", async () => {
    const legacy = await copy((ms) => ms.map((m) => ({ ...m, data: bytes({ ...json(m.data), hash: undefined, prevHash: undefined }) })));
    expect(legacy).toMatchObject({ chained: 0, unchained: original.length, problems: [] });
  });
});
