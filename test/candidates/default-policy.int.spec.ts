import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MemledgerError } from "../../schemas/errors.js";
import { startLedger, streamMessageCount, type Ledger } from "../support/env.js";

/**
 * Session candidates under the built-in default policy (no policy file, real NATS): the owner's
 * candidates are in force at once (auto-approved by the policy) and read by it alone; the guard's own
 * rules refuse every other agent's write, a forged or ended session, and a promotion to the org, even
 * though the default lets every actor change every memory outside the org. Each refusal appends nothing.
 */

async function refused(work: Promise<unknown>): Promise<MemledgerError> {
  const err = await work.then(
    () => null,
    (e: unknown) => e as MemledgerError,
  );
  if (err === null) throw new Error("expected a refusal");
  return err;
}

describe("session candidates under the built-in default policy", () => {
  let ledger: Ledger;
  let session: string;
  let other: string;
  let candidate: string;
  const count = () => streamMessageCount(ledger.nc, ledger.service.names.appStream(ledger.app));

  beforeAll(async () => {
    ledger = await startLedger();
    const alice = ledger.client("alice");
    session = (await alice.startSession({ task: "t", worktree: "/w/a" })).sessionId;
    other = (await alice.startSession({ task: "t2", worktree: "/w/b" })).sessionId;
    const outcome = await alice.propose({ title: "Speculative pelican rule", body: "The pelican job retries on 502 only.", kind: "fragile", paths: ["src/pelican.ts"], scope: `session:${session}` });
    candidate = outcome.memoryId;
    expect((outcome as { autoApproved?: { type: string } | null }).autoApproved).toMatchObject({ type: "memory.approved" });
  });

  afterAll(async () => {
    await ledger?.cleanup();
  });

  it("the owner's candidate is active at once; the owner revises it while the session lasts", async () => {
    const alice = ledger.client("alice");
    expect(await alice.show(candidate)).toMatchObject({ status: "active", scope: `session:${session}` });
    const revised = await alice.propose({ memoryId: candidate, title: "Speculative pelican rule", body: "The pelican job retries on 502 and 503." });
    expect(revised.version).toBe(2);
    expect((await alice.show(candidate)).activeVersion).toBe(2);
  });

  it("bob may neither read nor change it, nor write into alice's session, nor a forged one; nothing is appended", async () => {
    const bob = ledger.client("bob");
    const before = await count();
    for (const attempt of [
      () => bob.show(candidate),
      () => bob.history(candidate),
      () => bob.log({ memoryId: candidate }),
      () => bob.propose({ memoryId: candidate, title: "x", body: "x" }),
      () => bob.approve(candidate),
      () => bob.supersede(candidate, "mine now"),
      () => bob.rollback(candidate, 1),
      () => bob.propose({ title: "x", body: "x", scope: `session:${session}` }),
      () => bob.propose({ title: "x", body: "x", scope: "session:no-such-session" }),
      () => ledger.client("human:carol").propose({ title: "x", body: "x", scope: `session:${session}` }),
    ]) {
      expect((await refused(attempt())).code).toBe("forbidden");
    }
    expect((await bob.log({ limit: 1000 })).filter((e) => e.scope.startsWith("session:"))).toEqual([]);
    const pack = await bob.hydrate({ task: "pelican retries", paths: ["src/pelican.ts"], budget: 4000 });
    expect(pack.markdown).not.toMatch(/502|Speculative pelican/);
    expect(await count()).toBe(before);
  });

  it("nobody sends a candidate to the org, not even its owner; nothing is appended", async () => {
    const before = await count();
    const err = await refused(ledger.client("alice").promote(candidate));
    expect(err.code).toBe("forbidden");
    expect(err.message).toMatch(/promoted by the session-end review/);
    expect(await count()).toBe(before);
  });

  it("hydrate from a session of another worktree leaves the candidate out; from its own it is there", async () => {
    const alice = ledger.client("alice");
    const inOther = await alice.hydrate({ task: "pelican retries", paths: ["src/pelican.ts"], budget: 4000, sessionId: other });
    expect(inOther.markdown).not.toContain(candidate);
    const inOwn = await alice.hydrate({ task: "pelican retries", paths: ["src/pelican.ts"], budget: 4000, sessionId: session });
    expect(inOwn.markdown).toContain(candidate);
  });

  it("once the session ended it takes no candidate and no revision (conflict), and nothing is appended", async () => {
    const alice = ledger.client("alice");
    await alice.endSession(session, {});
    // Exposure receipts of the packs above are appended after their replies: let them land first.
    await ledger.service.flushExposure();
    const before = await count();
    for (const attempt of [() => alice.propose({ title: "late", body: "late", scope: `session:${session}` }), () => alice.propose({ memoryId: candidate, title: "late", body: "late" })]) {
      const err = await refused(attempt());
      expect(err).toMatchObject({ code: "conflict", details: { reason: "already_ended" } });
    }
    expect(await count()).toBe(before);
  });
});
