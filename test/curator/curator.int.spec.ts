import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import type { MemoryPromotionAccepted, MemoryPromotionRejected, MemoryPromotionRequested, MemoryProposed } from "../../schemas/events.js";
import type { EventStore } from "../../services/event-store.js";
import { Curator, orgMemoryIdOf } from "../../services/curator/index.js";
import { startLedger, streamMessageCount, type Ledger } from "../support/env.js";
import { parsePolicy } from "../../services/auth/load.js";
import { decisionOf, eventsOn, eventually, rawMessages, startCurator, stopCurator, storeFor } from "./support.js";

type Proposed = import("zod").infer<typeof MemoryProposed>;

const GENERIC = {
  title: "Webhook handlers must be idempotent",
  body: "Payment providers retry webhook deliveries for days. Store the event id before acting and answer 200 for events already processed, or retries charge customers twice.",
  kind: "convention" as const,
  tags: ["webhooks", "payments"],
  paths: ["src/payments/webhook.ts"],
};

// Assembled at run time so the source holds no credential-shaped literal.
const GITHUB_TOKEN = ["ghp", "_", "Zr8Kq2", "Lm4Np6Qs8Tu0Vw2Xy4Za6Bc8De0Fg2"].join("");
const AWS_SECRET = ["9dK2mQ7vX4pL8zR1", "tY6wN3bH5jC0fG2sA7eU4iO1"].join("");

/**
 * The built-in default (everyone may do everything outside the org; only service:curator writes it), plus
 * human:rita, whom this policy names as an org reviewer: nobody a policy does not name approves org memories.
 */
const ORG_REVIEW_POLICY = parsePolicy({
  version: 1,
  roles: {
    anyone: { allow: [{ verbs: ["*"], scopes: ["*"] }] },
    curator: { allow: [{ verbs: ["*"], scopes: ["org"] }] },
    "org-reviewer": { allow: [{ verbs: ["approve", "reject"], scopes: ["org"] }] },
  },
  actors: { "*": { roles: ["anyone"] }, "service:curator": { roles: ["curator"] }, "human:rita": { roles: ["org-reviewer"] } },
  // The command path refuses secrets (services/secrets-gate.ts); relaxed for app memories here so that the
  // curator, the last line before the org, is what the secret test below exercises.
  secrets: { allowIn: ["app"] },
});

