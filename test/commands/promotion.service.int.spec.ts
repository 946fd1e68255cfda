import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { promotionIdOf } from "../../commands/promotion.js";
import { MemledgerError } from "../../schemas/errors.js";
import { startLedger, streamMessageCount, type Ledger } from "../support/env.js";

/** The promote verb through the real command service and NATS: refusals are typed and append nothing. */
describe("promote (command service)", () => {
  let ledger: Ledger;
  beforeEach(async () => {
    ledger = await startLedger({ app: "shop" });
  });
  afterEach(async () => {
    await ledger.cleanup();
  });

  const count = () => streamMessageCount(ledger.nc, ledger.service.names.appStream(ledger.app));
  const refusal = async (work: Promise<unknown>) => {
    const err = await work.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MemledgerError);
    return err as MemledgerError;
  };

  async function approved() {
    const agent = ledger.client("agent-a");
    const { memoryId } = await agent.propose({ scope: "app", title: "Use UTC in logs", body: "Every service logs timestamps in UTC." });
    await ledger.client("human:alice").approve(memoryId);
    return memoryId;
  }

  it("appends one promotion request on the memory's subject and shows it as pending", async () => {
    const memoryId = await approved();
    const before = await count();
    const agent = ledger.client("agent-a");
    const outcome = await agent.promote(memoryId, { reason: "true in every service" });
    expect(outcome).toMatchObject({ memoryId, version: 1, promotionId: promotionIdOf(ledger.app, memoryId, 1), type: "memory.promotion_requested", replayed: false });
    expect(await count()).toBe(before + 1);
    const log = await agent.log({ memoryId });
    expect(log.at(-1)).toMatchObject({ type: "memory.promotion_requested", seq: outcome.seq, subject: ledger.service.names.aggregate(ledger.app, "memory", memoryId) });
    const shown = await agent.show(memoryId);
    expect(shown.promotions).toEqual([expect.objectContaining({ promotionId: outcome.promotionId, status: "pending", decision: null, reason: "true in every service" })]);
    // The lifecycle is untouched: still active at version 1.
    expect(shown).toMatchObject({ status: "active", activeVersion: 1 });
  });

  it("refuses a second promotion of the same version (conflict) but replays a keyed retry", async () => {
    const memoryId = await approved();
    const agent = ledger.client("agent-a");
    const first = await agent.promote(memoryId, { key: "k1" });
    const retried = await agent.promote(memoryId, { key: "k1" });
    expect(retried).toMatchObject({ promotionId: first.promotionId, seq: first.seq, replayed: true });
    const before = await count();
    const err = await refusal(agent.promote(memoryId));
    expect(err.code).toBe("conflict");
    expect(err.details).toMatchObject({ reason: "already_promoted", promotionId: first.promotionId });
    expect(await count()).toBe(before);
  });

  it("refuses unknown, unapproved and malformed promotions with typed errors, appending nothing", async () => {
    const agent = ledger.client("agent-a");
    const { memoryId } = await agent.propose({ scope: "app", title: "Pending", body: "Not approved yet." });
    const before = await count();
    expect((await refusal(agent.promote(memoryId))).code).toBe("conflict");
    expect((await refusal(agent.promote("no-such-memory"))).code).toBe("not_found");
    expect((await refusal(agent.promote(memoryId, { reason: "   " }))).code).toBe("invalid");
    expect((await refusal(agent.promote(memoryId, { reason: "x".repeat(2001) }))).code).toBe("invalid");
    expect((await refusal(agent.request("promote", { memoryId: "bad.id" } as never))).code).toBe("invalid");
    expect((await refusal(agent.request("promote", { memoryId, extra: true } as never))).code).toBe("invalid");
    expect(await count()).toBe(before);
  });
});
