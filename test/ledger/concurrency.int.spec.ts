import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { AppendOutcome } from "../../schemas/commands.js";
import { MemledgerError } from "../../schemas/errors.js";
import { MemoryClient, type LogEntry } from "../../services/client.js";
import { CommandService, type MemoryView } from "../../services/command-service.js";
import { connectNats } from "../../services/nats.js";
import { NATS_URL, startLedger, streamMessageCount, type Ledger } from "../support/env.js";
import { closeAll, json, openConnections, probe, rejectionOf } from "./support.js";

const WRITERS = 50;

/** Versions of a memory as `show` and `log` see them: both must be the same single line 1..n. */
async function history(client: MemoryClient, memoryId: string): Promise<{ shown: MemoryView; log: LogEntry[] }> {
  const shown = await client.show(memoryId);
  const log = await client.log({ memoryId, limit: 10_000 });
  return { shown, log };
}

const proposedVersions = (log: LogEntry[]) =>
  log.filter((e) => e.type === "memory.proposed").map((e) => (e.data as { version: number }).version);

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("concurrent writers on one memory", () => {
  let ledger: Ledger;
  let connections: NatsConnection[];
  let writers: MemoryClient[];

  beforeAll(async () => {
    // One connection per writer: the requests really race on the wire, not inside one client's socket.
    connections = await openConnections(WRITERS, "writer");
  });
  afterAll(async () => closeAll(connections ?? []));

  beforeEach(async () => {
    ledger = await startLedger();
    writers = connections.map((nc, i) => new MemoryClient(nc, { app: ledger.app, as: `writer-${i}`, prefix: ledger.prefix }));
  });
  afterEach(async () => ledger?.cleanup());

  it("50 revisions with the same expectedSeq: exactly one wins, 49 conflict naming the current sequence", async () => {
    const author = ledger.client("author");
    const v1 = await author.propose({ title: "Deploys go through CI", body: "Never deploy from a laptop." });
    const stream = ledger.service.names.appStream(ledger.app);
    expect(await streamMessageCount(ledger.nc, stream)).toBe(1);

    const results = await Promise.allSettled(
      writers.map((w, i) =>
        w.propose({ memoryId: v1.memoryId, expectedSeq: v1.seq, title: `Deploys go through CI (rev ${i})`, body: `Revision by writer ${i}.` }),
      ),
    );

    const won = results.flatMap((r, i) => (r.status === "fulfilled" ? [{ i, outcome: r.value }] : []));
    const lost = results.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(WRITERS - 1);
    const winner = won[0]!;
    expect(winner.outcome).toMatchObject({ memoryId: v1.memoryId, version: 2, replayed: false, type: "memory.proposed" });
    expect(winner.outcome.seq).toBeGreaterThan(v1.seq);

    for (const err of lost) {
      expect(err).toBeInstanceOf(MemledgerError);
      const e = err as MemledgerError;
      expect(e.code).toBe("conflict");
      // The loser learns where the memory is now, so it can reread and decide again.
      expect(e.details).toMatchObject({ currentSeq: winner.outcome.seq, expectedSeq: v1.seq });
      expect(e.message).toContain(String(winner.outcome.seq));
    }

    const { shown, log } = await history(author, v1.memoryId);
    expect(shown.versions.map((v) => v.version)).toEqual([1, 2]);
    expect(shown.versions[1]!.proposedBy).toEqual({ kind: "agent", id: `writer-${winner.i}` });
    expect(shown.versions[1]!.body).toBe(`Revision by writer ${winner.i}.`);
    expect(shown.seq).toBe(winner.outcome.seq);
    expect(proposedVersions(log)).toEqual([1, 2]);
    expect(log.map((e) => e.seq)).toEqual([v1.seq, winner.outcome.seq]);
    expect(await streamMessageCount(ledger.nc, stream)).toBe(2);
  });

  it("two service instances on one prefix, 50 writers without expectedSeq: all succeed, versions 2..51, no gaps or duplicates", async () => {
    // A second instance on its own connection joins the same queue group: requests are shared out.
    const nc2 = await connectNats({ servers: NATS_URL, name: `second-${ledger.prefix}` });
    const second = await CommandService.start(nc2, { prefix: ledger.prefix });
    try {
      const first = probe(ledger.service);
      const other = probe(second);

      const author = ledger.client("author");
      const v1 = await author.propose({ title: "Cache keys", body: "Cache keys carry the app name." });

      const outcomes = await Promise.all(
        writers.map((w, i) => w.propose({ memoryId: v1.memoryId, title: `Cache keys (rev ${i})`, body: `Body from writer ${i}.` })),
      );

      // Every writer was acknowledged with its own version; together they are exactly 2..51.
      const versions = outcomes.map((o) => o.version!).sort((a, b) => a - b);
      expect(versions).toEqual(range(2, WRITERS + 1));
      expect(new Set(outcomes.map((o) => o.seq)).size).toBe(WRITERS);
      expect(outcomes.every((o) => o.replayed === false && o.memoryId === v1.memoryId)).toBe(true);

      // Both instances served writes, and stale views (cache or concurrent decisions) were retried.
      expect(first.executions).toBeGreaterThan(0);
      expect(other.executions).toBeGreaterThan(0);
      expect(first.executions + other.executions).toBe(WRITERS + 1);
      expect(first.appended + other.appended).toBe(WRITERS + 1);
      expect(first.staleAppends + other.staleAppends).toBeGreaterThan(0);

      // No lost update: each acknowledged write is in the log at the sequence it was told, with its body.
      const { shown, log } = await history(author, v1.memoryId);
      expect(shown.versions.map((v) => v.version)).toEqual(range(1, WRITERS + 1));
      expect(proposedVersions(log)).toEqual(range(1, WRITERS + 1));
      const bySeq = new Map(log.map((e) => [e.seq, e]));
      outcomes.forEach((o, i) => {
        const stored = bySeq.get(o.seq);
        expect(stored?.id).toBe(o.eventId);
        expect(stored?.actor).toEqual({ kind: "agent", id: `writer-${i}` });
        expect((stored?.data as { version: number; body: string }).version).toBe(o.version);
        expect((stored?.data as { version: number; body: string }).body).toBe(`Body from writer ${i}.`);
      });
      expect(await streamMessageCount(ledger.nc, ledger.service.names.appStream(ledger.app))).toBe(WRITERS + 1);
    } finally {
      await second.stop();
      await nc2.close();
    }
  });
});

