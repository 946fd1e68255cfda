import { describe, expect, it } from "vitest";
import { PERMISSIVE_POLICY, Policy, authorize, mayRead, scopeMatches, sessionOfScope } from "../../schemas/policy.js";
import type { Actor } from "../../schemas/primitives.js";
import { ScopeReader, SessionDirectory, worktreeKey, type SessionFact } from "../../services/auth/sessions.js";

/** The policy's session patterns and the read filter's session and worktree rules, pure. */

const alice: Actor = { kind: "agent", id: "alice" };
const bob: Actor = { kind: "agent", id: "bob" };
const rita: Actor = { kind: "human", id: "rita" };
const owners: Record<string, string> = { s1: "alice", s2: "alice", b1: "bob" };
const facts = { sessionAgent: (id: string) => owners[id] ?? null };

const EXAMPLE = Policy.parse({
  version: 1,
  roles: {
    agent: { allow: [{ verbs: ["*"], scopes: ["session:self"], autoApprove: true }, { verbs: ["propose"], scopes: ["app"] }] },
    reviewer: { allow: [{ verbs: ["read", "supersede"], scopes: ["session:*"] }] },
  },
  actors: { "agent:*": { roles: ["agent"] }, "human:rita": { roles: ["reviewer"] } },
});

describe("session scopes in the policy", () => {
  it("session:self matches the acting agent's own sessions only, and nothing without facts", () => {
    expect(scopeMatches("session:self", "session:s1", alice, "propose", facts)).toBe(true);
    expect(scopeMatches("session:self", "session:b1", alice, "propose", facts)).toBe(false);
    expect(scopeMatches("session:self", "session:forged", alice, "propose", facts)).toBe(false);
    expect(scopeMatches("session:self", "session:s1", alice, "propose")).toBe(false);
    expect(scopeMatches("session:self", "session:s1", { kind: "human", id: "alice" }, "propose", facts)).toBe(false);
    expect(scopeMatches("session:*", "session:b1", rita)).toBe(true);
    expect(scopeMatches("session:*", "agent:b1", rita)).toBe(false);
    expect(sessionOfScope("session:s1")).toBe("s1");
    expect(sessionOfScope("agent:s1")).toBeNull();
  });

  it("reads: the baseline gives an agent its own sessions' candidates only; others need a rule", () => {
    for (const policy of [EXAMPLE, PERMISSIVE_POLICY]) {
      expect(mayRead(policy, alice, "session:s1", facts)).toBe(true);
      expect(mayRead(policy, bob, "session:s1", facts)).toBe(false);
      expect(mayRead(policy, alice, "session:s1")).toBe(false);
      expect(mayRead(policy, alice, "app", facts)).toBe(true);
    }
    expect(mayRead(EXAMPLE, rita, "session:s1", facts)).toBe(true);
    // Under the built-in default a human reviews session-end runs (dream-reviewer), so it reads the
    // candidates they propose to promote; a service does not.
    expect(mayRead(PERMISSIVE_POLICY, rita, "session:s1", facts)).toBe(true);
    expect(mayRead(PERMISSIVE_POLICY, { kind: "service", id: "indexer" }, "session:s1", facts)).toBe(false);
  });

  it("writes: the owner's proposals are auto-approved (the example and the built-in default); another agent's are not allowed by the example", () => {
    expect(authorize(EXAMPLE, alice, "propose", "session:s1", facts)).toMatchObject({ allowed: true, autoApprove: true });
    expect(authorize(PERMISSIVE_POLICY, alice, "propose", "session:s1", facts)).toMatchObject({ allowed: true, autoApprove: true });
    expect(authorize(EXAMPLE, bob, "propose", "session:s1", facts)).toMatchObject({ allowed: false, missing: { verb: "propose", scope: "session:s1" } });
    // The built-in default allows any agent on any scope but the org: the guard's own session rules refuse bob (test/candidates/default-policy.int.spec.ts).
    expect(authorize(PERMISSIVE_POLICY, bob, "propose", "session:s1", facts)).toMatchObject({ allowed: true, autoApprove: false });
  });

  it("policy files may name session:self, session:* and session:<id>, nothing else of the kind", () => {
    for (const scope of ["session:self", "session:*", "session:s-1"]) {
      expect(Policy.safeParse({ version: 1, roles: { r: { allow: [{ verbs: ["read"], scopes: [scope] }] } }, actors: {} }).success).toBe(true);
    }
    expect(Policy.safeParse({ version: 1, roles: { r: { allow: [{ verbs: ["read"], scopes: ["session:a.b"] }] } }, actors: {} }).success).toBe(false);
  });
});

