import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { renderMemoryIndex, renderScratchpadIndex, type IndexEntry } from "../../projections/files/index.js";
import { isIndexFile, scratchpadIndexPath } from "../../projections/files/layout.js";
import { PERMISSIVE_POLICY, authorize, isDeclaredApp, mayRead, type Policy } from "../../schemas/policy.js";
import type { Actor } from "../../schemas/primitives.js";
import { PolicyGuard, readableTopK } from "../../services/auth/guard.js";
import { loadPolicy, parsePolicy } from "../../services/auth/load.js";
import { assessCandidate, DEFAULT_CURATOR_POLICY, type PromotionCandidate } from "../../services/curator/policy.js";
import { visibleIndexLines } from "../../services/hydration/service.js";

/** Pure policy logic of issue 9 items 2-5 (the int specs under test/hostile run it against a broker). */

const EXAMPLE = join(import.meta.dirname, "../../memledger.policy.example.json");
const agent = (id: string): Actor => ({ kind: "agent", id });
const human = (id: string): Actor => ({ kind: "human", id });

describe("read rules", () => {
  it("the example policy: shared scopes for every actor with a role, a scratchpad for its agent and roles granted it", async () => {
    const example = await loadPolicy(EXAMPLE);
    const reads = (actor: Actor) => ["app", "org", "team:x", `agent:${actor.id}`, "agent:someone-else"].map((s) => (mayRead(example, actor, s) ? "r" : "-")).join("");
    expect(reads(agent("coder-1"))).toBe("rrrr-");
    expect(reads(agent("newcomer"))).toBe("rrrr-"); // agent:* gives a role
    expect(reads(human("alice"))).toBe("rrr--"); // a reviewer: no scratchpad is hers
    expect(reads(human("root"))).toBe("rrrrr"); // admin: `*` includes read
    expect(reads({ kind: "service", id: "curator" })).toBe("rrr--");
    expect(reads(human("mallory"))).toBe("-----"); // no role: nothing
  });

  it("a role granted read on a scratchpad reads it; the refusal names the missing permission", () => {
    const p = parsePolicy({
      version: 1,
      roles: { lead: { allow: [{ verbs: ["read"], scopes: ["agent:bot-1"] }] }, plain: { allow: [] } },
      actors: { "human:lead": { roles: ["lead"] }, "human:dev": { roles: ["plain"] } },
    });
    expect(mayRead(p, human("lead"), "agent:bot-1")).toBe(true);
    expect(mayRead(p, human("lead"), "agent:bot-2")).toBe(false);
    expect(mayRead(p, human("dev"), "app")).toBe(true);
    const d = authorize(p, human("dev"), "read", "agent:bot-1");
    expect(!d.allowed && d.reason).toBe("human:dev may not read in scope agent:bot-1: missing permission read on agent:bot-1; its roles (plain) do not allow it");
  });

  it("the built-in default: shared scopes for everyone, a scratchpad for its own agent only", () => {
    for (const scope of ["app", "org", "team:t", "agent:a"]) expect(mayRead(PERMISSIVE_POLICY, agent("a"), scope)).toBe(true);
    expect(mayRead(PERMISSIVE_POLICY, agent("a"), "agent:b")).toBe(false);
    expect(mayRead(PERMISSIVE_POLICY, human("a"), "agent:a")).toBe(false);
    expect(mayRead(PERMISSIVE_POLICY, { kind: "service", id: "curator" }, "org")).toBe(true);
  });

  it("a policy written before reads were governed still parses, and `read` is a rule verb", () => {
    expect(() => parsePolicy({ version: 1, roles: { r: { allow: [{ verbs: ["read", "promote"], scopes: ["app"] }] } }, actors: {} })).not.toThrow();
    expect(() => parsePolicy({ version: 1, roles: { r: { allow: [{ verbs: ["peek"], scopes: ["app"] }] } }, actors: {} })).toThrow();
  });
});

describe("the org: only rules naming it write it", () => {
  const p: Policy = parsePolicy({
    version: 1,
    roles: { all: { allow: [{ verbs: ["*"], scopes: ["*"] }] }, orgReview: { allow: [{ verbs: ["approve"], scopes: ["org"] }] } },
    actors: { "*": { roles: ["all"] }, "human:rita": { roles: ["orgReview"] } },
  });
  it("`*` reaches every scope but the org's writes; the org is read by all", () => {
    for (const verb of ["propose", "approve", "reject", "supersede", "rollback", "promote"] as const) {
      expect(authorize(p, agent("a"), verb, "org").allowed).toBe(false);
      expect(authorize(p, agent("a"), verb, "app").allowed).toBe(true);
    }
    expect(mayRead(p, agent("a"), "org")).toBe(true);
    expect(authorize(p, human("rita"), "approve", "org").allowed).toBe(true);
    expect(authorize(p, human("rita"), "propose", "org").allowed).toBe(false);
  });
  it("the built-in default names service:curator, and nobody else, for the org", () => {
    expect(authorize(PERMISSIVE_POLICY, { kind: "service", id: "curator" }, "propose", "org").allowed).toBe(true);
    expect(authorize(PERMISSIVE_POLICY, { kind: "service", id: "curator" }, "approve", "org").allowed).toBe(true);
    expect(authorize(PERMISSIVE_POLICY, human("root"), "approve", "org").allowed).toBe(false);
  });
});

