import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify as toYaml } from "yaml";
import type { z } from "zod";
import { MemledgerError } from "../../schemas/errors.js";
import {
  GOVERNED_VERBS,
  PERMISSIVE_POLICY,
  authorize,
  rolesOf,
  scopeIndependent,
  type GovernedVerb,
  Policy,
} from "../../schemas/policy.js";
import type { Actor } from "../../schemas/primitives.js";
import { loadPolicy, parsePolicy, resolvePolicy } from "../../services/auth/load.js";
import { brokerUsers, renderNatsConf } from "../../services/auth/broker-config.js";

const EXAMPLE = join(import.meta.dirname, "../../memledger.policy.example.json");

let dir: string;
let example: Policy;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "memledger-policy-"));
  example = await loadPolicy(EXAMPLE);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The scope classes a rule can tell apart, for an actor: its own scratchpad, another's, a team, the app, the org. */
const SCOPES = (actor: Actor) => ({
  "own scratchpad": `agent:${actor.id}`,
  "another agent's scratchpad": "agent:somebody-else",
  team: "team:payments",
  app: "app",
  org: "org",
});
type ScopeClass = keyof ReturnType<typeof SCOPES>;

/**
 * The shipped example policy, role by role: for each scope class, what each governed verb gets, in the
 * order propose, approve, reject, supersede, rollback, promote. `a` allowed and auto-approved, `A` allowed, `-` refused.
 * A `*` scope never reaches the org's writes: only rules naming `org` do (the curator's, the admin's review).
 */
const EXPECTED: Record<string, { actor: Actor; grid: Record<ScopeClass, string> }> = {
  agent: {
    actor: { kind: "agent", id: "coder-1" },
    grid: { "own scratchpad": "aAAAAA", "another agent's scratchpad": "------", team: "A----A", app: "A----A", org: "------" },
  },
  "agent not listed by name (agent:*)": {
    actor: { kind: "agent", id: "newcomer" },
    grid: { "own scratchpad": "aAAAAA", "another agent's scratchpad": "------", team: "A----A", app: "A----A", org: "------" },
  },
  reviewer: {
    // A human has no scratchpad of its own: `agent:alice` is an agent's.
    actor: { kind: "human", id: "alice" },
    grid: { "own scratchpad": "------", "another agent's scratchpad": "------", team: "AAAAAA", app: "AAAAAA", org: "------" },
  },
  curator: {
    actor: { kind: "service", id: "curator" },
    grid: { "own scratchpad": "------", "another agent's scratchpad": "------", team: "------", app: "------", org: "AAAAAA" },
  },
  admin: {
    actor: { kind: "human", id: "root" },
    grid: { "own scratchpad": "AAAAAA", "another agent's scratchpad": "AAAAAA", team: "AAAAAA", app: "AAAAAA", org: "-AAAA-" },
  },
  "no role (a human the policy does not name)": {
    actor: { kind: "human", id: "mallory" },
    grid: { "own scratchpad": "------", "another agent's scratchpad": "------", team: "------", app: "------", org: "------" },
  },
};

const symbol = (d: ReturnType<typeof authorize>) => (!d.allowed ? "-" : d.autoApprove ? "a" : "A");

describe("authorize with the example policy: every role × verb × scope class", () => {
  for (const [role, { actor, grid }] of Object.entries(EXPECTED)) {
    for (const [scopeClass, scope] of Object.entries(SCOPES(actor)) as [ScopeClass, string][]) {
      it(`${role} (${actor.kind}:${actor.id}) on ${scopeClass} (${scope}): ${grid[scopeClass]}`, () => {
        const got = GOVERNED_VERBS.map((verb) => symbol(authorize(example, actor, verb, scope))).join("");
        expect(got).toBe(grid[scopeClass]);
      });
    }
  }

  it("a refusal names the actor, the verb, the scope and the missing permission", () => {
    const d = authorize(example, { kind: "agent", id: "coder-1" }, "approve", "app");
    expect(d.allowed).toBe(false);
    if (d.allowed) return;
    expect(d.reason).toBe("agent:coder-1 may not approve in scope app: missing permission approve on app; its roles (agent) do not allow it");
    expect(d.missing).toEqual({ verb: "approve", scope: "app" });
    const none = authorize(example, { kind: "human", id: "mallory" }, "propose", "team:x");
    expect(!none.allowed && none.reason).toMatch(/human:mallory may not propose in scope team:x: .*it has no role in the policy/);
  });
});

