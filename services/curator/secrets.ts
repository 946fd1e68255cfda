import { lintSource } from "@secretlint/core";
import { secretLintProfiler } from "@secretlint/profiler";
import { rules as recommendedRules } from "@secretlint/secretlint-rule-preset-recommend";

/**
 * Secret detection for promotions: nothing that looks like a credential may reach the org, where every
 * app's agents read it.
 *
 * The detection is secretlint's recommended preset (AWS, GCP, private keys, basic auth in URLs, database
 * connection strings with passwords, GitHub, npm, Slack, SendGrid, Shopify, OpenAI, Anthropic, Linear,
 * 1Password), a maintained ruleset, run in memory (no file is read). Measured against it here, four
 * common shapes slipped through, so a few rules below fill exactly those gaps:
 *   - an AWS access key id on its own (the preset reports the secret key, not the id; the id names an
 *     account's credential and is half of it),
 *   - a PEM private key block too short for the preset (an Ed25519 key),
 *   - OpenAI project keys (`sk-proj-…`), which the preset's OpenAI rule does not match,
 *   - JSON Web Tokens (bearer tokens, session tokens), which the preset has no rule for.
 *
 * A finding names the rule, the field and the line, never the matched text: rejection reasons are
 * stored in the app stream forever and shown to agents.
 *
 * The same scan guards every proposal on the command path (services/secrets-gate.ts), so it must be cheap
 * for the common case, text with nothing credential-shaped in it:
 *   - secretlint runs on a field only when a trigger of some preset rule occurs in it (TRIGGERS below: for
 *     each rule, a substring or short pattern every match of that rule contains). Text without any trigger
 *     cannot produce a finding, so skipping secretlint there changes no result; a preset whose rules are
 *     not exactly the ones TRIGGERS knows (an upgrade added one) turns the shortcut off.
 *   - secretlint's profiler marks every step of every run into the process's performance timeline and
 *     its own list, never cleared, and scans that list on each mark: over thousands of runs a scan slowed
 *     from ~0.5 ms to tens of ms and the heap grew without bound. Nothing here reads the profile, so its
 *     marking is switched off.
 * The preset's `filter-comments` rule is left out: it lets a `secretlint-disable` comment in the scanned
 * text silence every other rule, and here the text is written by the party being checked.
 */

export type ScannedField = "title" | "body" | "tags" | "paths";

export interface SecretFinding {
  /** secretlint's rule id (`@secretlint/secretlint-rule-aws`) or ours (`memledger/aws-access-key-id`). */
  rule: string;
  /** What the rule says it found (`AWSSecretAccessKey`, `PrivateKey`, …): a kind, never the value. */
  kind: string;
  field: ScannedField;
  /** 1-based line within the field. */
  line: number;
}

export interface ScannableContent {
  title: string;
  body: string;
  tags: readonly string[];
  paths: readonly string[];
}

interface GapRule {
  rule: string;
  kind: string;
  pattern: RegExp;
  /** Matches that are known placeholders, not credentials (AWS's documentation keys end in EXAMPLE, as the preset also allows). */
  allow?: RegExp;
}

/** The gaps measured in the recommended preset (see above); each pattern is global so every match counts. */
const GAP_RULES: readonly GapRule[] = [
  { rule: "memledger/aws-access-key-id", kind: "AWSAccessKeyID", pattern: /\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b/g, allow: /EXAMPLE$/ },
  {
    rule: "memledger/private-key-block",
    kind: "PrivateKey",
    pattern: /-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----/g,
  },
  { rule: "memledger/openai-project-key", kind: "OpenAIProjectKey", pattern: /\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}/g },
  { rule: "memledger/jwt", kind: "JSONWebToken", pattern: /\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}/g },
];

/** Lets the scanned text switch the scan off (`<!-- secretlint-disable -->`): never applied here. */
const FILTER_COMMENTS_RULE = "@secretlint/secretlint-rule-filter-comments";

const SECRETLINT_CONFIG = {
  rules: recommendedRules.filter((rule) => rule.meta.id !== FILTER_COMMENTS_RULE).map((rule) => ({ id: rule.meta.id, rule })),
};