describe("an instance with a stale cache", () => {
  let ledger: Ledger;
  let nc2: NatsConnection;
  let a: CommandService;
  let b: CommandService;

  beforeAll(async () => {
    ledger = await startLedger();
    a = ledger.service;
    nc2 = await connectNats({ servers: NATS_URL, name: `b-${ledger.prefix}` });
    b = await CommandService.start(nc2, { prefix: ledger.prefix });
  });
  afterAll(async () => {
    await b?.stop();
    await nc2?.close();
    await ledger?.cleanup();
  });

  /**
   * Sends a command to one chosen instance. Both instances share a queue group, so a NATS request
   * could land on either; `dispatch` is the same entry point the subscription calls, minus the hop.
   */
  async function via(service: CommandService, verb: "propose", payload: Record<string, unknown>): Promise<AppendOutcome> {
    const subject = ledger.client("agent-x").subjectFor(verb);
    return (await service.dispatch(subject, json(payload))) as AppendOutcome;
  }

  it("write through A, then B, then A again: A reloads and appends the next version, never over B's", async () => {
    const probeA = probe(a);
    const probeB = probe(b);

    const v1 = await via(a, "propose", { title: "Ports", body: "The API listens on 8080." }); // A caches seq v1.seq
    const v2 = await via(b, "propose", { memoryId: v1.memoryId, title: "Ports", body: "The API listens on 8081." });
    expect(v2.version).toBe(2);
    expect(probeB.staleAppends).toBe(0); // B had no cache: it read the log first

    // A still believes the memory is at v1.seq and decides "version 2"; the append is refused, A
    // reloads and decides again: version 3, after B's.
    const v3 = await via(a, "propose", { memoryId: v1.memoryId, title: "Ports", body: "The API listens on 8082." });
    expect(v3.version).toBe(3);
    expect(v3.seq).toBeGreaterThan(v2.seq);
    expect(probeA.staleAppends).toBe(1);

    // B is now the stale one (it last saw v2). A sender who read the current sequence must not get a
    // false conflict from B's cache: B rereads the log before judging expectedSeq.
    const v4 = await via(b, "propose", { memoryId: v1.memoryId, expectedSeq: v3.seq, title: "Ports", body: "The API listens on 8083." });
    expect(v4.version).toBe(4);

    // A is stale again (it last saw v3); a sender holding v3's sequence is the one that is out of date.
    const err = await rejectionOf(via(a, "propose", { memoryId: v1.memoryId, expectedSeq: v3.seq, title: "Ports", body: "stale" }));
    expect(err.code).toBe("conflict");
    expect(err.details).toMatchObject({ currentSeq: v4.seq, expectedSeq: v3.seq });

    const client = ledger.client("reader");
    const { shown, log } = await history(client, v1.memoryId);
    expect(shown.versions.map((v) => [v.version, v.body])).toEqual([
      [1, "The API listens on 8080."],
      [2, "The API listens on 8081."],
      [3, "The API listens on 8082."],
      [4, "The API listens on 8083."],
    ]);
    expect(proposedVersions(log)).toEqual([1, 2, 3, 4]);
    expect(log.map((e) => e.seq)).toEqual([v1.seq, v2.seq, v3.seq, v4.seq]);
    expect(await streamMessageCount(ledger.nc, a.names.appStream(ledger.app))).toBe(4);
  });

  it("a stale instance answers a request sent over NATS the same way (queue group, either instance)", async () => {
    const client = ledger.client("agent-y");
    const p = await client.propose({ title: "Queue", body: "Either instance may answer." });
    // Alternate writes between the instances directly, then go through NATS a few times: whichever
    // instance answers, each write lands on top of the last one.
    await via(b, "propose", { memoryId: p.memoryId, title: "Queue", body: "b1" });
    await via(a, "propose", { memoryId: p.memoryId, title: "Queue", body: "a1" });
    const viaNats: AppendOutcome[] = [];
    for (let i = 0; i < 6; i++) viaNats.push(await client.propose({ memoryId: p.memoryId, title: "Queue", body: `n${i}` }));
    expect(viaNats.map((o) => o.version)).toEqual([4, 5, 6, 7, 8, 9]);
    const shown = await client.show(p.memoryId);
    expect(shown.versions.map((v) => v.body)).toEqual(["Either instance may answer.", "b1", "a1", "n0", "n1", "n2", "n3", "n4", "n5"]);
  });
});
