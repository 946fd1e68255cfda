import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startLedger, streamMessageCount, type Ledger } from "../support/env.js";
import { HOSTILE_POLICY, refusal, startGovernedLedger, type GovernedLedger } from "./governed-ledger.js";

/**
 * Issue 9 item 4: writing the org directly. Only the curator proposes org memories, and only roles the
 * policy names for the org approve them, whatever the catch-all rules say: a `*` scope never reaches the
 * org's writes, with a policy or with the built-in default (which names service:curator alone).
 */

// Assembled at run time so the source holds no credential-shaped literal.
const AWS_KEY_ID = ["AKIA", "Z3MQXW4B7KJ5PLRT"].join("");
const AWS_SECRET = ["9dK2mQ7vX4pL8zR1", "tY6wN3bH5jC0fG2sA7eU4iO1"].join("");
const LEAK = { title: "Deploy credentials", body: `AWS_ACCESS_KEY_ID=${AWS_KEY_ID}\nAWS_SECRET_ACCESS_KEY=${AWS_SECRET}` };
const CLEAN = { title: "Log in UTC everywhere", body: "Every service logs timestamps in UTC with an explicit offset, so incidents line up." };

// The broker configuration narrows command subjects to the policy's apps: without the list, the org's
// command subjects are open at the broker, so what is tested here is the command service's own refusal.
const { apps: _apps, ...ORG_POLICY } = HOSTILE_POLICY;

describe("the org under a policy, actors as themselves on the generated broker", () => {
  let ledger: GovernedLedger;
  const QUERIES = ["UTC", "credentials"];

  beforeAll(async () => {
    ledger = await startGovernedLedger(ORG_POLICY, { label: "org" });
    // As in any deployment, where the curator creates it when it starts: a refusal must not change it.
    await ledger.service.store.ensureOrgStream();
    // Something in the app, so snapshots compare more than empty trees.
    await (await ledger.clientAs("agent:alice")).propose({ title: "An app memory", body: "present before the attacks" });
  });
  afterAll(async () => {
    await ledger?.stop();
  });

  it("an agent, a reviewer and an admin (`*` on `*`) may not propose org memories, in the org or as scope org of an app", async () => {
    const before = await ledger.snapshot(QUERIES);
    for (const name of ["agent:alice", "human:rita", "human:root"]) {
      const err = await refusal((await ledger.clientAs(name, "org")).propose(CLEAN));
      expect(err.code).toBe("forbidden");
      expect(err.message).toMatch(new RegExp(`^${name} may not propose in scope org: missing permission propose on org`));
      // The AWS key is refused too: by this rule, or first by the secret gate (invalid).
      expect(["forbidden", "invalid"]).toContain((await refusal((await ledger.clientAs(name, "org")).propose(LEAK))).code);
      const asScope = await refusal((await ledger.clientAs(name, "app1")).propose({ ...CLEAN, scope: "org" }));
      expect(asScope).toMatchObject({ code: "forbidden", message: expect.stringMatching(/may not propose in scope org/) });
    }
    expect(await ledger.snapshot(QUERIES)).toEqual(before);
  });

  it("the curator proposes; only the role that names the org approves it, not an agent, a reviewer or the proposer's peers", async () => {
    const curator = await ledger.clientAs("service:curator", "org");
    const proposed = await curator.propose(CLEAN);
    const before = await ledger.snapshot(QUERIES);
    for (const name of ["agent:alice", "human:rita", "human:mallory"]) {
      const err = await refusal((await ledger.clientAs(name, "org")).approve(proposed.memoryId));
      expect(err).toMatchObject({ code: "forbidden", message: expect.stringMatching(new RegExp(`^${name} may not approve in scope org`)) });
    }
    expect(await ledger.snapshot(QUERIES)).toEqual(before);
    // The admin role names the org for review: it approves.
    const approved = await (await ledger.clientAs("human:root", "org")).approve(proposed.memoryId);
    expect(approved).toMatchObject({ version: 1, type: "memory.approved" });
  });
});

describe("the org without any policy (the built-in default)", () => {
  let ledger: Ledger;
  beforeEach(async () => {
    ledger = await startLedger();
  });
  afterEach(async () => {
    await ledger.cleanup();
  });

  it("an agent neither proposes (an AWS key, or anything) nor approves org memories; only service:curator proposes", async () => {
    const orgStream = ledger.service.names.orgStream();
    const agent = ledger.client("agent-a", "org");
    for (const content of [LEAK, CLEAN]) {
      const err = await refusal(agent.propose(content));
      // The secret gate may answer first for the key (invalid); either way nothing lands.
      expect(["forbidden", "invalid"]).toContain(err.code);
    }
    expect((await refusal(agent.propose(CLEAN))).code).toBe("forbidden");
    expect(await streamMessageCount(ledger.nc, orgStream)).toBe(0);

    const proposed = await ledger.client("service:curator", "org").propose(CLEAN);
    expect(await streamMessageCount(ledger.nc, orgStream)).toBe(1);
    for (const who of ["agent-a", "human:alice"]) {
      const err = await refusal(ledger.client(who, "org").approve(proposed.memoryId));
      expect(err).toMatchObject({ code: "forbidden", message: expect.stringMatching(/may not approve in scope org/) });
    }
    expect(await streamMessageCount(ledger.nc, orgStream)).toBe(1);
  });
});
