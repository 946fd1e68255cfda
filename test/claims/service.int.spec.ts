import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { claimIdOf } from "../../commands/claim.js";
import { CommandService } from "../../services/command-service.js";
import { MemoryClient } from "../../services/client.js";
import { closeAll, openConnections, rejectionOf } from "../ledger/support.js";
import { startLedger, streamMessageCount, type Ledger } from "../support/env.js";
import { manualClock } from "./support.js";

const MIN = 60_000;

describe("claims over the command service (real NATS)", () => {
  let ledger: Ledger;
  const clock = manualClock(Date.parse("2025-06-01T12:00:00.000Z"));

  beforeEach(async () => {
    ledger = await startLedger({ now: clock.now });
  });
  afterEach(async () => {
    await ledger.cleanup();
  });

  const stream = () => ledger.service.names.appStream(ledger.app);

  it("lets exactly one of many concurrent claimants win; the others learn who holds it", async () => {
    // A second service instance in the same queue group, and every claimant on its own connection.
    const [serviceConnection, ...connections] = await openConnections(9, `claims-${ledger.prefix}`);
    const second = await CommandService.start(serviceConnection!, { prefix: ledger.prefix, now: clock.now });
    try {
      const agents = connections.map((nc, i) => new MemoryClient(nc, { app: ledger.app, as: `agent-${i}`, prefix: ledger.prefix }));
      const results = await Promise.allSettled(agents.map((agent) => agent.claim("ship-it", { ttlMs: 10 * MIN })));
      const winners = results.filter((r) => r.status === "fulfilled");
      expect(winners).toHaveLength(1);
      const winner = (winners[0] as PromiseFulfilledResult<Awaited<ReturnType<MemoryClient["claim"]>>>).value;
      expect(winner).toMatchObject({ claimId: "task-ship-it", kind: "task", name: "ship-it", expiresAt: new Date(clock.ms() + 10 * MIN).toISOString(), takeoverOf: null, replayed: false });
      for (const loser of results.filter((r) => r.status === "rejected")) {
        const error = (loser as PromiseRejectedResult).reason;
        expect(error.code).toBe("conflict");
        expect(error.details).toMatchObject({ reason: "held", holder: winner.holder, expiresAt: winner.expiresAt });
      }
      expect(await streamMessageCount(ledger.nc, stream())).toBe(1);
    } finally {
      await second.stop();
      await closeAll([serviceConnection!, ...connections]);
    }
  });

  it("lets another agent take over a lapsed lease; the old holder can neither renew nor release", async () => {
    const a = ledger.client("agent-a");
    const b = ledger.client("agent-b");
    const first = await a.claim("src/services/client.ts", { kind: "lock", ttlMs: 5 * MIN });
    expect(first.claimId).toBe(claimIdOf("lock", "src/services/client.ts"));

    clock.advance(5 * MIN - 1);
    const early = await rejectionOf(b.claim("src/services/client.ts", { kind: "lock" }));
    expect(early.code).toBe("conflict");
    expect(early.details).toMatchObject({ holder: "agent-a", expiresAt: first.expiresAt });

    clock.advance(1);
    const takeover = await b.claim("src/services/client.ts", { kind: "lock", ttlMs: 5 * MIN });
    expect(takeover).toMatchObject({ holder: "agent-b", takeoverOf: { holder: "agent-a", expiresAt: first.expiresAt } });

    const renewal = await rejectionOf(a.renew("src/services/client.ts", { kind: "lock" }));
    expect(renewal.code).toBe("conflict");
    expect(renewal.details).toMatchObject({ reason: "not_holder", holder: "agent-b", expiresAt: takeover.expiresAt });
    expect((await rejectionOf(a.release("src/services/client.ts", { kind: "lock" }))).details).toMatchObject({ reason: "not_holder", holder: "agent-b" });

    const shown = await a.showClaim("src/services/client.ts", { kind: "lock" });
    expect(shown).toMatchObject({ kind: "lock", name: "src/services/client.ts", holder: "agent-b", live: true, seq: takeover.seq });
    expect(await streamMessageCount(ledger.nc, stream())).toBe(2);
  });

  it("renews only a live lease of the holder, and a done task can never be claimed again", async () => {
    const a = ledger.client("agent-a");
    const b = ledger.client("agent-b");
    const opened = await a.openTask("write-docs", { title: "Write the claims docs", priority: 1 });
    expect(opened).toMatchObject({ type: "claim.task_opened", holder: null, done: false });
    await a.claim("write-docs", { ttlMs: 10 * MIN });

    clock.advance(9 * MIN);
    const renewed = await a.renew("write-docs", { ttlMs: 20 * MIN });
    expect(renewed).toMatchObject({ type: "claim.renewed", holder: "agent-a", expiresAt: new Date(clock.ms() + 20 * MIN).toISOString() });
    expect((await rejectionOf(b.renew("write-docs"))).details).toMatchObject({ reason: "not_holder", holder: "agent-a" });
    expect((await rejectionOf(a.claim("write-docs"))).details).toMatchObject({ reason: "already_held" });

    clock.advance(20 * MIN);
    const lapsed = await rejectionOf(a.renew("write-docs"));
    expect(lapsed.code).toBe("conflict");
    expect(lapsed.details).toMatchObject({ reason: "expired", holder: "agent-a", expiresAt: renewed.expiresAt });

    // Nobody took it: the holder may still finish it.
    const done = await a.release("write-docs", { done: true });
    expect(done).toMatchObject({ type: "claim.released", holder: null, done: true });
    expect((await rejectionOf(b.claim("write-docs"))).details).toMatchObject({ reason: "done" });
    expect((await rejectionOf(a.openTask("write-docs"))).details).toMatchObject({ reason: "done" });
  });

  it("answers a retried keyed claim from the log, with one event", async () => {
    const a = ledger.client("agent-a");
    const first = await a.claim("retry-me", { key: "k-1" });
    const again = await a.claim("retry-me", { key: "k-1" });
    expect(again).toMatchObject({ seq: first.seq, eventId: first.eventId, holder: "agent-a", expiresAt: first.expiresAt, replayed: true });
    expect(await streamMessageCount(ledger.nc, stream())).toBe(1);
  });

  it("refuses bad input with `invalid` and appends nothing", async () => {
    const a = ledger.client("agent-a");
    const cases: Array<Promise<unknown>> = [
      a.claim("not.a.task id"),
      a.claim("x".repeat(60)),
      a.claim("ok", { ttlMs: 24 * 60 * MIN + 1 }),
      a.claim("ok", { ttlMs: 10 }),
      a.claim("ok", { priority: 9 }),
      a.claim("", { kind: "lock" }),
      a.claim("line\nbreak", { kind: "lock" }),
      a.openTask("bad name"),
      a.release("src/a.ts", { kind: "lock", done: true }),
      a.claim("ok", { kind: "file" } as never),
      a.request("claim", { name: "ok", holder: "agent-b" } as never),
    ];
    for (const pending of cases) expect((await rejectionOf(pending)).code).toBe("invalid");
    expect(await streamMessageCount(ledger.nc, stream())).toBe(0);
  });

  it("answers renew and release of an unknown claim with not_found", async () => {
    const a = ledger.client("agent-a");
    expect((await rejectionOf(a.renew("ghost"))).code).toBe("not_found");
    expect((await rejectionOf(a.release("src/ghost.ts", { kind: "lock" }))).code).toBe("not_found");
    expect((await rejectionOf(a.showClaim("ghost"))).code).toBe("not_found");
  });

  it("answers the claims and tasks queries with unavailable when no Redis projection is configured", async () => {
    const a = ledger.client("agent-a");
    expect((await rejectionOf(a.claims())).code).toBe("unavailable");
    expect((await rejectionOf(a.tasks())).code).toBe("unavailable");
  });
});
