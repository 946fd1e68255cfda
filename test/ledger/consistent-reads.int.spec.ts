import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { RetrievedMemory } from "../../projections/search/index.js";
import type { AppendOutcome } from "../../schemas/commands.js";
import { MemoryClient } from "../../services/client.js";
import { CommandService } from "../../services/command-service.js";
import { EventStore } from "../../services/event-store.js";
import type { ContextPack } from "../../services/hydration/pack.js";
import { connectNats } from "../../services/nats.js";
import { ProjectionSupervisor } from "../../services/projection-supervisor.js";
import { openReadModels, readModelConfig, type ReadModelConfig } from "../../services/read-models.js";
import { defaultComponents, readModelsAtOf, startMemledger, type Component, type Memledger } from "../../services/runtime.js";
import { naming } from "../../events/subjects.js";
import { WordHashEmbedder } from "../search/support.js";
import { NATS_URL, REDIS_URL, deleteRedisKeys, deleteStreams, uniquePrefix } from "../support/env.js";
import { json, rejectionOf } from "./support.js";

/** Runs `make` with environment variables set, restoring them after (defaultComponents reads MEMLEDGER_DATA). */
function withEnv<T>(vars: Record<string, string>, make: () => T): T {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  try {
    return make();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/**
 * Issue 8 item 3: with two instances up, a query answered from read models gives the same answer from
 * either instance right after a write through the other: the sender's highest sequence travels with the
 * query (`minSeq`) and the answering instance waits until its read models applied it.
 */
describe("consistent reads across instances", () => {
  let nc: NatsConnection;
  let root: string;
  const prefix = uniquePrefix("cr");
  const app = "crapp";

  beforeAll(async () => {
    nc = await connectNats({ servers: NATS_URL, name: `test-${prefix}` });
    root = await mkdtemp(path.join(tmpdir(), "memledger-consistent-"));
  });

  afterAll(async () => {
    await deleteStreams(nc, prefix);
    await deleteRedisKeys(prefix);
    await nc.close();
    await rm(root, { recursive: true, force: true });
  });

  describe("two `up` runtimes (each its own read-model directories) on one NATS", () => {
    const runtimes: Memledger[] = [];
    afterEach(async () => {
      for (const r of runtimes.splice(0)) await r.stop();
    });

    /** What `memledger up` runs (without the curator), in its own data directory; its command service kept for direct dispatch. */
    async function upInstance(name: string): Promise<{ runtime: Memledger; service: () => CommandService }> {
      const dataDir = path.join(root, name);
      const config: ReadModelConfig = readModelConfig(
        {},
        { filesRoot: path.join(dataDir, "files"), searchDir: path.join(dataDir, "search"), redisUrl: REDIS_URL, vectors: null },
      );
      let service: CommandService | undefined;
      const components = withEnv({ MEMLEDGER_DATA: dataDir }, () => defaultComponents({ readModels: config, curator: false })).map(
        (c): Component =>
          c.name !== "command-service"
            ? c
            : {
                name: c.name,
                async start(ctx) {
                  const running = await c.start(ctx);
                  service = running as CommandService;
                  return running;
                },
              },
      );
      const runtime = await startMemledger({ servers: NATS_URL, prefix, components, onError: () => undefined });
      runtimes.push(runtime);
      return { runtime, service: () => service! };
    }

    it("20 rounds, each write through another instance: hydrate and search from every instance agree right after it", async () => {
      const instances = [await upInstance("one"), await upInstance("two")];
      const subject = (as: string, verb: string) => naming(prefix).command(app, "agent", as, verb);
      const on = <T>(i: number, as: string, verb: string, payload: unknown) =>
        instances[i]!.service().dispatch(subject(as, verb), json(payload)) as Promise<T>;

      for (let round = 0; round < 20; round++) {
        const writer = round % 2;
        const proposed = await on<AppendOutcome>(writer, "author", "propose", {
          title: `Deploy checklist step ${round}`,
          body: `Before deploying, run check number ${round} of the deploy checklist (marker${round}).`,
          kind: "procedure",
          paths: [`deploy/step-${round}.md`],
        });
        const approved = await on<AppendOutcome>(writer, "author", "approve", { memoryId: proposed.memoryId });
        // What an SDK client that made this write sends with its next queries.
        const minSeq = approved.seq;

        const packs: ContextPack[] = [];
        const searches: RetrievedMemory[][] = [];
        for (const i of [1 - writer, writer]) {
          packs.push(await on<ContextPack>(i, "reader", "hydrate", { task: `deploy checklist marker${round}`, paths: [`deploy/step-${round}.md`], minSeq }));
          searches.push(await on<RetrievedMemory[]>(i, "reader", "search", { query: `deploy checklist marker${round}`, limit: 5, minSeq }));
        }
        // The instance that did not take the write already has it, first.
        expect(searches[0]![0]?.memoryId, `round ${round}`).toBe(proposed.memoryId);
        expect(packs[0]!.markdown).toContain(`Deploy checklist step ${round}`);
        expect(searches[1], `round ${round}: search from both instances`).toEqual(searches[0]);
        expect(packs[1], `round ${round}: hydrate from both instances`).toEqual(packs[0]);
      }
    });

    it("through the SDK (either instance answers, by queue group) an agent always reads its own writes", async () => {
      await upInstance("three");
      await upInstance("four");
      const client = new MemoryClient(nc, { app: `${app}2`, as: "writer", prefix });
      for (let round = 0; round < 6; round++) {
        const p = await client.propose({ title: `Runbook ${round}`, body: `Restart the worker pool, step zebra${round}.` });
        await client.approve(p.memoryId);
        expect(client.seenSeq).toBeGreaterThan(p.seq);
        const hits = await client.search(`zebra${round} worker pool`, { limit: 3 });
        expect(hits[0]?.memoryId, `round ${round}`).toBe(p.memoryId);
        const pack = await client.hydrate({ task: `zebra${round}` });
        expect(pack.markdown).toContain(`Runbook ${round}`);
      }
    });
  });

  it("search on an instance whose search index of the app is not loaded is unavailable, not an empty answer", async () => {
    const { startLedger } = await import("../support/env.js");
    // A command service whose search projection has loaded nothing (yet).
    const ledger = await startLedger({ hydration: { searchIndex: () => undefined } });
    try {
      const client = ledger.client("agent-s");
      expect(await client.search("anything")).toEqual([]); // no stream of the app: nothing to find
      await client.propose({ title: "Loaded?", body: "Not on this instance." });
      const err = await rejectionOf(client.search("loaded", { minSeq: 0 }));
      expect(err).toMatchObject({ code: "unavailable", details: { app: ledger.app } });
    } finally {
      await ledger.cleanup();
    }
  });

  describe("one instance whose read models lag", () => {
    let service: CommandService | undefined;
    let supervisor: ProjectionSupervisor | undefined;
    let models: ReturnType<typeof openReadModels> | undefined;
    let serviceNc: NatsConnection | undefined;
    const lagPrefix = uniquePrefix("crl");

    afterEach(async () => {
      await service?.stop();
      await supervisor?.stop();
      await models?.close();
      await serviceNc?.close();
      await deleteStreams(nc, lagPrefix);
      await deleteRedisKeys(lagPrefix);
    });

    it("a minSeq beyond what the read models reach is unavailable within the wait, naming the position and the lag; search is hybrid", async () => {
      serviceNc = await connectNats({ servers: NATS_URL, name: `test-${lagPrefix}` });
      const dataDir = path.join(root, "lag");
      const config = readModelConfig({}, { filesRoot: path.join(dataDir, "files"), searchDir: path.join(dataDir, "search"), redisUrl: REDIS_URL });
      models = openReadModels(lagPrefix, config, { nc: serviceNc, embedder: new WordHashEmbedder() });
      const store = await EventStore.open(serviceNc, naming(lagPrefix));
      supervisor = new ProjectionSupervisor(store, models.definitions, { discoverEveryMs: 100 });
      await supervisor.start();
      const running = supervisor;
      const opened = models;
      service = await CommandService.start(serviceNc, {
        prefix: lagPrefix,
        claims: opened.claims,
        readModelsAt: readModelsAtOf(() => running),
        readWaitMs: 1500,
        hydration: { filesRoot: config.filesRoot, searchIndex: (a) => opened.search.index(a) },
      });
      const client = new MemoryClient(serviceNc, { app, as: "agent-l", prefix: lagPrefix });
      const p = await client.propose({ title: "Webhook retries", body: "Stripe webhook handlers are idempotent.", tags: ["payments"] });
      await client.approve(p.memoryId);

      // The client's own write: waited for (the app's stream is new, so even its discovery), then found by both channels.
      const hits = await client.search("stripe webhook idempotent");
      expect(hits.map((h) => h.memoryId)).toEqual([p.memoryId]);
      expect(Object.keys(hits[0]!.channels).sort()).toEqual(["bm25", "vector"]);
      expect(await client.search("stripe webhook", { mode: "bm25", tags: ["payments"] })).toHaveLength(1);
      expect(await client.search("stripe webhook", { scope: "team:other" })).toEqual([]);

      const ahead = client.seenSeq + 1000;
      const started = Date.now();
      const err = await rejectionOf(client.search("stripe", { minSeq: ahead }));
      const waited = Date.now() - started;
      expect(err.code).toBe("unavailable");
      expect(err.details).toMatchObject({ minSeq: ahead, position: client.seenSeq, lag: 1000 });
      expect(err.message).toContain(`${ahead}`);
      expect(waited).toBeGreaterThanOrEqual(1400);
      const verbs = ["hydrate", "claims", "tasks"] as const;
      const refusals = await Promise.all(verbs.map((verb) => rejectionOf(client.request(verb, { minSeq: ahead }))));
      for (const [i, refused] of refusals.entries()) expect(refused, verbs[i]).toMatchObject({ code: "unavailable", details: { minSeq: ahead } });
    });
  });
});
