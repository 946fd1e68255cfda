import { z } from "zod";
import { AppName, type Actor } from "./primitives.js";

/**
 * Who may do what, as data. A policy names roles (each a list of rules: these verbs on these scopes)
 * and gives actors roles. `authorize` and `mayRead` evaluate it; no code path branches on a role's name.
 *
 * Governed verbs: the memory verbs that change a memory, `promote` (on the promoted memory's scope), and
 * `read` (show, log, search, hydrate and the MEMORY.md an agent is given). Sessions and claims are open to
 * every actor the broker lets send commands at all.
 *
 * Reads: every actor with at least one role reads the shared scopes (`app`, `team:*`, `org`), and an
 * agent reads its own scratchpad; another agent's scratchpad only through a rule that allows `read` (or
 * `*`) on it. So policies written before reads were governed keep their meaning, and scratchpads are
 * private unless a role is granted them.
 *
 * The org: a scope pattern `*` never reaches `org` for a verb that writes it. Only a rule that names
 * `org` itself lets an actor propose, approve, reject, supersede or roll back org memories: the policy
 * says who curates and who reviews the org, whatever its catch-all rules say.
 *
 * Scope patterns in rules:
 *   `*`            any scope (except the org, for writes)
 *   `app`, `org`   that scope
 *   `agent:self`   the acting agent's own scratchpad (`agent:<its id>`, only for actors of kind agent)
 *   `agent:*`      any agent's scratchpad;  `agent:<id>` one of them
 *   `team:*`       any team;                `team:<name>` one team
 *   `session:self` the candidates of a session of the acting agent's own (`session:<id>` whose session
 *                  was started by that agent; needs {@link ScopeFacts}, without them it matches nothing)
 *   `session:*`    any session's candidates; `session:<id>` one session's
 *
 * Session candidates (`session:<id>`, docs/candidates.md) are private like scratchpads: the baseline
 * lets only the session's own agent read them; anyone else needs a rule allowing `read` on them.
 *
 * Actor patterns: `<kind>:<id>` (one actor), `<kind>:*` (every actor of that kind), `*` (everyone).
 * An actor's roles are the union of every entry that matches it. An actor with no role may do nothing.
 *
 * Apps: a policy that lists `apps` declares them; a command naming any other app is `not_found` (the org
 * is always there). Without the list every app name is accepted.
 */
/** Command verbs the guard checks, each against the scope of the memory it acts on. */
export const GOVERNED_VERBS = ["propose", "approve", "reject", "supersede", "rollback", "promote"] as const;
/**
 * What a rule may name: the governed command verbs, `read`, and `dream`: accepting, rejecting and
 * reverting a consolidation run's proposals (services/dream/review.ts), checked on scope `app`. Without a
 * policy only humans may (PERMISSIVE_POLICY's `dream-reviewer`); a policy grants it with a rule naming
 * `dream` (or `*`) on `app` or `*`.
 */
export const RULE_VERBS = [...GOVERNED_VERBS, "read", "dream"] as const;
export const GovernedVerb = z.enum(RULE_VERBS);
export type GovernedVerb = z.infer<typeof GovernedVerb>;
export type CommandVerb = (typeof GOVERNED_VERBS)[number];

export const isGoverned = (verb: string): verb is CommandVerb => (GOVERNED_VERBS as readonly string[]).includes(verb);

const NAME = "[A-Za-z0-9_-]{1,64}";
export const ScopePattern = z
  .string()
  .regex(
    new RegExp(`^(\\*|app|org|agent:self|agent:\\*|team:\\*|session:self|session:\\*|agent:${NAME}|team:${NAME}|session:${NAME})$`),
    "one of *, app, org, agent:self, agent:*, agent:<id>, team:*, team:<name>, session:self, session:*, session:<id>",
  );
export const ActorPattern = z
  .string()
  .regex(new RegExp(`^(\\*|(agent|human|service):(\\*|${NAME}))$`), "one of *, <kind>:*, <kind>:<id> with kind agent, human or service");
export const RoleName = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "letters, digits, '_' and '-' (at most 64)");

export const Rule = z.strictObject({
  /** Governed verbs (`read` included), or `*` for all of them. */
  verbs: z.array(z.union([GovernedVerb, z.literal("*")])).min(1),
  scopes: z.array(ScopePattern).min(1),
  /**
   * A proposal this rule allows is approved at once, on behalf of the policy (actor `service:policy`),
   * without a reviewer. Only meaningful for rules that allow `propose`.
   */
  autoApprove: z.boolean().default(false),
});
export type Rule = z.infer<typeof Rule>;

export const Role = z.strictObject({
  description: z.string().max(2000).optional(),
  allow: z.array(Rule),
});
export type Role = z.infer<typeof Role>;

export const ActorEntry = z.strictObject({
  roles: z.array(RoleName).min(1),
  /** Broker config only: the apps whose command subjects this actor may publish on (default: the policy's, else all). */
  apps: z.array(AppName).min(1).optional(),
});
export type ActorEntry = z.infer<typeof ActorEntry>;