describe("authorize: evaluation of the data", () => {
  const policy = (roles: z.input<typeof Policy>["roles"], actors: Policy["actors"]): Policy => parsePolicy({ version: 1, roles, actors });

  it("the built-in default lets everyone do everything but write the org, which only service:curator does, and auto-approves nothing", () => {
    for (const actor of [{ kind: "agent", id: "x" }, { kind: "human", id: "y" }, { kind: "service", id: "z" }] as Actor[]) {
      for (const verb of GOVERNED_VERBS) {
        for (const scope of Object.values(SCOPES(actor))) {
          expect(authorize(PERMISSIVE_POLICY, actor, verb, scope)).toMatchObject(scope === "org" ? { allowed: false } : { allowed: true, autoApprove: false });
        }
        expect(scopeIndependent(PERMISSIVE_POLICY, actor, verb)).toBeNull();
      }
    }
    for (const verb of GOVERNED_VERBS) {
      expect(authorize(PERMISSIVE_POLICY, { kind: "service", id: "curator" }, verb, "org")).toMatchObject({ allowed: true, autoApprove: false });
    }
  });

  it("roles are the union of every matching entry: exact, kind wildcard and *", () => {
    const p = policy(
      { a: { allow: [] }, b: { allow: [] }, c: { allow: [] } },
      { "*": { roles: ["a"] }, "agent:*": { roles: ["b"] }, "agent:x": { roles: ["c", "a"] } },
    );
    expect(rolesOf(p, { kind: "agent", id: "x" })).toEqual(["a", "b", "c"]);
    expect(rolesOf(p, { kind: "agent", id: "y" })).toEqual(["a", "b"]);
    expect(rolesOf(p, { kind: "human", id: "x" })).toEqual(["a"]);
  });

  it("named scopes match exactly; team:* and agent:* match their whole class", () => {
    const p = policy(
      { r: { allow: [{ verbs: ["approve"], scopes: ["team:core", "agent:bot"] }, { verbs: ["reject"], scopes: ["team:*", "agent:*"] }] } },
      { "human:h": { roles: ["r"] } },
    );
    const h: Actor = { kind: "human", id: "h" };
    expect(authorize(p, h, "approve", "team:core").allowed).toBe(true);
    expect(authorize(p, h, "approve", "team:other").allowed).toBe(false);
    expect(authorize(p, h, "approve", "agent:bot").allowed).toBe(true);
    expect(authorize(p, h, "approve", "agent:bot2").allowed).toBe(false);
    expect(authorize(p, h, "reject", "team:other").allowed).toBe(true);
    expect(authorize(p, h, "reject", "agent:bot2").allowed).toBe(true);
    expect(authorize(p, h, "reject", "app").allowed).toBe(false);
    expect(authorize(p, h, "supersede", "team:core").allowed).toBe(false);
  });

  it("autoApprove applies to propose only, and only through a rule that matches the scope", () => {
    const p = policy(
      { r: { allow: [{ verbs: ["*"], scopes: ["agent:self"], autoApprove: true }, { verbs: ["propose"], scopes: ["app"] }] } },
      { "agent:*": { roles: ["r"] } },
    );
    const a: Actor = { kind: "agent", id: "a" };
    expect(authorize(p, a, "propose", "agent:a")).toMatchObject({ allowed: true, autoApprove: true });
    expect(authorize(p, a, "approve", "agent:a")).toMatchObject({ allowed: true, autoApprove: false });
    expect(authorize(p, a, "propose", "app")).toMatchObject({ allowed: true, autoApprove: false });
  });

  it("scopeIndependent answers without a scope only for an allow on *, never when auto-approval could apply", () => {
    const agent: Actor = { kind: "agent", id: "coder-1" };
    const root: Actor = { kind: "human", id: "root" };
    expect(scopeIndependent(example, agent, "propose")).toBeNull();
    expect(scopeIndependent(example, agent, "approve")).toBeNull();
    expect(scopeIndependent(example, root, "approve")).toMatchObject({ allowed: true });
    // A refusal always waits for the scope, so it can name it.
    expect(scopeIndependent(example, { kind: "human", id: "mallory" }, "approve")).toBeNull();
  });
});