describe("curator over real NATS", () => {
  let ledger: Ledger;
  let store: EventStore;
  let running: { curator: Curator; nc: NatsConnection }[] = [];

  beforeEach(async () => {
    ledger = await startLedger({ app: "shop", policy: ORG_REVIEW_POLICY });
    store = await storeFor(ledger.nc, ledger.prefix);
    running = [];
  });

  afterEach(async () => {
    for (const r of running) await stopCurator(r);
    await ledger.cleanup();
  });

  const curator = async (options: Parameters<typeof startCurator>[1] = {}) => {
    const started = await startCurator(ledger.prefix, options);
    running.push(started);
    return started;
  };

  /** An approved app memory, proposed in a session by agent-a and approved by human:alice. */
  async function approvedMemory(content: Partial<typeof GENERIC> = {}, app = ledger.app) {
    const agent = ledger.client("agent-a", app);
    const { sessionId } = await agent.startSession({ task: "payments" });
    const proposed = await agent.propose({ scope: "app", ...GENERIC, ...content, sessionId });
    await ledger.client("human:alice", app).approve(proposed.memoryId);
    return { memoryId: proposed.memoryId, proposedSeq: proposed.seq, proposedEventId: proposed.eventId, sessionId };
  }

  const orgEvents = () => eventsOnAll(store, store.names.orgStream());

  it("accepts a promotion into a new org memory whose provenance names the source app, stream, sequence, event, actor and session", async () => {
    await curator({ policy: { autoApprove: true } });
    const source = await approvedMemory();
    const agent = ledger.client("agent-a");
    const promoted = await agent.promote(source.memoryId, { reason: "true for every app taking payments", sessionId: source.sessionId });

    const decision = await decisionOf(store, ledger.app, promoted.promotionId);
    const accepted = decision.event as MemoryPromotionAccepted;
    expect(accepted.type).toBe("memory.promotion_accepted");
    expect(accepted.actor).toEqual({ kind: "service", id: "curator" });
    expect(accepted.causationId).toBe(promoted.eventId);
    expect(accepted.data).toMatchObject({ outcome: "created", orgMemoryId: orgMemoryIdOf(promoted.promotionId), orgVersion: 1, approved: true, reasons: [] });

    const org = await eventually("the org approval", async () => {
      const events = await orgEvents();
      return events.length >= 2 ? events : undefined;
    });
    expect(org.map((e) => e.event.type)).toEqual(["memory.proposed", "memory.approved"]);
    const proposal = org[0]!.event as Proposed;
    expect(proposal.aggregateId).toBe(accepted.data.orgMemoryId);
    expect(proposal.scope).toBe("org");
    expect(proposal.data.paths).toEqual([]);
    expect(proposal.data.provenance).toEqual({
      promotionId: promoted.promotionId,
      source: {
        app: ledger.app,
        stream: store.names.appStream(ledger.app),
        memoryId: source.memoryId,
        version: 1,
        seq: source.proposedSeq,
        eventId: source.proposedEventId,
        actor: { kind: "agent", id: "agent-a" },
        sessionId: source.sessionId,
      },
      request: { seq: promoted.seq, eventId: promoted.eventId, actor: { kind: "agent", id: "agent-a" }, sessionId: source.sessionId },
    });

    // The promoting agent sees the decision.
    const shown = await agent.show(source.memoryId);
    expect(shown.promotions).toEqual([
      expect.objectContaining({ promotionId: promoted.promotionId, version: 1, status: "accepted", decision: expect.objectContaining({ outcome: "created", orgMemoryId: accepted.data.orgMemoryId }) }),
    ]);
  });

  it("without auto-approval the org memory waits as proposed, and a reviewer approves it through the org app", async () => {
    await curator({ policy: { autoApprove: false } });
    const source = await approvedMemory();
    const promoted = await ledger.client("agent-a").promote(source.memoryId);
    const decision = (await decisionOf(store, ledger.app, promoted.promotionId)).event as MemoryPromotionAccepted;
    expect(decision.data).toMatchObject({ outcome: "created", approved: false });

    const orgId = decision.data.orgMemoryId;
    const reviewer = ledger.client("human:rita", "org");
    expect((await reviewer.show(orgId)).status).toBe("proposed");
    const approved = await reviewer.approve(orgId);
    expect(approved.version).toBe(1);
    const shown = await reviewer.show(orgId);
    expect(shown).toMatchObject({ status: "active", activeVersion: 1, scope: "org" });

    // Same stream the curator writes: nothing went to an app stream named org.
    const org = await eventsOnAll(store, store.names.orgStream());
    expect(org.map((e) => e.event.type)).toEqual(["memory.proposed", "memory.approved"]);
    expect(org[1]!.event.actor).toEqual({ kind: "human", id: "rita" });
    // An app-scoped proposal has no place in the org stream.
    await expect(reviewer.propose({ title: "x", body: "y", scope: "app" })).rejects.toMatchObject({ code: "invalid" });
    expect(await streamMessageCount(ledger.nc, store.names.orgStream())).toBe(2);
  });

  it("never lets a secret reach the org: the rejection names the rule and holds no part of the secret", async () => {
    await curator({ policy: { autoApprove: true } });
    const body = `${GENERIC.body}\n\nFor the CI deploy use GH_TOKEN=${GITHUB_TOKEN} and AWS_SECRET_ACCESS_KEY=${AWS_SECRET}.`;
    const source = await approvedMemory({ body });
    // A clean promotion in the same run, so the org stream exists and the check below is not vacuous.
    const clean = await approvedMemory({ title: "Log timestamps in UTC", body: "Every service logs timestamps in UTC with an explicit offset, so incidents line up across regions." });
    const cleanPromotion = await ledger.client("agent-a").promote(clean.memoryId);
    const promoted = await ledger.client("agent-a").promote(source.memoryId);

    const rejected = (await decisionOf(store, ledger.app, promoted.promotionId)).event as MemoryPromotionRejected;
    await decisionOf(store, ledger.app, cleanPromotion.promotionId);
    expect(rejected.type).toBe("memory.promotion_rejected");
    const codes = rejected.data.reasons.map((r) => r.code);
    expect(codes).toContain("secret:@secretlint/secretlint-rule-github");
    expect(codes).toContain("secret:@secretlint/secretlint-rule-aws");

    const orgRaw = await rawMessages(ledger.nc, store.names.orgStream());
    expect(orgRaw.length).toBeGreaterThan(0);
    const decisionRaw = (await rawMessages(ledger.nc, store.names.appStream(ledger.app))).filter((m) => m.subject === store.names.promotion(ledger.app, promoted.promotionId));
    expect(decisionRaw).toHaveLength(1);
    for (const secret of [GITHUB_TOKEN, AWS_SECRET, GITHUB_TOKEN.slice(4, 20), AWS_SECRET.slice(0, 16)]) {
      for (const m of [...orgRaw, ...decisionRaw]) expect(m.text).not.toContain(secret);
    }
    // Nothing from the rejected memory went to the org at all.
    expect(orgRaw.every((m) => !m.text.includes(source.memoryId))).toBe(true);
  });

  it("crashed after the org append and before the decision, then restarted: exactly one org proposal, one approval, one decision", async () => {
    let crashed!: () => void;
    const crash = new Promise<void>((resolve) => (crashed = resolve));
    const first = await curator({
      policy: { autoApprove: true },
      hooks: {
        afterOrgAppend: async () => {
          // A process dying here: its connection goes, the request is never acknowledged.
          await first.nc.close();
          crashed();
          throw new Error("simulated crash");
        },
      },
    });
    const source = await approvedMemory();
    const promoted = await ledger.client("agent-a").promote(source.memoryId);
    await crash;
    const decisionSubject = store.names.promotion(ledger.app, promoted.promotionId);
    expect(await eventsOn(store, store.names.appStream(ledger.app), decisionSubject)).toHaveLength(0);
    expect((await orgEvents()).map((e) => e.event.type)).toEqual(["memory.proposed"]);

    await curator({ policy: { autoApprove: true } });
    const decision = (await decisionOf(store, ledger.app, promoted.promotionId)).event as MemoryPromotionAccepted;
    expect(decision.data).toMatchObject({ outcome: "created", orgMemoryId: orgMemoryIdOf(promoted.promotionId), approved: true });
    const org = await eventually("the org approval", async () => {
      const events = await orgEvents();
      return events.length >= 2 ? events : undefined;
    });
    expect(org.map((e) => e.event.type)).toEqual(["memory.proposed", "memory.approved"]);
    expect(org.every((e) => e.event.aggregateId === decision.data.orgMemoryId)).toBe(true);
    expect(await eventsOn(store, store.names.appStream(ledger.app), decisionSubject)).toHaveLength(1);
  });

  it("the same request delivered again (consumer reset, beyond any dedupe window) or to two curators at once gives one org memory and one decision", async () => {
    const source = await approvedMemory();
    const promoted = await ledger.client("agent-a").promote(source.memoryId);
    const request = (await eventsOn(store, store.names.appStream(ledger.app), store.names.aggregate(ledger.app, "memory", source.memoryId))).find(
      (e) => e.event.type === "memory.promotion_requested",
    )!;

    // Two curators that consume nothing, handed the same request at the same moment.
    const a = await curator({ apps: [], policy: { autoApprove: true } });
    const b = await curator({ apps: [], policy: { autoApprove: true } });
    await Promise.all([
      a.curator.promote(ledger.app, request.seq, request.event as MemoryPromotionRequested),
      b.curator.promote(ledger.app, request.seq, request.event as MemoryPromotionRequested),
    ]);
    // Then a consuming curator, whose consumer delivers the request once more.
    const c = await curator({ policy: { autoApprove: true } });
    await eventually("the consumer to pass the request", async () => {
      const consumer = await store.jsm.consumers.info(store.names.appStream(ledger.app), "curator").catch(() => undefined);
      return consumer && consumer.ack_floor.stream_seq >= request.seq ? true : undefined;
    });
    // And again after the durable consumer is deleted: a brand-new delivery of an old request.
    await stopCurator(c);
    await store.jsm.consumers.delete(store.names.appStream(ledger.app), "curator");
    await curator({ policy: { autoApprove: true } });
    await eventually("the new consumer to pass the request", async () => {
      const consumer = await store.jsm.consumers.info(store.names.appStream(ledger.app), "curator").catch(() => undefined);
      return consumer && consumer.ack_floor.stream_seq >= request.seq ? true : undefined;
    });

    const org = await orgEvents();
    expect(org.filter((e) => e.event.type === "memory.proposed")).toHaveLength(1);
    expect(org.filter((e) => e.event.type === "memory.approved")).toHaveLength(1);
    expect(new Set(org.map((e) => e.event.aggregateId))).toEqual(new Set([orgMemoryIdOf(promoted.promotionId)]));
    expect(await eventsOn(store, store.names.appStream(ledger.app), store.names.promotion(ledger.app, promoted.promotionId))).toHaveLength(1);
  });

  it("turns a near-duplicate from another app into a merge proposal: the next version of the existing org memory", async () => {
    await curator({ policy: { autoApprove: true } });
    const first = await approvedMemory();
    const firstPromotion = await ledger.client("agent-a").promote(first.memoryId);
    const created = (await decisionOf(store, ledger.app, firstPromotion.promotionId)).event as MemoryPromotionAccepted;
    await eventually("the first org memory to be active", async () => ((await orgEvents()).length >= 2 ? true : undefined));

    const other = await approvedMemory(
      {
        title: "Idempotent webhook handlers",
        body: "Payment providers retry webhook deliveries for days. Store the event id before acting and answer 200 for events already processed; refunds are retried as well.",
        paths: [],
      },
      "billing",
    );
    const second = await ledger.client("agent-b", "billing").promote(other.memoryId);
    const merged = (await decisionOf(store, "billing", second.promotionId)).event as MemoryPromotionAccepted;
    expect(merged.data).toMatchObject({ outcome: "merged", orgMemoryId: created.data.orgMemoryId, orgVersion: 2 });
    expect(merged.data.reasons[0]).toMatchObject({ code: "merged" });

    const org = await orgEvents();
    const revisions = org.filter((e) => e.event.type === "memory.proposed").map((e) => e.event as Proposed);
    expect(revisions.map((e) => [e.aggregateId, e.data.version])).toEqual([
      [created.data.orgMemoryId, 1],
      [created.data.orgMemoryId, 2],
    ]);
    expect(revisions[1]!.data.provenance).toMatchObject({ promotionId: second.promotionId, source: { app: "billing", memoryId: other.memoryId } });
    expect(revisions[1]!.data.body).toContain("refunds are retried as well");
  });

  it("refuses an app-specific memory and an unvalidated one, and writes nothing to the org", async () => {
    await curator({ policy: { autoApprove: true } });
    const specific = await approvedMemory({
      title: "handleStripeEvent in src/payments/webhook.ts",
      body: "src/payments/webhook.ts calls handleStripeEvent via PaymentsRouter; see src/payments/router.ts and PAYMENTS_WEBHOOK_SECRET_NAME in src/config/payments.ts",
      paths: ["src/payments/webhook.ts", "src/payments/router.ts"],
    });
    const promotion = await ledger.client("agent-a").promote(specific.memoryId);
    const rejected = (await decisionOf(store, ledger.app, promotion.promotionId)).event as MemoryPromotionRejected;
    expect(rejected.data.reasons.map((r) => r.code)).toEqual(["app_specific"]);

    // Superseded after the request, before the curator saw it: no longer validated app knowledge.
    const stopped = running.pop()!;
    await stopCurator(stopped);
    const source = await approvedMemory({ title: "Log timestamps in UTC", body: "Every service logs timestamps in UTC with an explicit offset." });
    const late = await ledger.client("agent-a").promote(source.memoryId);
    await ledger.client("human:alice").supersede(source.memoryId, "wrong: we log local time now");
    await curator({ policy: { autoApprove: true } });
    const unvalidated = (await decisionOf(store, ledger.app, late.promotionId)).event as MemoryPromotionRejected;
    expect(unvalidated.data.reasons.map((r) => r.code)).toEqual(["unvalidated"]);
    expect(await streamMessageCount(ledger.nc, store.names.orgStream())).toBe(0);
  });
});

/** Every event of a stream, oldest first; none when the stream does not exist yet. */
async function eventsOnAll(store: EventStore, stream: string) {
  return store.readLog(stream, { limit: 10_000 }).catch(() => []);
}
