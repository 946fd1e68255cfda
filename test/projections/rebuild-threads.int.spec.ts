import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { threadId } from "node:worker_threads";
import type { NatsConnection } from "@nats-io/transport-node";
import { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { claimIdOf } from "../../commands/claim.js";
import { naming } from "../../events/subjects.js";
import { encodeEvent } from "../../events/upcast.js";
import { claimsProjection, escapeGlob, unlinkMatching } from "../../projections/claims/index.js";
import { AppLayout, filesProjection, treeHash } from "../../projections/files/index.js";
import type { ProjectionDefinition, ProjectionScope } from "../../projections/projection.js";
import type { LedgerEvent } from "../../schemas/events.js";
import { EventStore } from "../../services/event-store.js";
import { connectNats } from "../../services/nats.js";
import { rebuildProjections } from "../../services/projection-runner.js";
import { REBUILD_WORKER_YOUNG_GENERATION_MB, canRebuildInThread } from "../../services/rebuild-threads.js";
import { dumpApp } from "../claims/support.js";
import { NATS_URL, REDIS_URL, deleteStreams, uniquePrefix } from "../support/env.js";
import { storedEvent } from "../support/events.js";

const APP = "thrapp";
const PROBE = pathToFileURL(path.resolve("test/support/thread-probe-projection.mjs")).href;

interface ProbeLine {
  threadId: number;
  op: "open" | "apply" | "commit" | "promote" | "close";
  seq?: number;
  events?: { seq: number; type: string; subject: string }[];
  /** On the "open" line: the young generation of the thread's heap, null when it was not set. */
  youngGenerationMb?: number | null;
}

/** The probe (test/support/thread-probe-projection.mjs), described as a portable definition is. */
async function probe(file: string, failAtSeq?: number, failCommit = false): Promise<ProjectionDefinition> {
  const { probeProjection } = (await import(PROBE)) as { probeProjection: (options: unknown) => ProjectionDefinition };
  return probeProjection({ file, ...(failAtSeq === undefined ? {} : { failAtSeq }), ...(failCommit ? { failCommit } : {}) });
}

const readProbe = async (file: string): Promise<ProbeLine[]> =>
  (await readFile(file, "utf8").catch(() => ""))
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line) as ProbeLine);

/** Memories (proposed, approved), claims (claimed, released) and sessions, interleaved. */
function history(prefix: string, rounds: number): { subject: string; event: LedgerEvent }[] {
  const names = naming(prefix);
  const out: { subject: string; event: LedgerEvent }[] = [];
  let n = 0;
  const clock = Date.now() - 3_600_000;
  const emit = (kind: "memory" | "claim" | "session", id: string, type: LedgerEvent["type"], data: unknown, scope = "app") => {
    const event = storedEvent({ n: ++n, type, aggregateId: id, app: APP, scope, actor: { kind: "agent", id: "agent-1" }, time: clock + n * 1000, data });
    out.push({ subject: names.aggregate(APP, kind, id), event });
  };
  for (let i = 0; i < rounds; i++) {
    const memory = `mem-${i}`;
    const task = claimIdOf("task", `task-${i}`);
    emit("memory", memory, "memory.proposed", { version: 1, title: `note ${i}`, body: `webhook retry ${i}`, kind: "note", tags: ["t"], paths: [], importance: 3 }, i % 3 === 0 ? "team:web" : "app");
    emit("claim", task, "claim.claimed", { kind: "task", name: `task-${i}`, holder: "agent-1", leaseMs: 86_400_000, expiresAt: new Date(Date.now() + 86_400_000).toISOString(), takeoverOf: null, priority: 3 });
    emit("session", `sess-${i}`, "session.started", { agentId: "agent-1", task: "t", branch: null, worktree: null }, "agent:agent-1");
    if (i % 4 !== 3) emit("memory", memory, "memory.approved", { version: 1 }, i % 3 === 0 ? "team:web" : "app");
    if (i % 2 === 0) emit("claim", task, "claim.released", { holder: "agent-1", done: true });
  }
  return out;
}

