import { jetstream } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { naming } from "../../events/subjects.js";
import { parsePolicy } from "../../services/auth/load.js";
import { EventStore } from "../../services/event-store.js";
import { Quarantines, type QuarantineLookup, type QuarantineRecord } from "../../services/quarantine.js";
import { startLedger, type Ledger } from "../support/env.js";

/**
 * A replay skips what an operator quarantined, so before it hands over an event it must know every
 * quarantine of a sequence it will read. The lookup has two ways (services/quarantine.ts): a scan of the
 * messages from where the replay starts, and a listing of the stream's quarantine subjects. Both must
 * find exactly the same quarantines, from any position; junk on a quarantine subject quarantines nothing
 * either way; and a replay skips what they found.
 */

const APP = "qlook";
const POLICY = parsePolicy({
  version: 1,
  apps: [APP],
  roles: {
    writer: { allow: [{ verbs: ["*"], scopes: ["app"], autoApprove: true }] },
    admin: { allow: [{ verbs: ["*"], scopes: ["*", "org"] }] },
  },
  actors: { "agent:coder": { roles: ["writer"] }, "human:ops": { roles: ["admin"] } },
});
const JUNK = new TextEncoder().encode(JSON.stringify({ not: "an event" }));

describe("finding the quarantines of a stream: scan and listing agree", () => {
  let ledger: Ledger;
  let store: EventStore;
  let stream: string;
  /** Sequences of junk, in order; the first two and the last are quarantined, the third is not. */
  const junk: number[] = [];
  /** Where the quarantine events themselves are stored. */
  const quarantineEvents: number[] = [];

  beforeAll(async () => {
    ledger = await startLedger({ app: APP, policy: POLICY });
    store = await EventStore.open(ledger.nc, naming(ledger.prefix));
    stream = store.names.appStream(APP);
    const coder = ledger.client("agent:coder");
    const ops = ledger.client("human:ops");
    const js = jetstream(ledger.nc);
    // Memories between the junk, so that the stream has many subjects and many messages.
    const propose = async (n: number) => {
      for (let i = 0; i < n; i++) await coder.propose({ scope: "app", kind: "fact", title: `fact ${junk.length}.${i}`, body: `body ${i}` });
    };
    const memorySubject = store.names.aggregate(APP, "memory", "00000000-0000-7000-8000-000000000001");
    for (let round = 0; round < 4; round++) {
      await propose(5);
      junk.push((await js.publish(memorySubject, JUNK)).seq);
    }
    await propose(3);
    for (const seq of [junk[0]!, junk[1]!, junk[3]!]) quarantineEvents.push((await ops.quarantine(seq, `junk at ${seq}`)).eventSeq);
    // Junk on the quarantine subject of the unquarantined junk: not a quarantine event, so it sets nothing aside.
    await js.publish(store.names.quarantine(APP, junk[2]!), JUNK);
    await propose(2);
  }, 60_000);

  afterAll(async () => {
    await ledger?.cleanup();
  });

  const lookup = (fromSeq: number, how?: QuarantineLookup) => new Quarantines(store.jsm, store.names).since(stream, fromSeq, how);
  const seqs = (found: Map<number, QuarantineRecord>) => [...found.keys()].sort((a, b) => a - b);

  it("from the start, both find the three quarantines and nothing for the junk on a quarantine subject", async () => {
    const scanned = await lookup(1, "scan");
    const listed = await lookup(1, "listing");
    expect(seqs(scanned)).toEqual([junk[0], junk[1], junk[3]]);
    expect(listed).toEqual(scanned);
    expect(scanned.get(junk[1]!)).toMatchObject({ seq: junk[1], eventSeq: quarantineEvents[1], actor: "human:ops", reason: `junk at ${junk[1]}` });
  });

  it("from any position, both find the quarantines of sequences from there on", async () => {
    const last = await store.lastSeq(stream);
    for (let from = 1; from <= last + 1; from++) {
      const scanned = await lookup(from, "scan");
      expect(seqs(scanned)).toEqual([junk[0]!, junk[1]!, junk[3]!].filter((seq) => seq >= from));
      expect(await lookup(from, "listing")).toEqual(scanned);
    }
  });

  it("left to choose, it lists for a long replay and scans a short tail, with the same result", async () => {
    const { state } = await store.jsm.streams.info(stream);
    expect(state.last_seq).toBeGreaterThan(state.num_subjects ?? Number.POSITIVE_INFINITY);
    expect(await lookup(1)).toEqual(await lookup(1, "scan"));
    expect(await lookup(state.last_seq - 2)).toEqual(new Map());
  });

  it("a replay from the start, or from between the junk, skips exactly the quarantined sequences", async () => {
    const last = await store.lastSeq(stream);
    for (const from of [1, junk[1]!, junk[2]! + 1]) {
      const read: number[] = [];
      await store.replayMessages(stream, { fromSeq: from, batchSize: 7 }, (messages) => void read.push(...messages.map((m) => m.seq)));
      const skipped = new Set([junk[0]!, junk[1]!, junk[3]!]);
      const expected = Array.from({ length: last - from + 1 }, (_, i) => from + i).filter((seq) => !skipped.has(seq));
      expect(read).toEqual(expected);
    }
  });
});