/**
 * For each rule of the preset (11.7), what every text it reports must contain, read from the rule's own
 * patterns (case-insensitive here, a superset of the case-sensitive originals). Run on a `.md` source,
 * the GCP rule (JSON and .p12 files only) and the npm rule's package.json/.npmrc checks report nothing;
 * their triggers are kept anyway so the list reads as one entry per rule.
 */
const TRIGGERS: Readonly<Record<string, RegExp>> = {
  "@secretlint/secretlint-rule-aws": /secret_?access_?key/, // (AWS_)SECRET_ACCESS_KEY = <40 chars>; the id scan is off in the preset
  "@secretlint/secretlint-rule-gcp": /private_key/,
  "@secretlint/secretlint-rule-privatekey": /private key/,
  "@secretlint/secretlint-rule-npm": /npm_|_authtoken=|x-oauth-basic@/,
  "@secretlint/secretlint-rule-basicauth": /:\/\/[-\w]+:[-\w]+@/,
  "@secretlint/secretlint-rule-slack": /(?:xox[bpaor]|xapp)-|hooks\.slack\.com/,
  "@secretlint/secretlint-rule-sendgrid": /sg\./,
  "@secretlint/secretlint-rule-shopify": /shp(?:pa|ca|at|ss)_/,
  "@secretlint/secretlint-rule-github": /gh[pousr]_|github_pat_/,
  "@secretlint/secretlint-rule-openai": /t3blbkfj/,
  "@secretlint/secretlint-rule-anthropic": /sk-ant-api0/,
  "@secretlint/secretlint-rule-linear": /lin_api_/,
  "@secretlint/secretlint-rule-1password": /ops_ey/,
  "@secretlint/secretlint-rule-database-connection-string": /(?:mongodb(?:\+srv)?|mysqlx?|postgres(?:ql)?):\/\//,
};

/** One test for all triggers; null (always run secretlint) when the preset has a rule TRIGGERS does not know. */
const ANY_TRIGGER: RegExp | null = SECRETLINT_CONFIG.rules.every((r) => Object.hasOwn(TRIGGERS, r.id))
  ? new RegExp(SECRETLINT_CONFIG.rules.map((r) => TRIGGERS[r.id]!.source).join("|"), "i")
  : null;

/** Whether secretlint could report anything in `text`; false only when it provably cannot. */
export const mayHoldPresetSecret = (text: string): boolean => ANY_TRIGGER === null || ANY_TRIGGER.test(text);

// Never read: see the module comment. (One profiler per process, shared with any other secretlint user.)
secretLintProfiler.mark = () => undefined;

const lineAt = (text: string, offset: number): number => {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
};

async function scanText(text: string, field: ScannedField): Promise<SecretFinding[]> {
  if (text.trim().length === 0) return [];
  const messages = mayHoldPresetSecret(text)
    ? (
        await lintSource({
          source: { content: text, filePath: "memory.md", ext: ".md", contentType: "text" },
          // maskSecrets: secretlint's own messages would quote the value otherwise; we keep only ids anyway.
          options: { config: SECRETLINT_CONFIG, maskSecrets: true, noPhysicFilePath: true },
        })
      ).messages
    : [];
  const findings: SecretFinding[] = messages.map((m) => ({
    rule: m.ruleId,
    kind: m.messageId,
    field,
    line: lineAt(text, m.range[0]),
  }));
  for (const gap of GAP_RULES) {
    for (const match of text.matchAll(gap.pattern)) {
      if (gap.allow?.test(match[0])) continue;
      const line = lineAt(text, match.index ?? 0);
      // The preset may have reported the same thing (a long RSA key): one finding per kind and line.
      if (!findings.some((f) => f.kind === gap.kind && f.line === line)) findings.push({ rule: gap.rule, kind: gap.kind, field, line });
    }
  }
  return findings;
}

/** Every secret-looking thing in a memory's text fields, in field order; empty when it is clean. */
export async function scanSecrets(content: ScannableContent): Promise<SecretFinding[]> {
  const parts = await Promise.all([
    scanText(content.title, "title"),
    scanText(content.body, "body"),
    scanText(content.tags.join("\n"), "tags"),
    scanText(content.paths.join("\n"), "paths"),
  ]);
  return parts.flat().sort((a, b) => (a.field === b.field ? a.line - b.line : 0));
}