describe("the read filter (ScopeReader)", () => {
  const sessions: Record<string, SessionFact> = {
    s1: { agentId: "alice", worktree: "/w/one", ended: false },
    s2: { agentId: "alice", worktree: "/w/two", ended: false },
    s3: { agentId: "alice", worktree: "/w/one", ended: true },
    s4: { agentId: "alice", worktree: null, ended: false },
    b1: { agentId: "bob", worktree: "/w/one", ended: false },
  };
  const directory = () => {
    const loads: string[] = [];
    return { loads, directory: new SessionDirectory(async (_app, id) => (loads.push(id), sessions[id] ?? null)) };
  };

  it("is closed for sessions it has not resolved, notes them, and answers once they are", async () => {
    const { directory: dir, loads } = directory();
    const reader = new ScopeReader(PERMISSIVE_POLICY, alice, "app1", dir, undefined);
    expect(reader.mayRead("session:s1")).toBe(false);
    expect([...reader.missed]).toEqual(["s1"]);
    await reader.resolve();
    expect(reader.mayRead("session:s1")).toBe(true);
    expect(reader.mayRead("app")).toBe(true);
    // Remembered across readers: a session's agent and worktree never change.
    const again = new ScopeReader(PERMISSIVE_POLICY, alice, "app1", dir, undefined);
    expect(again.mayRead("session:s1")).toBe(true);
    expect(loads).toEqual(["s1"]);
    // An absent session is refused and not looked up again by the same reader.
    expect(reader.mayRead("session:nope")).toBe(false);
    await reader.resolve();
    expect(reader.mayRead("session:nope")).toBe(false);
    expect(reader.missed.size).toBe(0);
  });

  it("from within a session, the owner sees the candidates of that worktree's sessions only", async () => {
    const { directory: dir } = directory();
    const within = async (readerSession: string) => {
      const reader = new ScopeReader(PERMISSIVE_POLICY, alice, "app1", dir, readerSession);
      await reader.resolve(["s1", "s2", "s3", "s4", "b1", readerSession]);
      return ["s1", "s2", "s3", "s4", "b1"].filter((s) => reader.mayRead(`session:${s}`));
    };
    expect(await within("s1")).toEqual(["s1", "s3"]);
    expect(await within("s2")).toEqual(["s2"]);
    expect(await within("s4")).toEqual(["s4"]);
    // A reader session that does not exist shows none of the owner's candidates.
    expect(await within("forged")).toEqual([]);
    expect(worktreeKey("s4", sessions.s4)).toBe("session:s4");
  });

  it("a reviewer with a rule sees every session's candidates, whatever session it reads from", async () => {
    const { directory: dir } = directory();
    const reader = new ScopeReader(EXAMPLE, rita, "app1", dir, "s1");
    await reader.resolve(["s1", "s2", "b1"]);
    expect(["s1", "s2", "b1"].filter((s) => reader.mayRead(`session:${s}`))).toEqual(["s1", "s2", "b1"]);
    await expect(new ScopeReader(EXAMPLE, bob, "app1", dir, undefined).require("session:s1", "show m")).rejects.toMatchObject({ code: "forbidden" });
  });
});
