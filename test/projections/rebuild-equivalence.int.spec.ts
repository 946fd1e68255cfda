import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { Redis } from "ioredis";
import seedrandom from "seedrandom";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { claimIdOf } from "../../commands/claim.js";
import { naming } from "../../events/subjects.js";
import { encodeEvent } from "../../events/upcast.js";
import { claimsProjection, escapeGlob, unlinkMatching } from "../../projections/claims/index.js";
import { filesProjection, listFiles, treeHash } from "../../projections/files/index.js";
import type { ProjectionDefinition, ProjectionScope } from "../../projections/projection.js";
import { searchMemories, searchProjection, type SearchProjection } from "../../projections/search/index.js";
import type { LedgerEvent } from "../../schemas/events.js";
import { EventStore } from "../../services/event-store.js";
import { connectNats } from "../../services/nats.js";
import { ProjectionRunner, rebuildProjections, statusBucket } from "../../services/projection-runner.js";
import { dumpApp } from "../claims/support.js";
import { embeddingCacheFixture, WordHashEmbedder, type EmbeddingCacheFixture } from "../search/support.js";
import { NATS_URL, REDIS_URL, deleteStreams, uniquePrefix } from "../support/env.js";
import { storedEvent } from "../support/events.js";

const APP = "eqapp";
const WORDS = "payment webhook retry idempotency stripe invoice ledger refund session token cache redis queue deploy rollback schema index timeout breaker fixture".split(" ");
const AGENTS = ["agent-1", "agent-2", "agent-3"];

/**
 * A seeded history touching every event the three projections fold, interleaved the way many agents
 * interleave them (a memory's events spread over the log): revisions, approvals, rejections, rollbacks,
 * supersessions and reinstatements in four scopes, tasks and locks claimed, renewed, released, taken
 * over after a lapse and left held (leases ending in the past and in the future), sessions.
 */
function history(prefix: string, total: number, seed = 7): { subject: string; event: LedgerEvent }[] {
  const random = seedrandom(String(seed));
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const names = naming(prefix);
  const out: { subject: string; event: LedgerEvent }[] = [];
  // The log spans at most total × 20 s and ends at least two hours ago: minute-long leases have all
  // lapsed, day-long ones are all held, and none ends while the test runs (the live and rebuilt keys
  // are read seconds apart).
  let clock = Date.now() - 2 * 3_600_000 - total * 20_000;
  let n = 0;
  const emit = (kind: "memory" | "claim" | "session", id: string, type: LedgerEvent["type"], data: unknown, scope = "app", actor = pick(AGENTS)) => {
    clock += 1 + Math.floor(random() * 19_999);
    const event = storedEvent({
      n: ++n,
      type,
      aggregateId: id,
      app: APP,
      scope,
      actor: { kind: actor.startsWith("human") ? "human" : "agent", id: actor.replace(/^human-/, "") },
      git: random() < 0.5 ? { branch: `feat/${pick(WORDS)}` } : null,
      time: clock,
      data,
    });
    out.push({ subject: names.aggregate(APP, kind, id), event });
  };
  const words = (k: number) => Array.from({ length: k }, () => pick(WORDS)).join(" ");

  function* memory(i: number): Generator<void> {
    const id = `mem-${i}`;
    const scope = pick(["app", "app", "team:payments", `agent:${pick(AGENTS)}`]);
    let version = 0;
    const approved: number[] = [];
    do {
      version++;
      emit("memory", id, "memory.proposed", { version, title: `${words(3)} ${i}`, body: `${words(25)}\n\n- ${words(5)}`, kind: pick(["note", "fact", "decision", "fragile"]), tags: [pick(WORDS)], paths: random() < 0.5 ? [`src/${pick(WORDS)}.ts`] : [], importance: 1 + Math.floor(random() * 5) }, scope);
      yield;
      const roll = random();
      if (roll < 0.75) {
        emit("memory", id, "memory.approved", { version }, scope, "human-rita");
        approved.push(version);
      } else if (roll < 0.9) emit("memory", id, "memory.rejected", { version, reason: `needs work: ${pick(WORDS)}` }, scope, "human-rita");
      else return; // left pending
      yield;
    } while (random() < 0.5 && version < 4);
    if (approved.length >= 2 && random() < 0.4) {
      emit("memory", id, "memory.rolled_back", { fromVersion: approved.at(-1)!, toVersion: approved[0]! }, scope, "human-rita");
      yield;
    }
    if (approved.length > 0 && random() < 0.25) {
      emit("memory", id, "memory.superseded", { by: null, reason: `outdated: ${pick(WORDS)}` }, scope, "human-rita");
      yield;
      if (random() < 0.4) emit("memory", id, "memory.reinstated", { reason: "still true" }, scope, "human-rita");
    }
  }

  function* claim(i: number): Generator<void> {
    const task = random() < 0.6;
    const name = task ? `task-${i}` : `src/${pick(WORDS)}/${i}.ts`;
    const kind = task ? "task" : "lock";
    const id = claimIdOf(kind, name);
    const holder = pick(AGENTS);
    if (task && random() < 0.5) {
      emit("claim", id, "claim.task_opened", { name, title: words(2), priority: 1 + Math.floor(random() * 5) }, "app", "human-rita");
      yield;
    }
    const leaseMs = pick([60_000, 86_400_000]);
    emit("claim", id, "claim.claimed", { kind, name, holder, leaseMs, expiresAt: new Date(clock + leaseMs).toISOString(), takeoverOf: null, priority: task ? 3 : null }, "app", holder);
    yield;
    if (random() < 0.5) {
      emit("claim", id, "claim.renewed", { holder, leaseMs, expiresAt: new Date(clock + leaseMs).toISOString() }, "app", holder);
      yield;
    }
    if (random() < 0.5) emit("claim", id, "claim.released", { holder, done: task && random() < 0.6 }, "app", holder);
  }

  function* session(i: number): Generator<void> {
    const id = `sess-${i}`;
    const agent = pick(AGENTS);
    emit("session", id, "session.started", { agentId: agent, task: words(2), branch: null, worktree: null }, `agent:${agent}`, agent);
    yield;
    emit("session", id, "session.ended", { summary: `${pick(WORDS)} done` }, `agent:${agent}`, agent);
  }

  const active: Generator<void>[] = [];
  let scripts = 0;
  while (out.length < total) {
    while (active.length < 12) {
      const i = scripts++;
      active.push(i % 3 === 2 ? claim(i) : i % 5 === 4 ? session(i) : memory(i));
    }
    const at = Math.floor(random() * active.length);
    if (active[at]!.next().done) active.splice(at, 1);
  }
  return out.slice(0, total);
}

