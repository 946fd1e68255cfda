import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { headers, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, JetStreamApiError, PubHeaders } from "@nats-io/jetstream";
import { connectNats } from "../../services/nats.js";
import { EventStore, WrongLastSequenceError } from "../../services/event-store.js";
import { naming } from "../../events/subjects.js";
import { LedgerEvent } from "../../schemas/events.js";
import { startNatsCluster, type NatsCluster } from "../support/servers.js";
import { eventually } from "../support/eventually.js";
import { uniquePrefix } from "../support/env.js";

/** A valid event of its own (a task opened), for appends that exercise the store rather than a decider. */
const eventFor = (aggregateId: string, title: string): LedgerEvent => {
  const id = randomUUID();
  return LedgerEvent.parse({
    id,
    type: "claim.task_opened",
    schemaVersion: 1,
    aggregateId,
    app: "race",
    scope: "app",
    actor: { kind: "agent", id: "racer" },
    sessionId: null,
    transcriptRef: null,
    git: null,
    causationId: null,
    correlationId: id,
    time: new Date().toISOString(),
    data: { name: aggregateId, title, priority: 3 },
  });
};

describe("a 3-node JetStream cluster on loopback, streams at R3", () => {
  let cluster: NatsCluster;
  const conns: NatsConnection[] = [];

  beforeAll(async () => {
    cluster = await startNatsCluster(3);
  }, 60_000);

  afterAll(async () => {
    await Promise.allSettled(conns.map((nc) => nc.close()));
    await cluster?.stop();
  });

  /**
   * Every replica holds the same messages at the same sequences. A direct get is answered by a replica of
   * the server the client is connected to (queue subscribers on the local server are preferred), so one
   * connection per node reads that node's copy.
   */
  async function expectReplicasIdentical(stream: string): Promise<void> {
    const readers = await Promise.all(cluster.servers.map((server) => connectNats({ servers: server.url, reconnect: false, name: "replica-reader" })));
    try {
      const managers = await Promise.all(readers.map((nc) => jetstreamManager(nc)));
      const last = (await managers[0]!.streams.info(stream)).state.last_seq;
      const copyOf = async (node: number) => {
        const out: string[] = [];
        for (let seq = 1; seq <= last; seq++) {
          const msg = await managers[node]!.direct.getMessage(stream, { seq }).catch(() => null);
          out.push(msg ? `${msg.seq} ${msg.subject} ${msg.string()}` : `${seq} missing`);
        }
        return out.join("\n");
      };
      await eventually(`every replica of ${stream} holds the same ${last} messages`, async () => {
        const copies = await Promise.all(readers.map((_, node) => copyOf(node)));
        return copies.every((c) => c === copies[0]) ? true : undefined;
      }, 30_000, 500);
    } finally {
      await Promise.allSettled(readers.map((nc) => nc.close()));
    }
  }

  it("nats-server #4320: of concurrent appends expecting one subject sequence on an R3 stream, exactly one wins", async () => {
    const prefix = uniquePrefix("race");
    // One connection per node: the writers' appends enter the cluster through different servers.
    for (const server of cluster.servers) conns.push(await connectNats({ servers: server.url, name: `race-${server.port}` }));
    const stores = await Promise.all(conns.map((nc) => EventStore.open(nc, naming(prefix), { replicas: 3 })));
    const stream = await stores[0]!.ensureAppStream("race");
    const jsm = await jetstreamManager(conns[0]!);
    await eventually("the R3 stream has a leader and two current replicas", async () => {
      const info = await jsm.streams.info(stream);
      return info.cluster?.leader && info.cluster.replicas?.length === 2 && info.cluster.replicas.every((r) => r.current) ? info : undefined;
    });
    const writersPerNode = 4;
    const rounds = 30;
    const race = async (subject: string, expected: number, append: (node: number, writer: number) => Promise<unknown>) => {
      const outcomes = await Promise.all(
        conns.flatMap((_, node) =>
          Array.from({ length: writersPerNode }, (_, writer) =>
            append(node, writer).then(
              () => 1,
              (err: unknown) => {
                if (err instanceof WrongLastSequenceError || (err instanceof JetStreamApiError && err.code === 10071)) return 0;
                throw err;
              },
            ),
          ),
        ),
      );
      return outcomes.reduce((a, b) => a + b, 0);
    };

    // The server alone: raw publishes with only the per-subject expectation (what memledger sent before).
    const raw: number[] = [];
    for (let round = 0; round < 10; round++) {
      const subject = `${prefix}.app.race.raw.r${round}`;
      const base = (await jetstream(conns[0]!).publish(subject, "base")).seq;
      raw.push(
        await race(subject, base, (node, writer) => {
          const h = headers();
          h.set(PubHeaders.ExpectedLastSubjectSequenceHdr, String(base));
          return jetstream(conns[node]!).publish(subject, `raw ${node}.${writer}`, { headers: h });
        }),
      );
    }

    // memledger's append: half the rounds on an empty subject (expected 0, how a keyed proposal starts),
    // half on a subject with events (expected = its sequence, how every later write on an aggregate goes).
    const wins: number[] = [];
    for (let round = 0; round < rounds; round++) {
      const subject = `${prefix}.app.race.memory.r${round}`;
      let expected = 0;
      if (round % 2 === 1) expected = (await stores[0]!.append(subject, eventFor(`r${round}`, "base"), 0)).seq;
      wins.push(await race(subject, expected, (node, writer) => stores[node]!.append(subject, eventFor(`r${round}`, `w${node}-${writer}`), expected)));
    }
    console.log(`#4320 on nats-server ${stores[0]!.features.version}, R3: winners per round of ${conns.length * writersPerNode} raw publishes ${JSON.stringify(raw)}; through EventStore.append ${JSON.stringify(wins)}`);
    expect(wins).toEqual(Array(rounds).fill(1));
    // The log agrees with the acks: one event per round, plus the base of odd rounds; every replica the same.
    const info = await jsm.streams.info(stream, { subjects_filter: `${prefix}.app.race.memory.>` });
    for (let round = 0; round < rounds; round++) expect(info.state.subjects?.[`${prefix}.app.race.memory.r${round}`]).toBe(round % 2 === 1 ? 2 : 1);
    await expectReplicasIdentical(stream);
    await jsm.streams.delete(stream);
  });
});
