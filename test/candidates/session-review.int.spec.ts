import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SESSION_REVIEW_DURABLE, SessionReview, sessionReviewComponent, sessionReviewRunId } from "../../services/dream/session-review.js";
import { MemoryClient } from "../../services/client.js";
import { connectNats } from "../../services/nats.js";
import { commandServiceComponent, startMemledger } from "../../services/runtime.js";
import { DreamLock } from "../../services/dream/lock.js";
import { acceptProposals, newMemoryIdOf, revertRun, showRun } from "../../services/dream/review.js";
import type { LedgerEvent } from "../../schemas/events.js";
import { eventually } from "../support/eventually.js";
import { NATS_URL, deleteStreams, startLedger, uniquePrefix, type Ledger } from "../support/env.js";

/**
 * The session-end review against the real NATS (issue 13 item 1): a session's end starts one review run
 * (trigger session_end, phase candidates); its discards are applied at once by the policy (the candidate
 * superseded, still in the log), its promotions wait for a human; a redelivered `session.ended` makes no
 * second run; a session without candidates gets none.
 */

const BODY =
  "The payment webhook retries for three days, and a handler that is not idempotent charges twice. Keep the idempotency key " +
  "in the outbox row and check it before charging; never acknowledge the webhook before the outbox commit.";

describe("session-end review", () => {
  let ledger: Ledger;
  let review: SessionReview;
  let session: string;
  let keep: string;
  let drop: string;
  const app = "app1";

  const runEvents = async (runId: string): Promise<LedgerEvent[]> => {
    const out: LedgerEvent[] = [];
    for await (const stored of ledger.service.store.readSubject(ledger.service.names.appStream(app), ledger.service.names.aggregate(app, "run" as never, runId))) out.push(stored.event);
    return out;
  };
  const runStarts = async () => {
    let n = 0;
    await ledger.service.store.replay(ledger.service.names.appStream(app), {}, (batch) => {
      for (const s of batch) if (s.event.type === "run.started") n++;
    });
    return n;
  };

  beforeAll(async () => {
    ledger = await startLedger({ app });
    review = await SessionReview.start(ledger.nc, { prefix: ledger.prefix, discoverEveryMs: 100 });
    const alice = ledger.client("alice");
    session = (await alice.startSession({ task: "payments", worktree: "/w/one" })).sessionId;
    keep = (await alice.propose({ title: "Webhook retries charge twice", body: BODY, kind: "fragile", importance: 4, scope: `session:${session}`, tags: ["team:payments"], sessionId: session })).memoryId;
    drop = (await alice.propose({ title: "tmp idea", body: "maybe cache this", importance: 2, scope: `session:${session}`, sessionId: session })).memoryId;
    await alice.endSession(session, { summary: "done" });
  });

  afterAll(async () => {
    await review?.stop();
    await ledger?.cleanup();
  });

  it("a session's end runs one review; the discard is applied by the policy, the promotion waits", async () => {
    const alice = ledger.client("alice");
    const runId = sessionReviewRunId(app, session);
    await eventually("the discard applied", async () => ((await alice.show(drop)).status === "superseded" ? true : undefined));
    const run = await showRun({ store: ledger.service.store, handler: ledger.service.handler }, app, runId);
    expect(run).toMatchObject({ status: "completed", trigger: { kind: "session_end", sessionId: session }, phases: ["candidates"] });
    const byMemory = new Map(run.proposals.map((p) => [p.change.action === "promote" ? p.change.candidate.memoryId : p.change.action === "supersede" ? p.change.memory.memoryId : "", p]));
    expect(byMemory.get(keep)).toMatchObject({ status: "pending", change: { action: "promote", scope: "team:payments" }, reason: expect.stringMatching(/^Promote to team:payments/) });
    expect(byMemory.get(drop)).toMatchObject({ status: "applied", change: { action: "supersede" }, reason: expect.stringMatching(/^Discard: .*score -3 < 2/), decision: { actor: { kind: "service", id: "policy" } } });
    // The promoted candidate is untouched until a human accepts; the discarded one is superseded, and still in the log.
    expect((await alice.show(keep)).status).toBe("active");
    const history = await alice.history(drop);
    expect(history.entries.map((e) => e.type)).toEqual(["memory.proposed", "memory.approved", "memory.superseded"]);
    expect(history.entries.at(-1)).toMatchObject({ actor: { kind: "service", id: "policy" } });
    expect(history.versions[0]!.body).toBe("maybe cache this");
  });

  it("the review run is read as the candidates are: another agent sees none of its events, nor the run", async () => {
    const runId = sessionReviewRunId(app, session);
    const bob = ledger.client("bob");
    const log = await bob.log({ limit: 10_000 });
    expect(log.filter((e) => e.type.startsWith("run.") || e.type.startsWith("proposal."))).toEqual([]);
    expect(JSON.stringify(log)).not.toMatch(/idempotency key|Webhook retries/);
    await expect(bob.request("dream_show", { runId })).rejects.toMatchObject({ code: "forbidden" });
    const own = await ledger.client("alice").log({ limit: 10_000 });
    expect(own.filter((e) => e.type === "proposal.made").map((e) => e.scope)).toEqual([`session:${session}`, `session:${session}`]);
    expect(await ledger.client("alice").request("dream_show", { runId })).toMatchObject({ runId, trigger: { kind: "session_end", sessionId: session } });
  });

  it("a redelivered session.ended (the consumer replays from the start) makes no second run", async () => {
    const runId = sessionReviewRunId(app, session);
    await eventually("the first review done", async () => ((await runEvents(runId)).some((e) => e.type === "run.completed") ? true : undefined));
    const eventsBefore = await runEvents(runId);
    const startsBefore = await runStarts();
    expect(startsBefore).toBe(1);
    // A fresh consumer delivers every session.ended again, as a crash before the ack would.
    await review.stop();
    const jsm = await jetstreamManager(ledger.nc);
    await jsm.consumers.delete(ledger.service.names.appStream(app), SESSION_REVIEW_DURABLE);
    const progress: string[] = [];
    review = await SessionReview.start(ledger.nc, { prefix: ledger.prefix, discoverEveryMs: 100, onProgress: (line) => progress.push(line) });
    await eventually("the session end redelivered and handled", async () => {
      const info = await jsm.consumers.info(ledger.service.names.appStream(app), SESSION_REVIEW_DURABLE).catch(() => null);
      return info && info.num_ack_pending === 0 && info.num_pending === 0 && info.delivered.stream_seq > 0 ? true : undefined;
    });
    expect(progress.some((l) => l.includes(`session ${session} of ${app} reviewed in run ${runId}`))).toBe(true);
    expect(await runEvents(runId)).toEqual(eventsBefore);
    expect(await runStarts()).toBe(1);
    // Called again directly: the same run, nothing new.
    const again = await review.review(app, session);
    expect(again).toMatchObject({ status: "reviewed", runId, resumed: true, proposals: 2, discards: [] });
    expect(await runEvents(runId)).toEqual(eventsBefore);
  });

  it("a human accepts the promotion: the candidate's content becomes a team memory others read, the candidate is superseded by it", async () => {
    const runId = sessionReviewRunId(app, session);
    const deps = { store: ledger.service.store, handler: ledger.service.handler };
    const promote = (await showRun(deps, app, runId)).proposals.find((p) => p.change.action === "promote")!;
    const accepted = await acceptProposals(deps, { app, runId, proposalIds: [promote.proposalId], actor: { kind: "human", id: "rita" }, reason: "useful" });
    expect(accepted.results).toMatchObject([{ proposalId: promote.proposalId, outcome: "applied" }]);
    const promoted = newMemoryIdOf(promote.proposalId);
    const seenByBob = await ledger.client("bob").show(promoted);
    expect(seenByBob).toMatchObject({ scope: "team:payments", status: "active", versions: [{ title: "Webhook retries charge twice", body: BODY }] });
    expect((await ledger.client("alice").show(keep)).superseded).toMatchObject({ by: promoted });
  });

  it("nothing is lost: reverting the review reinstates both candidates and retires the promoted memory", async () => {
    const runId = sessionReviewRunId(app, session);
    const deps = { store: ledger.service.store, handler: ledger.service.handler };
    await revertRun(deps, { app, runId, actor: { kind: "human", id: "rita" }, reason: "too early" });
    const alice = ledger.client("alice");
    expect((await alice.show(drop)).status).toBe("active");
    expect((await alice.show(keep)).status).toBe("active");
    const promote = (await showRun(deps, app, runId)).proposals.find((p) => p.change.action === "promote")!;
    expect((await alice.show(newMemoryIdOf(promote.proposalId))).status).toBe("superseded");
    expect((await alice.history(drop)).entries.map((e) => e.type)).toEqual(["memory.proposed", "memory.approved", "memory.superseded", "memory.reinstated"]);
  });

  it("a session without candidates gets no run", async () => {
    const alice = ledger.client("alice");
    const empty = (await alice.startSession({ task: "nothing speculative" })).sessionId;
    await alice.endSession(empty, {});
    expect(await review.review(app, empty)).toEqual({ status: "no_candidates", app, sessionId: empty });
    expect(await runEvents(sessionReviewRunId(app, empty))).toEqual([]);
    expect(await runStarts()).toBe(1);
  });
});

