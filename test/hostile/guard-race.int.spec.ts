import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryDecider, type MemoryCommand, type MemoryState } from "../../commands/memory.js";
import { MemledgerError } from "../../schemas/errors.js";
import { PolicyGuard } from "../../services/auth/guard.js";
import { CommandHandler, idForKey, type CommandContext } from "../../services/command-handler.js";
import { HOSTILE_POLICY, startGovernedLedger, type GovernedLedger } from "./governed-ledger.js";

/**
 * Issue 9 item 9: authorisation skipped for a memory not yet known. The guard used to read the memory's
 * scope first and, finding no memory, let the command through unchecked; a revision sent for an id that
 * another agent's keyed proposal was creating at that moment then landed in that agent's scratchpad. The
 * check now runs inside the command handler's decide step, on every attempt, against the state the
 * command is finally decided on.
 */

const APP = "app1";
const bobsId = (key: string) => idForKey({ app: APP, actor: { kind: "agent", id: "bob" } }, "memory", key);

describe("a command racing the creation of the memory it names", () => {
  let ledger: GovernedLedger;

  beforeAll(async () => {
    ledger = await startGovernedLedger(HOSTILE_POLICY, { label: "race" });
    await (await ledger.clientAs("agent:bob")).propose({ title: "seed", body: "the stream exists", scope: "agent:bob" });
  });
  afterAll(async () => {
    await ledger?.stop();
  });

  it("agents as themselves: alice's revisions and approvals sent with bob's keyed proposals are all refused; only bob's events land", async () => {
    const bob = await ledger.clientAs("agent:bob");
    const alice = await ledger.clientAs("agent:alice");
    const stream = ledger.service.names.appStream(APP);
    const before = (await ledger.broker.streamCounts())[stream]!;
    const ROUNDS = 25;
    const codes: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const key = `pad-${round}`;
      const id = bobsId(key);
      // Bob's first, alice's right behind it: the service handles them at once.
      const [created, ...hijacks] = await Promise.allSettled([
        bob.propose({ title: `bob's note ${round}`, body: "mine", scope: "agent:bob", key }),
        alice.propose({ memoryId: id, title: "hijacked", body: "alice was here" }),
        alice.approve(id),
      ]);
      expect(created.status).toBe("fulfilled");
      for (const outcome of hijacks) {
        expect(outcome.status).toBe("rejected");
        const err = (outcome as PromiseRejectedResult).reason as MemledgerError;
        expect(err).toBeInstanceOf(MemledgerError);
        // Decided before bob's proposal: no such memory; after it: forbidden on bob's scratchpad.
        expect(["forbidden", "not_found"]).toContain(err.code);
        if (err.code === "forbidden") expect(err.message).toMatch(/^agent:alice may not (propose|approve) in scope agent:bob/);
        codes.push(err.code);
      }
    }
    // The race was run, not only lost: most refusals were decided on bob's memory.
    expect(codes.filter((c) => c === "forbidden").length).toBeGreaterThan(0);
    // Each round: bob's proposal and the policy's approval, nothing else.
    expect((await ledger.broker.streamCounts())[stream]).toBe(before + 2 * ROUNDS);
    const log = await bob.log({ limit: 1000 });
    const actors = new Set(log.filter((e) => e.type.startsWith("memory.")).map((e) => `${e.actor.kind}:${e.actor.id}`));
    expect([...actors].sort()).toEqual(["agent:bob", "service:policy"]);
  });

  it("deterministically: a handler whose cache says 'no memory' authorises again on the state it finally decides on", async () => {
    const { store } = ledger.service;
    const guard = new PolicyGuard(ledger.policy, { approve: async () => Promise.reject(new Error("not used")) });
    const aliceCtx: CommandContext = { app: APP, actor: { kind: "agent", id: "alice" } };
    const bobCtx: CommandContext = { app: APP, actor: { kind: "agent", id: "bob" }, key: "race-det" };
    const id = bobsId("race-det");
    const revision: MemoryCommand = { type: "propose", revision: true, title: "hijacked", body: "alice was here", kind: "note", tags: [], paths: [], importance: 3 };
    const request = { memoryId: id, title: "hijacked", body: "alice was here" };

    // alice's instance looked the memory up before it existed (what the old guard did), and cached that.
    const alicesHandler = new CommandHandler(store);
    expect((await alicesHandler.load(memoryDecider, APP, id)).state.scope).toBeNull();
    // bob's keyed proposal lands through another instance.
    const bobsHandler = new CommandHandler(store);
    const bobsCommand: MemoryCommand = { ...revision, revision: false, scope: "agent:bob", title: "bob's note", body: "mine" };
    await bobsHandler.execute(memoryDecider, id, bobsCommand, bobCtx, { isNew: true });
    const stream = ledger.service.names.appStream(APP);
    const before = (await ledger.broker.streamCounts())[stream];

    const seen: (string | null)[] = [];
    const check = guard.prepare("propose", request, aliceCtx)!;
    const authorize = (state: MemoryState) => {
      seen.push(state.scope);
      check.authorize(state.scope);
    };
    const err = await alicesHandler.execute(memoryDecider, id, revision, aliceCtx, { authorize }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "forbidden", message: expect.stringMatching(/^agent:alice may not propose in scope agent:bob/) });
    // Judged first on the stale cache (no memory: allowed as a proposal to app), then on bob's memory.
    expect(seen).toEqual([null, "agent:bob"]);
    expect((await ledger.broker.streamCounts())[stream]).toBe(before);

    // The old order (check once, before the handler) would have let it through: the check passes on
    // the stale view, and the handler appends alice's revision into bob's scratchpad.
    const staleHandler = new CommandHandler(store);
    const other = bobsId("race-old");
    await staleHandler.load(memoryDecider, APP, other);
    await bobsHandler.execute(memoryDecider, other, bobsCommand, { ...bobCtx, key: "race-old" }, { isNew: true });
    const oldCheck = guard.prepare("propose", { ...request, memoryId: other }, aliceCtx)!;
    expect(() => oldCheck.authorize(null)).not.toThrow();
    const landed = await staleHandler.execute(memoryDecider, other, revision, aliceCtx);
    expect(landed.state.scope).toBe("agent:bob");
    expect(landed.event.actor).toEqual({ kind: "agent", id: "alice" });
  });
});
