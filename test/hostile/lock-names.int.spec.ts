import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { claimIdOf } from "../../commands/claim.js";
import { MemledgerError } from "../../schemas/errors.js";
import { HOSTILE_POLICY, refusal, startGovernedLedger, type GovernedLedger } from "./governed-ledger.js";

/**
 * Issue 9 item 8: lock names that differ only in spelling. `src/payments/webhook.ts`,
 * `./src/payments/webhook.ts` and `src//payments/webhook.ts` were three locks held by three agents at
 * once. Against a private nats-server running the generated auth configuration, three agents claim the
 * three spellings at the same moment: exactly one holds the lock, the other two get `conflict` naming
 * the holder, and one event is appended. A path outside the repository is `invalid`, nothing appended.
 */

const SPELLINGS = ["src/payments/webhook.ts", "./src/payments/webhook.ts", "src//payments/webhook.ts"] as const;
const AGENTS = ["agent:alice", "agent:bob", "agent:carol"] as const;
/** The issue-9 policy with a third agent user in the generated configuration. */
const POLICY = { ...HOSTILE_POLICY, actors: { ...HOSTILE_POLICY.actors, "agent:carol": { roles: ["agent"] } } };

describe("one lock per path, however it is spelled (generated auth config, private nats-server)", () => {
  let ledger: GovernedLedger;
  let stream: string;

  beforeAll(async () => {
    ledger = await startGovernedLedger(POLICY, { label: "locks" });
    stream = ledger.service.names.appStream("app1");
    // The app stream exists before the race, as it does in use (and "one event appended" counts from here).
    await (await ledger.clientAs("agent:alice")).claim("warm-up", { ttlMs: 60_000 });
  });

  afterAll(async () => {
    await ledger?.stop();
  });

  it("three agents claiming the three spellings at once: one holds it, the others get conflict naming the holder", async () => {
    const clients = await Promise.all(AGENTS.map((name) => ledger.clientAs(name)));
    const before = await ledger.broker.streamCounts();
    const outcomes = await Promise.allSettled(clients.map((client, i) => client.claim(SPELLINGS[i]!, { kind: "lock", ttlMs: 10 * 60_000 })));

    const won = outcomes.flatMap((o, i) => (o.status === "fulfilled" ? [{ agent: AGENTS[i]!, claim: o.value }] : []));
    expect(won).toHaveLength(1);
    const winner = won[0]!;
    const holder = winner.agent.slice("agent:".length);
    expect(winner.claim).toMatchObject({ kind: "lock", name: "src/payments/webhook.ts", holder, claimId: claimIdOf("lock", "src/payments/webhook.ts") });

    const lost = outcomes.flatMap((o) => (o.status === "rejected" ? [o.reason as unknown] : []));
    expect(lost).toHaveLength(2);
    for (const err of lost) {
      expect(err).toBeInstanceOf(MemledgerError);
      expect(err).toMatchObject({ code: "conflict", details: { reason: "held", kind: "lock", name: "src/payments/webhook.ts", holder } });
      expect((err as MemledgerError).message).toContain(`held by ${holder}`);
    }
    const after = await ledger.broker.streamCounts();
    expect(after[stream]).toBe(before[stream]! + 1);

    // Every spelling shows the same lock, and the holder releases it by any of them.
    for (const spelling of [...SPELLINGS, "src/payments/webhook.ts/", "src\\payments\\webhook.ts"]) {
      expect(await clients[0]!.showClaim(spelling, { kind: "lock" })).toMatchObject({ claimId: winner.claim.claimId, holder });
    }
    const holderClient = clients[AGENTS.indexOf(winner.agent)]!;
    const released = await holderClient.release("./src//payments/./webhook.ts", { kind: "lock" });
    expect(released).toMatchObject({ claimId: winner.claim.claimId, holder: null });
  });

  it("a lock outside the repository (climbing out, absolute) is invalid and nothing is appended", async () => {
    const bob = await ledger.clientAs("agent:bob");
    const before = await ledger.broker.streamCounts();
    for (const name of ["../other-repo/secrets.env", "src/../../etc/passwd", "/etc/passwd", "C:\\repo\\src\\a.ts", "~/notes.md"]) {
      const err = await refusal(bob.claim(name, { kind: "lock" }));
      expect(err.code).toBe("invalid");
      expect(err.message).toMatch(/climbs out of the repository|is absolute/);
    }
    expect(await ledger.broker.streamCounts()).toEqual(before);
  });
});
