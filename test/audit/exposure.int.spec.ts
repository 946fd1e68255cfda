import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { filesProjection, treeHash } from "../../projections/files/index.js";
import { SearchIndex, retrieve } from "../../projections/search/index.js";
import { exposedSessions, exposureOf } from "../../services/audit/exposure.js";
import type { MemoryClient } from "../../services/client.js";
import { rebuildProjection } from "../../services/projection-runner.js";
import { startLedger, streamMessageCount, type Ledger } from "../support/env.js";

/**
 * Exposure (issue 12 item 5): agents hydrate and search in sessions while a memory moves from v1 to a
 * wrong v2 and is rolled back to v1. `exposureOf` (what `memledger exposure` prints) then names exactly
 * the sessions that were shown each version; a request without a session records nothing; receipts
 * change no read model (search results, the files tree, what a session says of itself).
 */
describe("exposure: which sessions were shown a memory version", () => {
  let ledger: Ledger;
  const indexes = new Map<string, SearchIndex>();
  const errors: unknown[] = [];
  let memoryId: string;
  const sessions: Record<string, string> = {};
  let filesRoot: string;

  /** Brings the search index of the app up to the stream's end (what `up`'s projection does live). */
  async function project(): Promise<void> {
    const stream = ledger.service.names.appStream(ledger.app);
    let index = indexes.get(ledger.app);
    if (!index) indexes.set(ledger.app, (index = new SearchIndex(ledger.app, "test")));
    const caughtUp = index;
    await ledger.service.store.replay(stream, { fromSeq: caughtUp.appliedSeq + 1 }, (batch) => caughtUp.apply(batch));
  }

  async function inSession(agent: MemoryClient, name: string, work: (sessionId: string) => Promise<unknown>): Promise<void> {
    const { sessionId } = await agent.startSession({ task: `work of ${name}` });
    sessions[name] = sessionId;
    await work(sessionId);
  }

  /** The read models a receipt must not touch, rebuilt from the log. */
  async function readModels() {
    const fresh = new SearchIndex(ledger.app, "check");
    const stream = ledger.service.names.appStream(ledger.app);
    await ledger.service.store.replay(stream, {}, (batch) => fresh.apply(batch));
    const root = path.join(filesRoot, `r${Date.now()}${Math.random()}`);
    await rebuildProjection(ledger.service.store, filesProjection({ root }), { prefix: ledger.prefix, app: ledger.app, stream });
    const found = (await retrieve([fresh], "retry budget for the payment gateway", { k: 10, mode: "bm25" })).map((h) => `${h.memoryId}@v${h.version}`);
    const shown = await ledger.client("agent-a").showSession(sessions.s1!);
    const { seq: _seq, ...session } = shown;
    return { found, files: await treeHash(root), session };
  }

  const countExposed = async () => {
    let n = 0;
    await ledger.service.store.replay(ledger.service.names.appStream(ledger.app), {}, (batch) => {
      n += batch.filter((s) => s.event.type === "session.exposed").length;
    });
    return n;
  };

  beforeAll(async () => {
    filesRoot = await mkdtemp(path.join(tmpdir(), "memledger-exposure-"));
    ledger = await startLedger({ app: "expo1", hydration: { searchIndex: (app) => indexes.get(app) }, onError: (err) => errors.push(err) });
    const author = ledger.client("agent-w");
    const reviewer = ledger.client("human:rev");
    const a = ledger.client("agent-a");
    const b = ledger.client("agent-b");
    const c = ledger.client("agent-c");
    const d = ledger.client("agent-d");

    const v1 = await author.propose({ title: "Payment gateway retry budget", body: "Retry the payment gateway 3 times with backoff.", tags: ["payments"] });
    memoryId = v1.memoryId;
    await reviewer.approve(memoryId);
    await author.propose({ title: "Unrelated: lint rules", body: "We lint with eslint." }).then((m) => reviewer.approve(m.memoryId));
    await project();

    // v1 active: s1 hydrates, s2 searches (eight at once, so receipts share events).
    await inSession(a, "s1", (sessionId) => a.hydrate({ task: "retry budget for the payment gateway", sessionId }));
    await inSession(b, "s2", (sessionId) => Promise.all(Array.from({ length: 8 }, (_, i) => b.search(i % 2 ? "payment gateway retry" : "retry budget", { sessionId, mode: "bm25" }))));

    // v2 (wrong) approved: s3 is shown v2 only.
    await author.propose({ memoryId, title: "Payment gateway retry budget", body: "Retry the payment gateway 30 times without backoff." });
    await reviewer.approve(memoryId);
    await project();
    await inSession(c, "s3", (sessionId) => c.search("payment gateway retry", { sessionId, mode: "bm25" }));

    // Found wrong: rolled back to v1; s4 is shown v1 again.
    await reviewer.rollback(memoryId, 1);
    await project();
    await inSession(d, "s4", (sessionId) => d.hydrate({ task: "retry budget for the payment gateway", sessionId }));
    await ledger.service.flushExposure();
  });

  afterAll(async () => {
    await ledger?.cleanup();
    if (filesRoot) await rm(filesRoot, { recursive: true, force: true });
  });

  it("lists exactly the sessions shown v1, and exactly those shown the wrong v2", async () => {
    const v1 = exposedSessions(await exposureOf(ledger.service.store, ledger.app, memoryId, { version: 1 }));
    expect(v1.map((s) => s.sessionId).sort()).toEqual([sessions.s1, sessions.s2, sessions.s4].sort());
    expect(Object.fromEntries(v1.map((s) => [s.sessionId, s.sessionAgent]))).toEqual({ [sessions.s1!]: "agent-a", [sessions.s2!]: "agent-b", [sessions.s4!]: "agent-d" });
    const v2 = exposedSessions(await exposureOf(ledger.service.store, ledger.app, memoryId, { version: 2 }));
    expect(v2.map((s) => s.sessionId)).toEqual([sessions.s3]);
    expect(v2[0]).toMatchObject({ sessionAgent: "agent-c", actors: ["agent:agent-c"], versions: [2] });
    const all = await exposureOf(ledger.service.store, ledger.app, memoryId);
    expect(new Set(all.map((e) => e.sessionId))).toEqual(new Set(Object.values(sessions)));
    expect(errors).toEqual([]);
  });

  it("records ranks, channels, verb and tokens, never the text", async () => {
    const all = await exposureOf(ledger.service.store, ledger.app, memoryId);
    const hydrated = all.find((e) => e.sessionId === sessions.s1)!;
    expect(hydrated).toMatchObject({ verb: "hydrate", channel: "relevant", rank: 1, version: 1, origin: "app" });
    expect(hydrated.tokens).toBeGreaterThan(0);
    const searched = all.filter((e) => e.sessionId === sessions.s2);
    expect(searched).toHaveLength(8);
    for (const e of searched) expect(e).toMatchObject({ verb: "search", channel: "bm25", rank: 1, version: 1 });
    // s2's eight concurrent searches were batched: fewer events than receipts.
    expect(new Set(searched.map((e) => e.seq)).size).toBeLessThan(8);
    // No body text in the log's receipts.
    const stream = ledger.service.names.appStream(ledger.app);
    const raw: string[] = [];
    await ledger.service.store.replay(stream, {}, (batch) => {
      for (const s of batch) if (s.event.type === "session.exposed") raw.push(JSON.stringify(s.event));
    });
    expect(raw.length).toBeGreaterThan(0);
    expect(raw.join("\n")).not.toMatch(/backoff/);
  });

  it("records nothing for a hydrate or search without a session", async () => {
    const before = await streamMessageCount(ledger.nc, ledger.service.names.appStream(ledger.app));
    const exposedBefore = await countExposed();
    const a = ledger.client("agent-a");
    await a.hydrate({ task: "retry budget for the payment gateway" });
    await a.search("payment gateway retry", { mode: "bm25" });
    await ledger.service.flushExposure();
    expect(await streamMessageCount(ledger.nc, ledger.service.names.appStream(ledger.app))).toBe(before);
    expect(await countExposed()).toBe(exposedBefore);
  });

  it("changes no read model: search results, the files tree and the session read the same with or without receipts", async () => {
    const before = await readModels();
    const a = ledger.client("agent-a");
    for (let i = 0; i < 5; i++) await a.hydrate({ task: "retry budget for the payment gateway", sessionId: sessions.s1 });
    await a.search("payment gateway retry", { mode: "bm25", sessionId: sessions.s1 });
    await ledger.service.flushExposure();
    const after = await readModels();
    expect(after).toEqual(before);
    expect(before.found[0]).toBe(`${memoryId}@v1`);
    expect((await exposureOf(ledger.service.store, ledger.app, memoryId, { version: 1 })).filter((e) => e.sessionId === sessions.s1)).toHaveLength(7);
  });

  it("an SDK client given a sessionId sends it with every hydrate and search (the MCP server's --session)", async () => {
    const { sessionId } = await ledger.client("agent-e").startSession({ task: "sdk" });
    const { MemoryClient } = await import("../../services/client.js");
    const e = new MemoryClient(ledger.nc, { app: ledger.app, as: "agent-e", prefix: ledger.prefix, sessionId });
    await e.hydrate({ task: "retry budget for the payment gateway" });
    await e.search("payment gateway retry", { mode: "bm25" });
    await ledger.service.flushExposure();
    const mine = (await exposureOf(ledger.service.store, ledger.app, memoryId)).filter((x) => x.sessionId === sessionId);
    expect(mine.map((x) => x.verb).sort()).toEqual(["hydrate", "search"]);
  });

  it("never fails the reply: a receipt for a session that does not exist goes to onError, the pack is answered", async () => {
    const pack = await ledger.client("agent-a").hydrate({ task: "retry budget", sessionId: "no-such-session" });
    expect(pack.markdown).toContain("Relevant");
    await ledger.service.flushExposure();
    expect(errors.length).toBe(1);
    expect(String((errors[0] as Error).message)).toMatch(/no such session/);
    errors.length = 0;
  });
});
