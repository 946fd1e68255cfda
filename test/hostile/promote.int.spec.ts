import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Curator } from "../../services/curator/index.js";
import { eventually } from "../support/eventually.js";
import { HOSTILE_POLICY, refusal, startGovernedLedger, type GovernedLedger } from "./governed-ledger.js";

/**
 * Issue 9 item 2: promoting someone else's scratchpad. `promote` is governed on the stored memory's
 * scope, so an actor with no rights (or another agent) is refused with nothing appended; and the curator
 * never lets a scratchpad (`agent:*`) into the org, even when its own agent asks.
 */
describe("promote is governed, and the curator refuses scratchpads", () => {
  let ledger: GovernedLedger;
  let curator: Curator;
  let bobsPad: string;
  const QUERIES = ["launch codes", "retry webhooks"];

  beforeAll(async () => {
    ledger = await startGovernedLedger(HOSTILE_POLICY, { label: "promote" });
    curator = await Curator.start(ledger.serviceNc, { prefix: ledger.prefix, access: ledger.policy, discoverEveryMs: 100, ackWaitMs: 1_000 });
    const bob = await ledger.clientAs("agent:bob");
    // Auto-approved by the policy: an approved, active memory, the kind promote accepts.
    bobsPad = (await bob.propose({ title: "Bob's launch codes", body: "The launch codes for the staging deploy live in bob's head.", scope: "agent:bob" })).memoryId;
    expect((await bob.show(bobsPad)).status).toBe("active");
  });

  afterAll(async () => {
    await curator?.stop().catch(() => undefined);
    await ledger?.stop();
  });

  it("an actor with no rights, another agent and a reviewer are forbidden to promote bob's scratchpad; nothing changes", async () => {
    const before = await ledger.snapshot(QUERIES);
    for (const name of ["human:mallory", "agent:alice", "human:rita"]) {
      const err = await refusal((await ledger.clientAs(name)).promote(bobsPad, { reason: "everyone should know" }));
      expect(err.code).toBe("forbidden");
      expect(err.message).toMatch(new RegExp(`^${name} may not promote in scope agent:bob: missing permission promote on agent:bob`));
      expect(err.details).toMatchObject({ verb: "promote", scope: "agent:bob", memoryId: bobsPad });
    }
    expect(await ledger.snapshot(QUERIES)).toEqual(before);
    expect((await (await ledger.clientAs("agent:bob")).show(bobsPad)).promotions).toEqual([]);
  });

  it("bob may ask to promote his own scratchpad, but the curator rejects it, naming why; the org stays empty", async () => {
    const bob = await ledger.clientAs("agent:bob");
    const promoted = await bob.promote(bobsPad, { reason: "I think it is general" });
    const decided = await eventually("the curator's decision", async () => {
      const view = await bob.show(bobsPad);
      const promotion = view.promotions.find((p) => p.promotionId === promoted.promotionId);
      return promotion && promotion.status !== "pending" ? promotion : undefined;
    });
    expect(decided.status).toBe("rejected");
    const reasons = decided.decision!.reasons;
    expect(reasons.map((r) => r.code)).toContain("scratchpad");
    expect(reasons.find((r) => r.code === "scratchpad")!.message).toMatch(/agent:bob, an agent's scratchpad, which is never promoted/);
    const streams = await ledger.broker.streamCounts();
    expect(streams[ledger.service.names.orgStream()] ?? 0).toBe(0);
  });

  it("control: an approved app memory is promoted by its agent and accepted into the org", async () => {
    const bob = await ledger.clientAs("agent:bob");
    const rita = await ledger.clientAs("human:rita");
    const { memoryId } = await bob.propose({
      title: "Retry webhooks with backoff",
      body: "Payment providers retry deliveries for days; answer 200 for events already processed and retry our own calls with exponential backoff.",
    });
    await rita.approve(memoryId);
    const promoted = await bob.promote(memoryId);
    const decided = await eventually("the curator's decision", async () => {
      const promotion = (await bob.show(memoryId)).promotions.find((p) => p.promotionId === promoted.promotionId);
      return promotion && promotion.status !== "pending" ? promotion : undefined;
    });
    expect(decided.status).toBe("accepted");
    expect((await ledger.broker.streamCounts())[ledger.service.names.orgStream()]).toBe(1);
  });
});