describe("policy files", () => {
  const expectInvalid = (raw: unknown, message: RegExp) => {
    let caught: unknown;
    try {
      parsePolicy(raw);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(MemledgerError);
    expect((caught as MemledgerError).code).toBe("invalid");
    expect((caught as MemledgerError).message).toMatch(message);
  };

  it("refuses an actor given a role the policy does not define", () => {
    expectInvalid({ version: 1, roles: { a: { allow: [] } }, actors: { "agent:x": { roles: ["admin"] } } }, /actors\.agent:x\.roles\.0: unknown role 'admin'; roles: a/);
  });
  it("refuses autoApprove on a rule that cannot propose", () => {
    expectInvalid(
      { version: 1, roles: { a: { allow: [{ verbs: ["approve"], scopes: ["app"], autoApprove: true }] } }, actors: {} },
      /roles\.a\.allow\.0\.autoApprove: autoApprove needs a rule that allows propose/,
    );
  });
  it("refuses unknown verbs, scope patterns, actor patterns, fields and versions", () => {
    expectInvalid({ version: 1, roles: { a: { allow: [{ verbs: ["delete"], scopes: ["app"] }] } }, actors: {} }, /roles\.a\.allow\.0\.verbs\.0/);
    expectInvalid({ version: 1, roles: { a: { allow: [{ verbs: ["propose"], scopes: ["galaxy"] }] } }, actors: {} }, /scopes\.0: one of \*, app, org/);
    expectInvalid({ version: 1, roles: {}, actors: { "robot:x": { roles: [] } } }, /actors\.robot:x/);
    expectInvalid({ version: 1, roles: {}, actors: {}, admins: [] }, /Unrecognized key.*admins/);
    expectInvalid({ version: 2, roles: {}, actors: {} }, /version/);
  });

  it("loads the same policy from JSON and from YAML; a broken file is invalid, naming it", async () => {
    const raw = JSON.parse(JSON.stringify(example)) as unknown;
    const yamlFile = join(dir, "policy.yaml");
    await writeFile(yamlFile, toYaml(raw));
    expect(await loadPolicy(yamlFile)).toEqual(example);
    const broken = join(dir, "broken.json");
    await writeFile(broken, "{ not json");
    await expect(loadPolicy(broken)).rejects.toMatchObject({ code: "invalid", message: expect.stringMatching(/broken\.json is not valid JSON/) });
    await expect(loadPolicy(join(dir, "missing.json"))).rejects.toMatchObject({ code: "invalid", message: expect.stringMatching(/ENOENT/) });
  });

  it("resolvePolicy: --policy, else MEMLEDGER_POLICY, else the permissive default", async () => {
    expect((await resolvePolicy(undefined, {})).policy).toBe(PERMISSIVE_POLICY);
    expect((await resolvePolicy(undefined, { MEMLEDGER_POLICY: EXAMPLE })).policy).toEqual(example);
    expect((await resolvePolicy(EXAMPLE, { MEMLEDGER_POLICY: join(dir, "missing.json") })).source).toBe(EXAMPLE);
  });
});

describe("broker users from a policy", () => {
  const users = () => brokerUsers(example, "pfx", (name) => `pw-${name}`);

  it("every named actor is a user that may publish only on its own command subjects and not on streams or $JS", () => {
    const byName = new Map(users().map((u) => [u.name, u]));
    expect([...byName.keys()]).toEqual(["memledger", "agent:coder-1", "agent:coder-2", "human:alice", "service:curator", "human:root", "auditor"]);
    const coder = byName.get("agent:coder-1")!;
    expect(coder.user).toBe("agent.coder-1");
    // Its command subjects, and storing a session transcript (the transcripts bucket's stream only; never
    // its creation: the service creates it, so no agent picks its configuration).
    expect(coder.permissions.publish.allow).toEqual([
      "pfx.cmd.*.agent.coder-1.>",
      "$JS.API.INFO",
      "$JS.API.STREAM.INFO.OBJ_pfx_transcripts",
      "$JS.API.STREAM.MSG.GET.OBJ_pfx_transcripts",
      "$JS.API.DIRECT.GET.OBJ_pfx_transcripts",
      "$JS.API.DIRECT.GET.OBJ_pfx_transcripts.>",
      "$O.pfx_transcripts.>",
    ]);
    expect(coder.permissions.publish.deny).toEqual(
      expect.arrayContaining(["pfx.app.*.>", "pfx.org.>", "$KV.>", "$JS.ACK.>", "$JS.API.CONSUMER.>", "$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.UPDATE.>"]),
    );
    // Its own replies only: no user may subscribe to the shared _INBOX.> (others' replies).
    expect(coder.inboxPrefix).toBe("_INBOX_agent.coder-1");
    expect(coder.permissions.subscribe.allow).toEqual(["_INBOX_agent.coder-1.>"]);
    expect(byName.get("human:alice")!.permissions.publish.allow).toEqual(["pfx.cmd.*.human.alice.>"]);
    expect(byName.get("service:curator")!.permissions.publish.allow).toEqual(["pfx.cmd.*.service.curator.>"]);
    const service = byName.get("memledger")!;
    // Replies go into each user's inbox, and nowhere else outside the ledger.
    expect(service.permissions.publish.allow).toEqual(expect.arrayContaining(["$JS.API.>", "pfx.app.*.>", "pfx.org.>", "_INBOX_agent.coder-1.>", "_INBOX_human.alice.>"]));
    expect(service.permissions.publish.allow).not.toContain("_INBOX.>");
    expect(service.permissions.subscribe.allow).toEqual(expect.arrayContaining(["pfx.cmd.>", "_INBOX_memledger.>"]));
    for (const u of byName.values()) expect(u.permissions.subscribe.allow).not.toContain("_INBOX.>");
  });

  it("apps listed in the policy (or for one actor) narrow the command subjects", () => {
    const p = parsePolicy({
      version: 1,
      apps: ["web", "api"],
      roles: { r: { allow: [] } },
      actors: { "agent:a": { roles: ["r"] }, "agent:b": { roles: ["r"], apps: ["api"] } },
    });
    const [, a, b] = brokerUsers(p, "pfx", () => "x");
    // The org is every app's: its command subjects stay reachable (the policy still decides what may be done there).
    const commands = (allow: string[]) => allow.filter((s) => s.startsWith("pfx.cmd."));
    expect(commands(a!.permissions.publish.allow)).toEqual(["pfx.cmd.web.agent.a.>", "pfx.cmd.api.agent.a.>", "pfx.cmd.org.agent.a.>"]);
    expect(commands(b!.permissions.publish.allow)).toEqual(["pfx.cmd.api.agent.b.>", "pfx.cmd.org.agent.b.>"]);
  });

  it("renders listen, the JetStream store and every user with its permissions", () => {
    const hash = "$2a$11$" + "a".repeat(53);
    const conf = renderNatsConf(
      users().map(({ password: _password, ...u }) => ({ ...u, passwordHash: hash })),
      { host: "127.0.0.1", port: 4333, storeDir: "/var/lib/x", source: "p.json", prefix: "pfx" },
    );
    expect(conf).toContain(`password: "${hash}"`);
    expect(conf).not.toContain("pw-");
    // A plain password is never rendered.
    expect(() => renderNatsConf(users().map(({ password, ...u }) => ({ ...u, passwordHash: password })), { host: "h", port: 1, storeDir: "/s", source: "p", prefix: "pfx" })).toThrow(/not a bcrypt hash/);
    expect(conf).toContain('listen: "127.0.0.1:4333"');
    expect(conf).toMatch(/jetstream \{\n {2}store_dir: "\/var\/lib\/x"\n\}/);
    expect(conf).toContain('user: "agent.coder-1"');
    expect(conf).toContain('publish: { allow: ["pfx.cmd.*.agent.coder-1.>", "$JS.API.INFO", "$JS.API.STREAM.INFO.OBJ_pfx_transcripts"');
    expect(conf).toContain('deny: ["pfx.app.*.>", "pfx.org.>", "$KV.>"');
  });
});

// Keep the verb list and the grid in step: a new governed verb must be added to the expectations.
it("the grid covers every governed verb", () => {
  const verbs: readonly GovernedVerb[] = GOVERNED_VERBS;
  expect(verbs).toEqual(["propose", "approve", "reject", "supersede", "rollback", "promote"]);
});

describe("NATS URLs with credentials (how `memledger up` and clients log in)", () => {
  it("takes user and password out of the URL, percent-decoded, and leaves URLs without them alone", async () => {
    const { splitCredentials } = await import("../../services/nats.js");
    expect(splitCredentials("nats://memledger:p%40ss%3Aw@127.0.0.1:4333")).toEqual({ servers: "nats://127.0.0.1:4333", user: "memledger", pass: "p@ss:w" });
    expect(splitCredentials("nats://agent.coder-1:pw@a:1,nats://agent.coder-1:pw@b:2")).toEqual({ servers: "nats://a:1,nats://b:2", user: "agent.coder-1", pass: "pw" });
    expect(splitCredentials("nats://127.0.0.1:4222")).toEqual({ servers: "nats://127.0.0.1:4222" });
    expect(splitCredentials("tls://token@h:1")).toEqual({ servers: "tls://h:1", user: "token" });
  });
});
