import { invalid } from "../schemas/errors.js";
import { scopeMatches, type Policy } from "../schemas/policy.js";
import type { Actor } from "../schemas/primitives.js";
import { scanSecrets, type ScannableContent, type ScannedField, type SecretFinding } from "./curator/secrets.js";

/**
 * The secrets gate on the command path: a proposal whose title, body, tags or paths look like they hold
 * a credential is refused before anything is appended. The log is immutable and deleting from it is
 * denied, so a secret that got in could never be taken out again; the curator's check on promotion
 * (services/curator/secrets.ts, the same rules) only keeps it out of the org.
 *
 * A refusal is `invalid` and names each rule, field and line, never the matched text (it goes back to
 * the agent, and into logs). A policy may relax the gate for some scopes (`secrets.allowIn`, scope
 * patterns as in rules: say a vault team's scratchpad); the curator still refuses to promote them.
 */

/** Where in its field a finding is: tags and paths are scanned one per line, so their line is their position. */
const WHERE: Readonly<Record<ScannedField, (line: number) => string>> = {
  title: () => "the title",
  body: (line) => `the body (line ${line})`,
  tags: (line) => `the tags (tag ${line})`,
  paths: (line) => `the paths (path ${line})`,
};

/** `the body (line 3): @secretlint/secretlint-rule-github (GITHUB_TOKEN)`: every part is an id, never the value. */
const describe = (finding: SecretFinding): string => `${WHERE[finding.field](finding.line)}: ${finding.rule} (${finding.kind})`;

/** Whether the policy lets secrets into `scope` for `actor` (patterns as in rules: `agent:self` is the actor's own). */
export function secretsAllowedIn(policy: Policy | undefined, scope: string, actor: Actor): boolean {
  const patterns = policy?.secrets?.allowIn ?? [];
  // Matched as for a write: `*` does not reach the org, which the policy must name to let secrets in there.
  return patterns.some((pattern) => scopeMatches(pattern, scope, actor, "propose"));
}

export interface SecretsGateCheck {
  content: ScannableContent;
  actor: Actor;
  /**
   * The scope the proposal lands in. Asked only when something was found and the policy relaxes the gate
   * somewhere, so a clean proposal never pays for it (a revision's scope is the stored memory's: a read).
   */
  scope: () => Promise<string> | string;
}

/** Throws `invalid` when the proposal holds something credential-shaped in a scope the policy does not relax. */
export async function refuseSecrets(policy: Policy | undefined, check: SecretsGateCheck): Promise<void> {
  const findings = await scanSecrets(check.content);
  if (findings.length === 0) return;
  if ((policy?.secrets?.allowIn.length ?? 0) > 0 && secretsAllowedIn(policy, await check.scope(), check.actor)) return;
  const fields = [...new Set(findings.map((f) => f.field))];
  throw invalid(
    `refused: ${findings.map(describe).join("; ")} looks like a credential. The log is permanent and nothing ` +
      "can be deleted from it, so secrets never go in: name the secret instead (an environment variable, a vault path) and propose again",
    {
      reason: "secret",
      fields,
      findings: findings.map(({ rule, kind, field, line }) => ({ rule, kind, field, line })),
    },
  );
}
