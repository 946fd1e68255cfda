import { afterEach, describe, expect, it } from "vitest";
import { claimDecider, claimIdOf } from "../../commands/claim.js";
import { memoryDecider } from "../../commands/memory.js";
import type { AppendOutcome, ClaimOutcome } from "../../schemas/commands.js";
import { CommandService } from "../../services/command-service.js";
import { startLedger, streamMessageCount, type Ledger } from "../support/env.js";
import { json, probe, rejectionOf, extraInstances } from "./support.js";

/**
 * Issue 8 item 4: two command-service instances on one prefix, each with its own cache. A refusal that
 * one instance decides against its cached state (which the other instance moved on) must be decided
 * again against the log before it is answered; a refusal the log confirms stays a refusal, and stores
 * nothing.
 */
describe("stale caches across instances", () => {
  let ledger: Ledger | undefined;
  const extra = extraInstances();

  afterEach(async () => {
    await extra.stopAll();
    await ledger?.cleanup();
    ledger = undefined;
  });

  async function twoInstances(): Promise<{ l: Ledger; a: CommandService; b: CommandService }> {
    ledger = await startLedger();
    const b = await extra.start(ledger);
    return { l: ledger, a: ledger.service, b };
  }

  /** Sends one command to one instance (no queue group in between), as `as`. */
  const on = <T>(service: CommandService, l: Ledger, as: string, verb: string, payload: unknown) =>
    service.dispatch(l.client(as).subjectFor(verb), json(payload)) as Promise<T>;

  it("A approves v1, B proposes v2, approving v2 on A succeeds (A's cache said: no pending version)", async () => {
    const { l, a, b } = await twoInstances();
    const count = () => streamMessageCount(l.nc, a.names.appStream(l.app));
    const v1 = await on<AppendOutcome>(a, l, "author", "propose", { title: "Deploys", body: "Deploy on Tuesdays." });
    await on<AppendOutcome>(a, l, "human:rita", "approve", { memoryId: v1.memoryId });
    // A's cache now holds the memory with nothing pending.
    expect((await a.handler.load(memoryDecider, l.app, v1.memoryId)).state.versions.map((v) => v.status)).toEqual(["approved"]);

    const v2 = await on<AppendOutcome>(b, l, "author", "propose", { memoryId: v1.memoryId, title: "Deploys", body: "Deploy on Tuesdays and Thursdays." });
    expect(v2.version).toBe(2);

    const aProbe = probe(a);
    const approved = await on<AppendOutcome>(a, l, "human:rita", "approve", { memoryId: v1.memoryId });
    expect(approved).toMatchObject({ version: 2, type: "memory.approved", replayed: false });
    expect(aProbe.appended).toBe(1);
    const shown = await l.client().show(v1.memoryId);
    expect(shown.activeVersion).toBe(2);
    expect(shown.versions.map((v) => v.status)).toEqual(["approved", "approved"]);

    // A refusal the log confirms is still a refusal, and nothing is appended: nothing is pending now,
    // on either instance's view.
    const before = await count();
    const refused = await rejectionOf(on(a, l, "human:rita", "approve", { memoryId: v1.memoryId }));
    expect(refused.code).toBe("conflict");
    expect(refused.details.reason).toBe("no_pending_version");
    const refusedOnB = await rejectionOf(on(b, l, "human:rita", "reject", { memoryId: v1.memoryId, reason: "no" }));
    expect(refusedOnB.code).toBe("conflict");
    expect(await count()).toBe(before);
  });

  it("a release on B, then a claim on A succeeds (A's cache said: task is held by x)", async () => {
    const { l, a, b } = await twoInstances();
    const count = () => streamMessageCount(l.nc, a.names.appStream(l.app));
    await on<ClaimOutcome>(a, l, "x", "claim", { name: "migrate-db", ttlMs: 60_000 });
    // A's cache: held by x, live.
    expect((await a.handler.load(claimDecider, l.app, claimIdOf("task", "migrate-db"))).state.holder).toBe("x");
    // y is refused while x holds it, on A (the log agrees: nothing stored).
    const before = await count();
    const held = await rejectionOf(on(a, l, "y", "claim", { name: "migrate-db" }));
    expect(held).toMatchObject({ code: "conflict" });
    expect(held.details).toMatchObject({ reason: "held", holder: "x" });
    expect(await count()).toBe(before);

    await on<ClaimOutcome>(b, l, "x", "release", { name: "migrate-db" });
    const claimed = await on<ClaimOutcome>(a, l, "y", "claim", { name: "migrate-db", ttlMs: 60_000 });
    expect(claimed).toMatchObject({ holder: "y", type: "claim.claimed", takeoverOf: null, replayed: false });

    // And the other way round: y releases on A, x claims on B; A's cache says nobody holds it, so x's
    // renew there would be "not held": decided again on the log, it finds x the holder.
    await on<ClaimOutcome>(a, l, "y", "release", { name: "migrate-db" });
    await on<ClaimOutcome>(b, l, "x", "claim", { name: "migrate-db", ttlMs: 60_000 });
    const renewed = await on<ClaimOutcome>(a, l, "x", "renew", { name: "migrate-db", ttlMs: 120_000 });
    expect(renewed).toMatchObject({ holder: "x", type: "claim.renewed" });
    const view = await l.client().showClaim("migrate-db");
    expect(view.holder).toBe("x");
  });

  it("a rollback and a supersede refused on a stale cache are decided again on the log", async () => {
    const { l, a, b } = await twoInstances();
    const p = await on<AppendOutcome>(a, l, "author", "propose", { title: "Ports", body: "8080." });
    await on(a, l, "human:rita", "approve", { memoryId: p.memoryId });
    // A caches one approved version: a rollback to 2 is "no version 2" there.
    await a.handler.load(memoryDecider, l.app, p.memoryId);
    await on(b, l, "author", "propose", { memoryId: p.memoryId, title: "Ports", body: "9090." });
    await on(b, l, "human:rita", "approve", { memoryId: p.memoryId, version: 2 });
    await on(b, l, "human:rita", "rollback", { memoryId: p.memoryId, toVersion: 1 });
    const rolled = await on<AppendOutcome>(a, l, "human:rita", "rollback", { memoryId: p.memoryId, toVersion: 2 });
    expect(rolled).toMatchObject({ type: "memory.rolled_back", version: 2 });

    // B supersedes; A (cached: active) is asked for a revision: the log says superseded, and so does A.
    await on(b, l, "human:rita", "supersede", { memoryId: p.memoryId, reason: "moved to config" });
    const err = await rejectionOf(on(a, l, "author", "propose", { memoryId: p.memoryId, title: "Ports", body: "7070." }));
    expect(err.code).toBe("conflict");
    expect(err.details.reason).toBe("superseded");
  });
});
