import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rawEnvelope } from "../../testing/index.js";
import { LedgerEvent } from "../../schemas/events.js";
import { memoryStatus } from "../../commands/memory.js";
import { readDreamView } from "../../services/dream/view.js";
import { startLedger, type Ledger } from "../support/env.js";

/**
 * readDreamView against the real NATS: the app folded from its stream with the deciders' evolve, cut at
 * the run's asOfSeq (what happened after it is not seen), retrievals from exposure receipts, and the last
 * completed *dream* run (a session-end review does not count) bounding "sessions since the last run".
 */
describe("dream view read from the app stream", () => {
  let ledger: Ledger;
  let n = 0;

  /** Appends an event the command service has no verb for (runs, receipts) on its own subject, as the runner would. */
  async function appendRaw(kind: "run" | "session", aggregateId: string, type: string, data: unknown, scope = "app"): Promise<number> {
    const { store, names } = ledger.service;
    const stream = await store.ensureAppStream(ledger.app);
    const subject = names.aggregate(ledger.app, kind, aggregateId);
    const event = LedgerEvent.parse(
      rawEnvelope({ type, data }, { id: `view-${++n}-${Date.now()}`, aggregateId, app: ledger.app, scope, time: new Date().toISOString(), actor: { kind: "service", id: "dream" } }),
    );
    const result = await store.append(subject, event, await store.lastSeqOf(stream, subject));
    return result.seq;
  }

  const runStarted = (kind: "dream" | "session_end", sessionId = "s") => ({
    trigger: kind === "dream" ? { kind, forced: true } : { kind, sessionId },
    phases: ["prune"],
    asOfSeq: 1,
    gates: { lastRunId: null, lastRunAt: null, sessionsSince: 0, forced: true },
    holder: "test",
    settings: {},
  });
  const runCompleted = { proposals: {}, index: null };

  const ids: Record<string, string> = {};
  const seqs: Record<string, number> = {};

  beforeAll(async () => {
    ledger = await startLedger({ app: "dreamview" });
    const agent = ledger.client("agent-a");
    const human = ledger.client("human:rev");

    const kept = await agent.propose({ title: "Deploy with make release", body: "Run make release from main." });
    ids.kept = kept.memoryId;
    await human.approve(kept.memoryId);
    const old = await agent.propose({ title: "Old deploy script", body: "Run ./deploy.sh." });
    ids.old = old.memoryId;
    await human.approve(old.memoryId);

    const s1 = await agent.startSession({ task: "first" });
    ids.s1 = s1.sessionId;
    seqs.s1End = (await agent.endSession(s1.sessionId, { summary: "done" })).seq;
    // A completed dream run after s1: s1 is no longer "since the last run".
    seqs.dreamStart = await appendRaw("run", "run-d1", "run.started", runStarted("dream"));
    seqs.dreamDone = await appendRaw("run", "run-d1", "run.completed", runCompleted);

    const s2 = await agent.startSession({ task: "second" });
    ids.s2 = s2.sessionId;
    await appendRaw("session", s2.sessionId, "session.exposed", {
      receipts: [
        { verb: "search", time: "2026-01-02T00:00:00.000Z", tokens: 10, memories: [{ memoryId: ids.kept, version: 1, rank: 1, channel: "bm25", origin: "app" }, { memoryId: "org-x", version: 1, rank: 2, channel: "bm25", origin: "org" }] },
        { verb: "hydrate", time: "2026-01-03T00:00:00.000Z", tokens: 10, memories: [{ memoryId: ids.kept, version: 1, rank: 1, channel: "relevant", origin: "app" }] },
      ],
    }, "agent:agent-a");
    seqs.s2End = (await agent.endSession(s2.sessionId, { summary: "done" })).seq;
    // A session-end review completes after it: it must not count as the last dream run.
    await appendRaw("run", "run-s2", "run.started", runStarted("session_end", s2.sessionId));
    seqs.reviewDone = await appendRaw("run", "run-s2", "run.completed", runCompleted);
    seqs.bound = seqs.reviewDone;

    // After the bound: a supersede, a new session ending, another dream run. None of it may be seen.
    await human.supersede(old.memoryId, "replaced by make release", { by: kept.memoryId });
    const s3 = await agent.startSession({ task: "third" });
    ids.s3 = s3.sessionId;
    await agent.endSession(s3.sessionId, { summary: "done" });
    await appendRaw("run", "run-d2", "run.started", runStarted("dream"));
    await appendRaw("run", "run-d2", "run.completed", runCompleted);
  });

  afterAll(async () => {
    await ledger?.cleanup();
  });

  it("folds memories and sessions up to asOfSeq only", async () => {
    const view = await readDreamView(ledger.service.store, ledger.app, seqs.bound!);
    expect(view.asOfSeq).toBe(seqs.bound);
    expect(memoryStatus(view.memories.get(ids.old!)!.state)).toBe("active");
    expect(memoryStatus(view.memories.get(ids.kept!)!.state)).toBe("active");
    expect([...view.sessions.keys()].sort()).toEqual([ids.s1, ids.s2].sort());
    expect(view.lastRun).toEqual({ runId: "run-d1", completedAt: expect.any(String), completedSeq: seqs.dreamDone });
    expect(view.sessionsSinceLastRun).toEqual([ids.s2]);
    expect(view.retrievals.get(ids.kept!)).toEqual({ count: 2, last: "2026-01-03T00:00:00.000Z" });
    expect(view.retrievals.has("org-x")).toBe(false);
    for (const { seq } of [...view.memories.values(), ...view.sessions.values()]) expect(seq).toBeLessThanOrEqual(seqs.bound!);
  });

  it("reads what came after the bound once the bound moves past it", async () => {
    const last = await ledger.service.store.lastSeq(ledger.service.names.appStream(ledger.app));
    const view = await readDreamView(ledger.service.store, ledger.app, last);
    expect(memoryStatus(view.memories.get(ids.old!)!.state)).toBe("superseded");
    expect(view.lastRun?.runId).toBe("run-d2");
    expect(view.sessionsSinceLastRun).toEqual([]);
    expect(view.sessions.has(ids.s3!)).toBe(true);
  });

  it("before any dream run, every ended session counts; a bound before the first run sees no run", async () => {
    const view = await readDreamView(ledger.service.store, ledger.app, seqs.dreamStart!);
    expect(view.lastRun).toBeNull();
    expect(view.sessionsSinceLastRun).toEqual([ids.s1]);
    const started = await readDreamView(ledger.service.store, ledger.app, seqs.dreamDone! - 1);
    expect(started.lastRun).toBeNull();
  });

  it("an app without a stream, or a bound of 0, is an empty view; a negative bound is refused", async () => {
    for (const view of [await readDreamView(ledger.service.store, "nosuchapp", 10), await readDreamView(ledger.service.store, ledger.app, 0)]) {
      expect(view.memories.size).toBe(0);
      expect(view.sessions.size).toBe(0);
      expect(view.lastRun).toBeNull();
    }
    await expect(readDreamView(ledger.service.store, ledger.app, -1)).rejects.toMatchObject({ code: "invalid" });
  });
});