describe("rebuilding portable projections on worker threads", () => {
  let prefix: string;
  let nc: NatsConnection;
  let store: EventStore;
  let root: string;
  let redis: Redis;
  let scope: ProjectionScope;
  let published: { subject: string; event: LedgerEvent }[];

  beforeEach(async () => {
    prefix = uniquePrefix("rbthr");
    nc = await connectNats({ servers: NATS_URL, name: `test-${prefix}` });
    store = await EventStore.open(nc, naming(prefix));
    root = await mkdtemp(path.join(tmpdir(), "memledger-rebuild-threads-"));
    redis = new Redis(REDIS_URL);
    const stream = await store.ensureAppStream(APP);
    scope = { prefix, app: APP, stream };
    published = history(prefix, 60);
    for (const { subject, event } of published) await store.js.publish(subject, encodeEvent(event));
  });

  afterEach(async () => {
    await unlinkMatching(redis, `${escapeGlob(prefix)}:*`);
    redis.disconnect();
    await deleteStreams(nc, prefix);
    await nc.close();
    await rm(root, { recursive: true, force: true });
  });

  it("folds on another thread, and hands it exactly the events of the kinds its projection consumes", async () => {
    const file = path.join(root, "probe.jsonl");
    const definition = await probe(file);
    expect(canRebuildInThread(definition)).toBe(true);
    const result = await rebuildProjections(store, [definition], scope, { batchSize: 25, threadsFromEvents: 0 });
    const last = await store.lastSeq(scope.stream);
    expect(result).toMatchObject({ seq: last, events: last });

    const lines = await readProbe(file);
    expect(new Set(lines.map((l) => l.threadId)).size).toBe(1);
    expect(lines[0]!.threadId).not.toBe(threadId);
    // Its heap has the young generation a rebuild worker is given (services/rebuild-threads.ts).
    expect(lines[0]).toMatchObject({ op: "open", youngGenerationMb: REBUILD_WORKER_YOUNG_GENERATION_MB });
    const applied = lines.flatMap((l) => l.events ?? []);
    const claimSeqs = published.flatMap((p, i) => (p.event.type.startsWith("claim.") ? [i + 1] : []));
    expect(applied.map((e) => e.seq)).toEqual(claimSeqs);
    expect(applied.every((e) => e.type.startsWith("claim.") && e.subject.includes(".claim."))).toBe(true);
    // Committed at the stream's last sequence (past its own last event), then promoted, then closed.
    expect(lines.filter((l) => l.op !== "apply").map((l) => [l.op, l.seq ?? null])).toEqual([
      ["open", null],
      ["commit", last],
      ["promote", last],
      ["close", null],
    ]);

    // By default a stream this short (under THREADS_FROM_EVENTS) is rebuilt on this thread.
    await rm(file, { force: true });
    expect(canRebuildInThread(definition, last)).toBe(false);
    await rebuildProjections(store, [definition], scope, { batchSize: 25 });
    const here = await readProbe(file);
    expect(new Set(here.map((l) => l.threadId))).toEqual(new Set([threadId]));
    expect(here.flatMap((l) => l.events ?? []).map((e) => e.seq)).toEqual(claimSeqs);
  });

  it("gives the same files tree and claims keys as a rebuild on one thread", async () => {
    const definitions = (name: string): ProjectionDefinition[] => [
      filesProjection({ root: path.join(root, name), spillRecords: 16 }),
      claimsProjection({ redis: REDIS_URL, keyPrefix: `${prefix}:${name}` }),
    ];
    const threaded = definitions("threaded");
    expect(threaded.every((definition) => canRebuildInThread(definition))).toBe(true);
    await rebuildProjections(store, threaded, scope, { batchSize: 40, threadsFromEvents: 0 });
    await rebuildProjections(store, definitions("single"), scope, { batchSize: 40, threads: false });

    const tree = (name: string) => treeHash(path.join(root, name, APP));
    expect(await tree("threaded")).toBe(await tree("single"));
    const keys = async (name: string) =>
      Object.fromEntries(Object.entries(await dumpApp(redis, `${prefix}:${name}`, APP)).map(([key, value]) => [key.replace(`:${name}:`, ":"), value]));
    const threadedKeys = await keys("threaded");
    expect(Object.keys(threadedKeys).length).toBeGreaterThan(10);
    expect(threadedKeys).toEqual(await keys("single"));
  });

  it("a failure on the worker fails the rebuild with its error code, and nothing is promoted", async () => {
    const files = filesProjection({ root: path.join(root, "files") });
    // A first rebuild gives readers a generation; the failed one below must leave it in place.
    await rebuildProjections(store, [files], scope);
    const layout = new AppLayout(path.join(root, "files"), APP);
    const before = { generation: await layout.current(), tree: await treeHash(layout.appDir) };
    expect(before.generation).not.toBeNull();

    const file = path.join(root, "probe.jsonl");
    const claimSeqs = published.flatMap((p, i) => (p.event.type.startsWith("claim.") ? [i + 1] : []));
    const failAt = claimSeqs[Math.floor(claimSeqs.length / 2)]!;
    const failing = rebuildProjections(store, [files, await probe(file, failAt)], scope, { batchSize: 10, threadsFromEvents: 0 });
    await expect(failing).rejects.toMatchObject({ name: "MemledgerError", code: "conflict" });
    await expect(failing).rejects.toThrow(`probe (rebuilt on a worker thread): probe refuses seq ${failAt}`);

    const lines = await readProbe(file);
    expect(lines.some((l) => l.op === "promote" || l.op === "commit")).toBe(false);
    expect(Math.max(...lines.flatMap((l) => (l.events ?? []).map((e) => e.seq)))).toBeLessThan(failAt);
    // Closed all the same, before its thread ended: a target's close ends what it started.
    expect(lines.at(-1)).toMatchObject({ op: "close" });
    expect({ generation: await layout.current(), tree: await treeHash(layout.appDir) }).toEqual(before);
  });

  it("each target is promoted once its own commit is done: one whose commit fails fails the rebuild, the others serve whole new generations", async () => {
    const files = filesProjection({ root: path.join(root, "files") });
    await rebuildProjections(store, [files], scope);
    const layout = new AppLayout(path.join(root, "files"), APP);
    const before = { generation: await layout.current(), tree: await treeHash(layout.appDir) };

    const file = path.join(root, "probe.jsonl");
    const failing = rebuildProjections(store, [files, await probe(file, undefined, true)], scope, { batchSize: 10, threadsFromEvents: 0 });
    await expect(failing).rejects.toMatchObject({ name: "MemledgerError", code: "conflict" });
    await expect(failing).rejects.toThrow(`probe (rebuilt on a worker thread): probe refuses to commit at ${await store.lastSeq(scope.stream)}`);

    // The probe folded every claim event, never committed and was never promoted, and was closed.
    const lines = await readProbe(file);
    expect(lines.some((l) => l.op === "commit" || l.op === "promote")).toBe(false);
    expect(lines.at(-1)).toMatchObject({ op: "close" });
    const claimSeqs = published.flatMap((p, i) => (p.event.type.startsWith("claim.") ? [i + 1] : []));
    expect(lines.flatMap((l) => (l.events ?? []).map((e) => e.seq))).toEqual(claimSeqs);
    // Files did not wait for it: a newer generation serves readers, whole (the same tree from the same log).
    const after = { generation: await layout.current(), tree: await treeHash(layout.appDir) };
    expect(Number(after.generation)).toBeGreaterThan(Number(before.generation));
    expect(after.tree).toBe(before.tree);
  });

  it("a stored message that is not an event fails a threaded rebuild as it fails one on a single thread", async () => {
    await store.js.publish(naming(prefix).aggregate(APP, "claim", "garbage"), new TextEncoder().encode("{not json"));
    const fail = (threads: boolean) =>
      rebuildProjections(store, [claimsProjection({ redis: REDIS_URL, keyPrefix: `${prefix}:g${threads}` })], scope, { threads, threadsFromEvents: 0 }).then(
        () => null,
        (error: { code?: string }) => error.code ?? "no code",
      );
    const single = await fail(false);
    expect(single).not.toBeNull();
    expect(await fail(true)).toBe(single);
    // Neither promoted a generation.
    expect(await dumpApp(redis, `${prefix}:gtrue`, APP)).toEqual({});
    expect(await dumpApp(redis, `${prefix}:gfalse`, APP)).toEqual({});
  });
});