describe("a rebuild produces what the live projections produce", () => {
  let prefix: string;
  let nc: NatsConnection;
  let store: EventStore;
  let root: string;
  let redis: Redis;
  let cache: EmbeddingCacheFixture;
  const runners: ProjectionRunner[] = [];

  beforeEach(async () => {
    prefix = uniquePrefix("rbeq");
    nc = await connectNats({ servers: NATS_URL, name: `test-${prefix}` });
    store = await EventStore.open(nc, naming(prefix));
    root = await mkdtemp(path.join(tmpdir(), "memledger-rebuild-eq-"));
    redis = new Redis(REDIS_URL);
    cache = await embeddingCacheFixture("rbeqv");
  });

  afterEach(async () => {
    for (const runner of runners.splice(0)) await runner.stop();
    await unlinkMatching(redis, `${escapeGlob(prefix)}:*`);
    redis.disconnect();
    await store.jsm.streams.delete(`KV_${statusBucket(prefix)}`).catch(() => undefined);
    await deleteStreams(nc, prefix);
    await nc.close();
    await cache.cleanup();
    await rm(root, { recursive: true, force: true });
  });

  const QUERIES = ["payment webhook", "idempotency retry", "stripe invoice ledger", "src/cache.ts", "rollback schema"];

  /** Everything a reader can see: the files tree (hash and names), every Redis key, and search hits of both channels. */
  async function readerView(search: SearchProjection, embedder: WordHashEmbedder) {
    const index = search.index(APP)!;
    const vectors = index.vectors!;
    const hits = [];
    for (const query of QUERIES) {
      const bm25 = searchMemories(index, query, { k: 10 }).map((h) => [h.memoryId, h.version, h.score.toFixed(9)]);
      const [vector] = await embedder.embed([query]);
      const nearest = (await vectors.search(vector!, {}, 10)).map((h) => [h.memoryId, h.score.toFixed(6)]);
      hits.push({ query, bm25, nearest });
    }
    const appDir = path.join(root, "files", APP);
    return {
      files: await listFiles(appDir),
      tree: await treeHash(appDir),
      redis: await dumpApp(redis, `${prefix}:claims`, APP),
      indexed: index.indexedCount,
      vectors: await vectors.count(),
      hits,
    };
  }

  it("files tree, claims keys and search hits (BM25 and vectors) are equal, with many spills on the way", async () => {
    const stream = await store.ensureAppStream(APP);
    const scope: ProjectionScope = { prefix, app: APP, stream };
    const events = history(prefix, 1200);
    for (const { subject, event } of events) await store.js.publish(subject, encodeEvent(event));
    const last = await store.lastSeq(stream);
    expect(last).toBe(1200);

    const embedder = new WordHashEmbedder("word-hash@1", 32);
    const search = searchProjection({ dir: path.join(root, "search"), vectors: await cache.setup(embedder, { kind: "hnsw" }) });
    // A fresh files target spills the 4 coldest of every 8 memories touched; this history touches them at
    // random, so many are written, read back and written again.
    const definitions: ProjectionDefinition[] = [filesProjection({ root: path.join(root, "files"), spillRecords: 8 }), claimsProjection({ redis: REDIS_URL, keyPrefix: `${prefix}:claims` }), search];

    // The live path: each projection under its own runner, small batches, every batch committed.
    for (const definition of definitions) {
      const runner = new ProjectionRunner(store, definition, scope, { batchSize: 15 });
      runners.push(runner);
      await runner.start();
    }
    for (const runner of runners) expect(await runner.waitFor(last, 120_000)).toBe(true);
    for (const runner of runners.splice(0)) await runner.stop();
    const live = await readerView(search, embedder);
    expect(live.files.length).toBeGreaterThan(150);
    expect(live.files.filter((f) => f.startsWith("team/")).length).toBeGreaterThan(0);
    expect(Object.keys(live.redis).some((key) => key.includes(":claim:"))).toBe(true);
    expect(Object.keys(live.redis).some((key) => key.includes(":tasks:open"))).toBe(true);
    expect(live.hits.every((h) => h.bm25.length > 0 && h.nearest.length > 0)).toBe(true);

    // The rebuild path: one replay into fresh targets, then promoted; files and claims on worker threads
    // (as for a stream of THREADS_FROM_EVENTS or more), then everything on this thread (a shorter one).
    const rebuilt = await rebuildProjections(store, definitions, scope, { batchSize: 50, threadsFromEvents: 0 });
    expect(rebuilt.seq).toBe(last);
    expect(await readerView(search, embedder)).toEqual(live);
    expect((await rebuildProjections(store, definitions, scope, { batchSize: 50 })).seq).toBe(last);
    expect(await readerView(search, embedder)).toEqual(live);
  });
});
