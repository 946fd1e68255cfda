import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, JetStreamApiError, PubHeaders } from "@nats-io/jetstream";
import { connectNats } from "../../services/nats.js";
import { EventStore, WrongLastSequenceError } from "../../services/event-store.js";
import { naming } from "../../events/subjects.js";
import type { LedgerEvent } from "../../schemas/events.js";
import { startNatsCluster, type NatsCluster } from "../support/servers.js";
import { eventually } from "../support/eventually.js";
import { REDIS_URL, deleteRedisKeys, uniquePrefix } from "../support/env.js";
import { MemledgerError } from "../../schemas/errors.js";
import {
  Agents,
  MemledgerProcess,
  PROPOSALS_ONLY,
  checkClaims,
  cliEnv,
  compareReadModels,
  openStore,
  readStream,
  runCli,
  treeDigest,
  verifyLedger,
  whileUnavailable,
} from "../../bench/chaos-driver.js";
import { envelopes } from "../../testing/index.js";

/** A valid event of its own (a task opened), for appends that exercise the store rather than a decider. */
const eventFor = (aggregateId: string, title: string): LedgerEvent => {
  const id = randomUUID();
  const [event] = envelopes<LedgerEvent>([{ type: "claim.task_opened", data: { name: aggregateId, title, priority: 3 } }], {
    id,
    correlationId: id,
    aggregateId,
    app: "race",
    actor: { kind: "agent", id: "racer" },
    time: new Date().toISOString(),
  });
  return event!;
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
    // A cluster that just formed may not place an R3 stream yet ("no suitable peers"): unavailable, retried.
    const stream = await whileUnavailable(() => stores[0]!.ensureAppStream("race"));
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

  it("16 agents write keyed proposals through `up --replicas 3` while nodes are SIGKILLed and restarted: every acknowledged command is in the log exactly once, read models equal a rebuild", async () => {
    const prefix = uniquePrefix("clus");
    const app = "clusapp";
    const dataDir = await mkdtemp(join(tmpdir(), "memledger-cluster-"));
    const up = new MemledgerProcess("up", ["up", "--nats", cluster.urls, "--prefix", prefix, "--replicas", "3"], cliEnv({ MEMLEDGER_DATA: join(dataDir, "up"), MEMLEDGER_VECTORS: "off", REDIS_URL }));
    // Each agent connects to a node of its own first (and fails over to the others): commands enter through every node.
    const agentConns = await Promise.all(
      Array.from({ length: 16 }, (_, i) => {
        const urls = cluster.servers.map((s) => `127.0.0.1:${s.port}`);
        const mine = [...urls.slice(i % urls.length), ...urls.slice(0, i % urls.length)];
        return connect({ servers: mine, noRandomize: true, reconnect: true, maxReconnectAttempts: -1, reconnectTimeWait: 250, name: `agent-${i}` });
      }),
    );
    const admin = await connectNats({ servers: cluster.urls, name: "cluster-admin" });
    const jsm = await jetstreamManager(admin);
    const stream = naming(prefix).appStream(app);
    let kills = 0;
    const t0 = Date.now();
    const phase = (what: string) => console.log(`cluster: ${what} at ${Date.now() - t0} ms`);
    try {
      await up.start();
      phase("up ready");
      // The agents write until both kills are over (and a second longer), so every kill lands mid-write.
      const agents = new Agents({ prefix, app, connections: agentConns, workload: PROPOSALS_ONLY, seed: prefix, label: "writer", retryForMs: 90_000, pauseMs: 400 }).start();
      await eventually("the app stream exists with some proposals", async () => ((await jsm.streams.info(stream).catch(() => null))?.state.messages ?? 0) > 16 || undefined);

      // Kill the app stream's leader mid-write, then the node that hosts most of the stream's consumers
      // (the projections' ordered consumers are single-replica): each comes back on its own store.
      const nodeIndex = (name: string | undefined) => Math.max(0, cluster.servers.findIndex((_, i) => name === `memledger-test-n${i}`));
      for (const pick of ["stream leader", "consumers' host"] as const) {
        let victim = nodeIndex((await jsm.streams.info(stream)).cluster?.leader);
        if (pick === "consumers' host") {
          const hosted = new Map<number, number>();
          for await (const c of jsm.consumers.list(stream)) hosted.set(nodeIndex(c.cluster?.leader), (hosted.get(nodeIndex(c.cluster?.leader)) ?? 0) + 1);
          victim = [...hosted.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? (victim + 1) % cluster.servers.length;
        }
        phase(`kill ${pick}`);
        await cluster.servers[victim]!.kill("SIGKILL");
        kills++;
        await new Promise((r) => setTimeout(r, 1_500));
        await cluster.servers[victim]!.restart();
        await eventually(`node ${victim} rejoins and the stream has three current replicas`, async () => {
          const info = await jsm.streams.info(stream).catch(() => null);
          return info?.cluster?.leader && info.cluster.replicas?.length === 2 && info.cluster.replicas.every((r) => r.current && !r.offline) ? true : undefined;
        }, 60_000, 250);
      }
      phase("nodes back");
      await new Promise((r) => setTimeout(r, 1_000));
      const ledger = await agents.stop();
      phase("agents done");
      console.log(`cluster: ${kills} node kills survived; ${ledger.acks.length} proposals acknowledged, ${ledger.retries} retries after unavailable, ${ledger.unresolved.length} unresolved, ${ledger.refused.length} refused`);
      expect(ledger.refused, JSON.stringify(ledger.refused)).toEqual([]);
      expect(ledger.unresolved, JSON.stringify(ledger.unresolved)).toEqual([]);
      expect(ledger.acks.length).toBeGreaterThan(16);

      const report = await verifyLedger(admin, prefix, app, ledger);
      expect(report.lost).toEqual([]);
      expect(report.duplicates).toEqual([]);
      // Nothing but the acknowledged proposals: one event each.
      expect(report.events).toBe(ledger.acks.length);
      await expectReplicasIdentical(stream);

      phase("verified");
      // #4320 through the whole command path: the 16 agents claim one existing task at once, round after round.
      const clients = agents.clients;
      for (let round = 0; round < 8; round++) {
        const task = `contested-${round}`;
        await whileUnavailable(() => clients[0]!.openTask(task, { key: `open-${task}` }));
        const outcomes = await Promise.all(
          clients.map((c, i) =>
            c.claim(task, { ttlMs: 600_000, key: `claim-${task}-${i}` }).then(
              () => "won",
              (err: unknown) => (err instanceof MemledgerError ? err.code : String(err)),
            ),
          ),
        );
        expect(outcomes.filter((o) => o === "won"), `round ${round}: ${outcomes.join(", ")}`).toHaveLength(1);
        expect(outcomes.filter((o) => o !== "won").every((o) => o === "conflict"), outcomes.join(", ")).toBe(true);
      }
      expect(checkClaims(await readStream(await openStore(admin, prefix), stream))).toEqual([]);

      phase("claims raced");
      const readModels = await compareReadModels({
        prefix,
        apps: [app],
        instances: [{ name: "up", dataDir: join(dataDir, "up") }],
        scratchDir: dataDir,
        redisUrl: REDIS_URL,
        queries: ["writer3"],
        nc: admin,
        client: agents.clients[3],
        log: (line) => console.log(`read models: ${line}`),
      });
      phase("read models compared");
      expect(readModels.differences).toEqual([]);
      expect(readModels.claimDifferences).toEqual([]);
      // And the operator's own command: `memledger rebuild files` into another directory gives the instance's tree.
      const rebuilt = join(dataDir, "cli-rebuilt");
      const ran = await runCli(["rebuild", "files", "--nats", cluster.urls, "--prefix", prefix, "--app", app], cliEnv({ MEMLEDGER_DATA: rebuilt, MEMLEDGER_VECTORS: "off", REDIS_URL }));
      expect(ran.code, ran.stderr).toBe(0);
      expect((await treeDigest(join(rebuilt, "files", app))).digest).toBe((await treeDigest(join(dataDir, "up", "files", app))).digest);
    } catch (err) {
      console.error(`up output:\n${up.output}`);
      throw err;
    } finally {
      await up.stop();
      await Promise.allSettled(agentConns.map((nc) => nc.close()));
      await admin.close();
      await deleteRedisKeys(prefix);
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 240_000);
});