export const Policy = z
  .strictObject({
    version: z.literal(1),
    description: z.string().max(2000).optional(),
    /**
     * The declared apps: the command service answers `not_found` for any other (and creates nothing for
     * it), and the broker config lets actors publish only on these apps' command subjects. Default: all.
     */
    apps: z.array(AppName).min(1).optional(),
    roles: z.record(RoleName, Role),
    actors: z.record(ActorPattern, ActorEntry),
    /**
     * Proposals whose text looks like a credential are refused in every scope (services/secrets-gate.ts):
     * the log is permanent. `allowIn` relaxes that for the scopes it names (patterns as in rules; `*`
     * does not reach the org, which must be named). The curator still never promotes a secret.
     */
    secrets: z.strictObject({ allowIn: z.array(ScopePattern).default([]) }).optional(),
  })
  .superRefine((policy, ctx) => {
    for (const [actor, entry] of Object.entries(policy.actors)) {
      entry.roles.forEach((role, i) => {
        if (!Object.hasOwn(policy.roles, role)) {
          ctx.addIssue({ code: "custom", path: ["actors", actor, "roles", i], message: `unknown role '${role}'; roles: ${Object.keys(policy.roles).join(", ") || "(none)"}` });
        }
      });
    }
    for (const [name, role] of Object.entries(policy.roles)) {
      role.allow.forEach((rule, i) => {
        if (rule.autoApprove && !rule.verbs.some((v) => v === "propose" || v === "*")) {
          ctx.addIssue({ code: "custom", path: ["roles", name, "allow", i, "autoApprove"], message: "autoApprove needs a rule that allows propose" });
        }
      });
    }
  });
export type Policy = z.output<typeof Policy>;
export type PolicyInput = z.input<typeof Policy>;

/**
 * The policy when none is given: every actor may change every memory outside the org, nothing is
 * auto-approved (but an agent's own session candidates, which only it reads), which is memledger's behaviour
 * without a policy (fine on a laptop; use a real policy with an auth-enabled broker). Still, even here: only
 * the curator writes the org, and reads follow the baseline (shared scopes, and an agent's own scratchpad
 * and session candidates: no agent reads another's).
 */
export const PERMISSIVE_POLICY: Policy = Policy.parse({
  version: 1,
  description: "built-in default: every actor may change every memory but the org's; only the curator writes the org; a scratchpad or a session's candidates are read by their agent only; nothing is auto-approved but an agent's own session candidates",
  roles: {
    anyone: {
      description: "may change memories outside the org (a `*` scope never reaches the org's writes); reads shared scopes and its own scratchpad",
      allow: [
        { verbs: [...GOVERNED_VERBS], scopes: ["*"] },
        // An agent's session candidates are its own speculative memory, reviewed when the session ends
        // (docs/candidates.md): in force at once for it, as a scratchpad would be, and read by it alone.
        { verbs: ["propose"], scopes: ["session:self"], autoApprove: true },
      ],
    },
    curator: { description: "the curator service: the only writer of org memories", allow: [{ verbs: ["*"], scopes: ["org"] }] },
    "dream-reviewer": {
      description: "humans: accept, reject and revert consolidation runs (docs/consolidation.md), and read the session candidates a session-end review proposes to promote",
      allow: [
        { verbs: ["dream"], scopes: ["app"] },
        // A session-end review's run and proposals live in the session's scope: its reviewer must read them.
        { verbs: ["read"], scopes: ["session:*"] },
      ],
    },
  },
  actors: { "*": { roles: ["anyone"] }, "human:*": { roles: ["dream-reviewer"] }, "service:curator": { roles: ["curator"] } },
});

/** The actor the policy acts as when it approves a proposal by itself (autoApprove). */
export const POLICY_ACTOR: Actor = Object.freeze({ kind: "service", id: "policy" });

export type Decision =
  | { allowed: true; /** The proposal is to be approved at once by the policy. */ autoApprove: boolean; roles: string[] }
  | { allowed: false; reason: string; roles: string[]; missing: { verb: GovernedVerb; scope: string } };

export const ORG_SCOPE = "org";
const isScratchpad = (scope: string) => scope.startsWith("agent:");
export const SESSION_SCOPE_PREFIX = "session:";
/** The session a `session:<id>` scope holds the candidates of, or null for any other scope. */
export const sessionOfScope = (scope: string): string | null => (scope.startsWith(SESSION_SCOPE_PREFIX) ? scope.slice(SESSION_SCOPE_PREFIX.length) : null);
/** Scopes only their owner reads by default: scratchpads and session candidates. */
export const isPrivateScope = (scope: string): boolean => isScratchpad(scope) || sessionOfScope(scope) !== null;

/**
 * What the policy cannot know by itself: which agent started a session (the session aggregate's state,
 * services/auth/sessions.ts). Absent, or answering undefined or null, `session:self` matches nothing and
 * no agent reads a session's candidates by the baseline: without the facts, closed.
 */