describe("declared apps", () => {
  it("a policy's apps list declares them; the org always exists; no list accepts every app", () => {
    const p = parsePolicy({ version: 1, apps: ["web"], roles: {}, actors: {} });
    expect(isDeclaredApp(p, "web")).toBe(true);
    expect(isDeclaredApp(p, "org")).toBe(true);
    expect(isDeclaredApp(p, "ghost")).toBe(false);
    expect(isDeclaredApp(PERMISSIVE_POLICY, "anything")).toBe(true);
    const guard = new PolicyGuard(p, { approve: async () => Promise.reject(new Error("unused")) });
    expect(() => guard.requireApp("ghost")).toThrow(expect.objectContaining({ code: "not_found", message: "no app ghost: the policy declares web" }));
  });
});

describe("the guard's check, run on the state the command is decided on", () => {
  const guard = new PolicyGuard(parsePolicy({ version: 1, roles: { a: { allow: [{ verbs: ["propose"], scopes: ["app"] }, { verbs: ["*"], scopes: ["agent:self"], autoApprove: true }] } }, actors: { "agent:*": { roles: ["a"] } } }), {
    approve: async () => Promise.reject(new Error("unused")),
  });
  const ctx = { app: "web", actor: agent("alice") };
  it("a new proposal is judged on its payload's scope; a stored memory on its own; no memory is the decider's not_found", () => {
    const check = guard.prepare("propose", { title: "t", body: "b" }, ctx)!;
    expect(() => check.authorize(null)).not.toThrow(); // app
    expect(() => check.authorize("agent:bob")).toThrow(expect.objectContaining({ code: "forbidden" }));
    expect(() => guard.prepare("approve", { memoryId: "m" }, ctx)!.authorize(null)).not.toThrow();
    expect(() => guard.prepare("promote", { memoryId: "m" }, ctx)!.authorize("agent:bob")).toThrow(expect.objectContaining({ code: "forbidden" }));
    expect(guard.prepare("show", { memoryId: "m" }, ctx)).toBeUndefined();
  });
});

describe("readableTopK", () => {
  it("asks for more while the filter took some away and the source had more; keeps the source's order", async () => {
    const ranked = Array.from({ length: 100 }, (_, i) => i);
    const asked: number[] = [];
    const fetch = async (k: number) => {
      asked.push(k);
      return ranked.slice(0, k);
    };
    expect(await readableTopK(fetch, 3, (n) => n % 10 === 9)).toEqual([9, 19, 29]);
    expect(asked).toEqual([3, 12, 48]);
    expect(await readableTopK(async (k) => ranked.slice(0, Math.min(k, 5)), 3, (n) => n > 100)).toEqual([]);
  });
});

describe("indexes and the pack's MEMORY.md", () => {
  const entry = (id: string, scope: string, title: string): IndexEntry => ({
    id,
    file: `${scope === "app" ? "app" : scope.replace(":", "/")}/${id}.md`,
    title,
    kind: "note",
    importance: 3,
    status: "active",
    scope,
    seq: 1,
  });
  const entries = [entry("m1", "app", "Shared one"), entry("m2", "agent:bob", "Bob's secret"), entry("m3", "team:core", "Team one"), entry("m4", "agent:eve", "Eve's")];

  it("MEMORY.md lists shared scopes only; a scratchpad index lists its agent's, linked from agents/<id>/", () => {
    const shared = renderMemoryIndex("web", entries);
    expect(shared).toContain("Shared one");
    expect(shared).toContain("Team one");
    expect(shared).not.toContain("Bob's secret");
    expect(shared).toMatch(/^2 memories/m);
    const bobs = renderScratchpadIndex("web", "bob", entries);
    expect(bobs).toContain("[Bob's secret](../../agent/bob/m2.md)");
    expect(bobs).not.toContain("Eve's");
    expect(scratchpadIndexPath("bob")).toBe("agents/bob/MEMORY.md");
    expect(isIndexFile("agents/bob/MEMORY.md")).toBe(true);
    expect(isIndexFile("agent/bob/MEMORY.md")).toBe(false); // a memory whose id is MEMORY
  });

  it("the pack's copy of MEMORY.md drops lines of scopes the reader may not see", () => {
    const text = renderMemoryIndex("web", entries);
    const noTeam = visibleIndexLines(text, (scope) => scope !== "team:core");
    expect(noTeam).toContain("Shared one");
    expect(noTeam).not.toContain("Team one");
    expect(visibleIndexLines(text, () => true)).toBe(text);
  });
});

describe("the curator never promotes a scratchpad", () => {
  const candidate = (scope: string): PromotionCandidate => ({
    app: "web",
    memoryId: "m",
    scope,
    version: 1,
    content: { title: "Log in UTC", body: "Every service logs timestamps in UTC with an explicit offset.", kind: "convention", tags: [], paths: [], importance: 3 },
    active: true,
    approvedBy: human("rita"),
    secrets: [],
  });
  it("refuses agent:* sources with the reason scratchpad; shared scopes pass", () => {
    expect(assessCandidate(candidate("agent:bob"), DEFAULT_CURATOR_POLICY).refusals.map((r) => r.code)).toEqual(["scratchpad"]);
    expect(assessCandidate(candidate("app"), DEFAULT_CURATOR_POLICY).refusals).toEqual([]);
    expect(assessCandidate(candidate("team:core"), DEFAULT_CURATOR_POLICY).refusals).toEqual([]);
  });
});
