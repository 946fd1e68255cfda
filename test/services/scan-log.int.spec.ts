import { jetstream } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { naming } from "../../events/subjects.js";
import { EventStore, type StoredEvent } from "../../services/event-store.js";
import { startLedger, type Ledger } from "../support/env.js";

/**
 * `scanLog` is how the `log` verb reads (and readLog, under the dream gates and the tests): one consumer
 * per scan, batches oldest first, stopped by the reader or by the stream's end as the scan began, and no
 * consumer left behind whatever happened. Structural decoding, so what is not an event still throws.
 */
const APP = "scan";

describe("EventStore.scanLog", () => {
  let ledger: Ledger;
  let store: EventStore;
  let stream: string;
  let all: StoredEvent[];

  beforeAll(async () => {
    ledger = await startLedger({ app: APP });
    store = await EventStore.open(ledger.nc, naming(ledger.prefix));
    stream = store.names.appStream(APP);
    const agent = ledger.client("agent-a");
    for (let i = 0; i < 25; i++) await agent.propose({ scope: "app", kind: "fact", title: `fact ${i}`, body: `body ${i}` });
    all = await store.readLog(stream, { limit: 1000 });
  }, 60_000);
  afterAll(async () => {
    await ledger?.cleanup();
  });

  const consumerCount = async () => (await store.jsm.streams.info(stream)).state.consumer_count;
  const seqs = (events: readonly StoredEvent[]) => events.map((e) => e.seq);

  it("hands every event over once, oldest first, in batches of at most batchSize, from sinceSeq", async () => {
    expect(all).toHaveLength(25);
    const batches: number[][] = [];
    await store.scanLog(stream, { sinceSeq: all[3]!.seq, batchSize: 4 }, (batch) => {
      batches.push(seqs(batch));
      return true;
    });
    expect(batches.every((b) => b.length >= 1 && b.length <= 4)).toBe(true);
    expect(batches.flat()).toEqual(seqs(all.slice(3)));
    expect(await consumerCount()).toBe(0);
  });

  it("stops when the reader says so, and deletes its consumer", async () => {
    let calls = 0;
    await store.scanLog(stream, { batchSize: 5 }, () => ++calls < 2);
    expect(calls).toBe(2);
    expect(await consumerCount()).toBe(0);
    // readLog on top of it: exactly `limit`, the first ones.
    expect(seqs(await store.readLog(stream, { limit: 7 }))).toEqual(seqs(all.slice(0, 7)));
  });

  it("ends at the stream's end as it began: what is appended meanwhile is left for the next scan", async () => {
    const seen: number[] = [];
    const agent = ledger.client("agent-a");
    let appended = false;
    await store.scanLog(stream, { batchSize: 5 }, async (batch) => {
      seen.push(...seqs(batch));
      if (!appended) {
        appended = true;
        await agent.propose({ scope: "app", kind: "fact", title: "written during the scan", body: "later" });
      }
      return true;
    });
    expect(seen).toEqual(seqs(all));
    const after = await store.readLog(stream, { sinceSeq: all.at(-1)!.seq + 1, limit: 10 });
    expect(after).toHaveLength(1);
    all = [...all, ...after];
  });

  it("a reader that throws gets its error back, and no consumer is left", async () => {
    const err = await store.scanLog(stream, { batchSize: 3 }, () => {
      throw new Error("reader failed");
    }).catch((e: unknown) => e);
    expect((err as Error).message).toBe("reader failed");
    expect(await consumerCount()).toBe(0);
  });

  it("bytes that are not an event stop the scan with `invalid`, after the events before them", async () => {
    const junkSeq = (await jetstream(ledger.nc).publish(store.names.aggregate(APP, "memory", "00000000-0000-7000-8000-00000000000f"), new TextEncoder().encode('{"not":"an event"}'))).seq;
    const seen: number[] = [];
    const err = await store.scanLog(stream, { sinceSeq: all.at(-1)!.seq, batchSize: 1 }, (batch) => {
      seen.push(...seqs(batch));
      return true;
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "invalid" });
    expect(seen).toEqual([all.at(-1)!.seq]);
    expect(junkSeq).toBeGreaterThan(all.at(-1)!.seq);
    expect(await consumerCount()).toBe(0);
  });

  it("a stream with nothing from sinceSeq on calls the reader never", async () => {
    let calls = 0;
    await store.scanLog(stream, { sinceSeq: 1_000_000 }, () => {
      calls++;
      return true;
    });
    expect(calls).toBe(0);
  });
});