export interface ScopeFacts {
  sessionAgent?(sessionId: string): string | null | undefined;
}

/** Is `scope` the candidates of a session the acting agent started? */
const ownSession = (actor: Actor, scope: string, facts: ScopeFacts | undefined): boolean => {
  const session = sessionOfScope(scope);
  return session !== null && actor.kind === "agent" && facts?.sessionAgent?.(session) === actor.id;
};

const actorLabel = (actor: Actor) => `${actor.kind}:${actor.id}`;

/** The roles the policy gives an actor: the union of every matching entry, in policy order, without repeats. */
export function rolesOf(policy: Policy, actor: Actor): string[] {
  const roles = new Set<string>();
  for (const [pattern, entry] of Object.entries(policy.actors)) {
    if (pattern === "*" || pattern === `${actor.kind}:*` || pattern === actorLabel(actor)) {
      for (const role of entry.roles) roles.add(role);
    }
  }
  return [...roles];
}

export function scopeMatches(pattern: string, scope: string, actor: Actor, verb?: GovernedVerb, facts?: ScopeFacts): boolean {
  if (pattern === scope) return true;
  // The org is written only by those a rule names for it (the curator, org reviewers): never by a catch-all.
  if (pattern === "*") return scope !== ORG_SCOPE || verb === "read";
  if (pattern === "agent:self") return actor.kind === "agent" && scope === `agent:${actor.id}`;
  if (pattern === "agent:*") return scope.startsWith("agent:");
  if (pattern === "team:*") return scope.startsWith("team:");
  if (pattern === "session:self") return ownSession(actor, scope, facts);
  if (pattern === "session:*") return sessionOfScope(scope) !== null;
  return false;
}

const rulesFor = (policy: Policy, roles: string[], verb: GovernedVerb): Rule[] =>
  roles.flatMap((role) => policy.roles[role]?.allow ?? []).filter((rule) => rule.verbs.includes(verb) || rule.verbs.includes("*"));

/**
 * May `actor` do `verb` on a memory in `scope`? Pure: the answer depends on the policy data only.
 * Allowed when any rule of any of the actor's roles names the verb and a matching scope; the proposal
 * is auto-approved when such a rule says so.
 */
export function authorize(policy: Policy, actor: Actor, verb: GovernedVerb, scope: string, facts?: ScopeFacts): Decision {
  const roles = rolesOf(policy, actor);
  const matching = rulesFor(policy, roles, verb).filter((rule) => rule.scopes.some((p) => scopeMatches(p, scope, actor, verb, facts)));
  // Reading needs no rule for the shared scopes (any role will do), an agent's own scratchpad or its own sessions' candidates.
  const baselineRead =
    verb === "read" && roles.length > 0 && (!isPrivateScope(scope) || (actor.kind === "agent" && scope === `agent:${actor.id}`) || ownSession(actor, scope, facts));
  if (matching.length > 0 || baselineRead) {
    return { allowed: true, autoApprove: verb === "propose" && matching.some((r) => r.autoApprove), roles };
  }
  const held = roles.length > 0 ? `its roles (${roles.join(", ")}) do not allow it` : "it has no role in the policy";
  return {
    allowed: false,
    reason: `${actorLabel(actor)} may not ${verb} in scope ${scope}: missing permission ${verb} on ${scope}; ${held}`,
    roles,
    missing: { verb, scope },
  };
}

/**
 * When an allowing decision for this verb does not depend on the scope (a rule allows it on `*` and no
 * rule could auto-approve), that decision; otherwise null, and the caller must find the scope first
 * (a refusal always names the scope).
 * Lets the permissive default skip reading a memory's state before each command.
 */
export function scopeIndependent(policy: Policy, actor: Actor, verb: GovernedVerb): Decision | null {
  const roles = rolesOf(policy, actor);
  const rules = rulesFor(policy, roles, verb);
  if (verb === "propose" && rules.some((r) => r.autoApprove)) return null;
  // `*` does not reach the org's writes, so a catch-all answers for every scope only when the org has a rule too.
  const everywhere = rules.some((r) => r.scopes.includes("*")) && (verb === "read" || rules.some((r) => r.scopes.includes(ORG_SCOPE)));
  return everywhere ? { allowed: true, autoApprove: false, roles } : null;
}

/** May `actor` read memories (and their events) in `scope`? See the module comment for the baseline. */
export const mayRead = (policy: Policy, actor: Actor, scope: string, facts?: ScopeFacts): boolean => authorize(policy, actor, "read", scope, facts).allowed;

/**
 * Is `app` one the policy declares? The org always is; without an `apps` list every app is. A command
 * naming an undeclared app must create nothing (no stream, runner, files or consumer).
 */
export const isDeclaredApp = (policy: Policy, app: string, orgApp = "org"): boolean =>
  app === orgApp || policy.apps === undefined || policy.apps.includes(app);