describe("session review as a component of the runtime (what `memledger up` runs unless --no-session-review)", () => {
  it("reviews a session that ends while the runtime runs", async () => {
    const prefix = uniquePrefix("srv");
    const runtime = await startMemledger({ servers: NATS_URL, prefix, components: [commandServiceComponent(), sessionReviewComponent({ discoverEveryMs: 100 })] });
    try {
      expect(runtime.components).toEqual(["command-service", "session-review"]);
      const alice = new MemoryClient(runtime.nc, { app: "app1", as: "alice", prefix });
      const session = (await alice.startSession({ task: "t" })).sessionId;
      const thin = (await alice.propose({ title: "tmp", body: "maybe", scope: `session:${session}` })).memoryId;
      await alice.endSession(session, {});
      await eventually("the thin candidate discarded", async () => ((await alice.show(thin)).status === "superseded" ? true : undefined));
    } finally {
      await runtime.stop();
      const nc = await connectNats({ servers: NATS_URL });
      await deleteStreams(nc, prefix);
      await nc.close();
    }
  });
});

describe("session review waiting for a dream run's lock", () => {
  it("keeps its session end in progress past the ack wait (no redelivery), then reviews it once", async () => {
    const ledger = await startLedger({ app: "app1" });
    // Two instances share the durable consumer, as two `memledger up` do: a redelivery would reach the idle one.
    const progress: string[] = [];
    const options = { prefix: ledger.prefix, discoverEveryMs: 100, ackWaitMs: 1_000, onProgress: (line: string) => progress.push(line) };
    const review = await SessionReview.start(ledger.nc, options);
    const second = await SessionReview.start(ledger.nc, options);
    try {
      const alice = ledger.client("alice");
      const session = (await alice.startSession({ task: "t" })).sessionId;
      const thin = (await alice.propose({ title: "tmp", body: "maybe", scope: `session:${session}` })).memoryId;
      // A consolidation run of the app holds the lock for three ack waits.
      const lock = await DreamLock.acquire(ledger.nc, ledger.service.names, "app1", "a-dream-run");
      await alice.endSession(session, {});
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      expect((await alice.show(thin)).status).toBe("active");
      await lock.release();
      await eventually("the thin candidate discarded", async () => ((await alice.show(thin)).status === "superseded" ? true : undefined));
      // Every delivery counts (redeliveries too): the session's two events (started, ended), each delivered once.
      const info = await (await jetstreamManager(ledger.nc)).consumers.info(ledger.service.names.appStream("app1"), SESSION_REVIEW_DURABLE);
      expect(info.delivered.consumer_seq).toBe(2);
      expect(progress.filter((line) => line.startsWith(`session ${session} of app1 reviewed`))).toHaveLength(1);
    } finally {
      await review.stop();
      await second.stop();
      await ledger.cleanup();
    }
  });
});
