import { lintSource } from "@secretlint/core";
import { rules as presetRules } from "@secretlint/secretlint-rule-preset-recommend";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MemledgerError } from "../../schemas/errors.js";
import { Policy } from "../../schemas/policy.js";
import { mayHoldPresetSecret, scanSecrets, type ScannableContent } from "../../services/curator/secrets.js";
import { refuseSecrets, secretsAllowedIn } from "../../services/secrets-gate.js";
import { SAMPLES, type SecretSample } from "./secret-samples.js";

/**
 * Issue 9 item 6, the pure half: the scanner every proposal goes through (services/curator/secrets.ts)
 * and the gate's refusal (services/secrets-gate.ts). The command path is tested in secrets.int.spec.ts.
 */

const CLEAN: ScannableContent = {
  title: "Webhook handlers must be idempotent",
  body: "Payment providers retry webhook deliveries for days. Store the event id first, answer 200 for events already processed. See https://stripe.com/docs/webhooks for details.",
  tags: ["payments", "webhooks"],
  paths: ["src/payments/webhook.ts"],
};

type Field = keyof ScannableContent;
const FIELDS: readonly Field[] = ["title", "body", "tags", "paths"];

/** A clean proposal with the sample in one field, as an agent would put it there. */
function withSecret(sample: SecretSample, field: Field): ScannableContent {
  switch (field) {
    case "title":
      return { ...CLEAN, title: `Deploy notes ${sample.oneLine}` };
    case "body":
      return { ...CLEAN, body: `${CLEAN.body}\n\nSetup:\n${sample.block}\n` };
    case "tags":
      return { ...CLEAN, tags: [...CLEAN.tags, sample.oneLine] };
    case "paths":
      return { ...CLEAN, paths: [...CLEAN.paths, `config/${sample.oneLine}`] };
  }
}

const ACTOR = { kind: "agent", id: "alice" } as const;

async function refusalOf(work: Promise<void>): Promise<MemledgerError> {
  const err = await work.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof MemledgerError)) throw new Error(`expected a MemledgerError, got ${String(err)}`);
  return err;
}

describe("the secrets gate refuses every kind of secret in every field, naming rule and field, never the secret", () => {
  for (const sample of SAMPLES) {
    for (const field of FIELDS) {
      // A tag is at most 64 characters: no private key block fits one (the schema refuses it first).
      if (field === "tags" && sample.oneLine.length > 64) continue;
      it(`${sample.kind} in the ${field}`, async () => {
        const err = await refusalOf(refuseSecrets(undefined, { content: withSecret(sample, field), actor: ACTOR, scope: () => "app" }));
        expect(err.code).toBe("invalid");
        expect(err.details).toMatchObject({ reason: "secret", fields: [field] });
        const findings = (err.details as { findings: { rule: string; field: string }[] }).findings;
        expect(findings.length).toBeGreaterThan(0);
        for (const finding of findings) expect(finding.field).toBe(field);
        expect(findings.some((f) => sample.rules.includes(f.rule))).toBe(true);
        expect(err.message).toContain(`the ${field}`);
        expect(sample.rules.some((rule) => err.message.includes(rule))).toBe(true);
        const said = JSON.stringify({ message: err.message, details: err.details });
        for (const part of sample.sensitive) expect(said).not.toContain(part);
      });
    }
  }

  it("a clean proposal passes, and the policy's scope is not even asked for", async () => {
    let asked = false;
    await refuseSecrets(Policy.parse({ version: 1, roles: {}, actors: {}, secrets: { allowIn: ["app"] } }), {
      content: CLEAN,
      actor: ACTOR,
      scope: () => {
        asked = true;
        return "app";
      },
    });
    expect(asked).toBe(false);
  });

  it("a scope the policy relaxes lets the secret through; any other scope still refuses it", async () => {
    const policy = Policy.parse({ version: 1, roles: {}, actors: {}, secrets: { allowIn: ["team:vault", "agent:self"] } });
    const content = withSecret(SAMPLES[2]!, "body");
    await refuseSecrets(policy, { content, actor: ACTOR, scope: () => "team:vault" });
    await refuseSecrets(policy, { content, actor: ACTOR, scope: async () => "agent:alice" });
    for (const scope of ["app", "team:other", "agent:bob", "org"]) {
      expect((await refusalOf(refuseSecrets(policy, { content, actor: ACTOR, scope: () => scope }))).code).toBe("invalid");
    }
  });

  it("allowIn patterns match as rules do for writes: `*` never reaches the org, naming it does; agent:self is the actor's own", () => {
    const allowing = (allowIn: string[]) => Policy.parse({ version: 1, roles: {}, actors: {}, secrets: { allowIn } });
    expect(secretsAllowedIn(allowing(["*"]), "app", ACTOR)).toBe(true);
    expect(secretsAllowedIn(allowing(["*"]), "team:x", ACTOR)).toBe(true);
    expect(secretsAllowedIn(allowing(["*"]), "org", ACTOR)).toBe(false);
    expect(secretsAllowedIn(allowing(["org"]), "org", ACTOR)).toBe(true);
    expect(secretsAllowedIn(allowing(["agent:self"]), "agent:alice", ACTOR)).toBe(true);
    expect(secretsAllowedIn(allowing(["agent:self"]), "agent:bob", ACTOR)).toBe(false);
    expect(secretsAllowedIn(allowing(["agent:self"]), "agent:alice", { kind: "human", id: "alice" })).toBe(false);
    expect(secretsAllowedIn(undefined, "app", ACTOR)).toBe(false);
    expect(secretsAllowedIn(Policy.parse({ version: 1, roles: {}, actors: {} }), "app", ACTOR)).toBe(false);
  });

  it("a `secretlint-disable` comment in the text does not silence the scan (the text is the checked party's)", async () => {
    const token = SAMPLES[2]!.oneLine;
    for (const body of [
      `<!-- secretlint-disable -->\nexport GH_TOKEN=${token}\n<!-- secretlint-enable -->`,
      `export GH_TOKEN=${token} // secretlint-disable-line`,
      `<!-- secretlint-disable-next-line -->\nexport GH_TOKEN=${token}`,
    ]) {
      const findings = await scanSecrets({ ...CLEAN, body });
      expect(findings.map((f) => f.rule)).toContain("@secretlint/secretlint-rule-github");
    }
  });
});

// ---- the shortcut: secretlint is skipped only where it provably finds nothing -----------------------

/** secretlint's preset as the scanner runs it (comments cannot switch rules off), without the shortcut. */
const FULL_CONFIG = { rules: presetRules.filter((r) => r.meta.id !== "@secretlint/secretlint-rule-filter-comments").map((rule) => ({ id: rule.meta.id, rule })) };
const secretlintFinds = async (text: string): Promise<number> =>
  (await lintSource({ source: { content: text, filePath: "memory.md", ext: ".md", contentType: "text" }, options: { config: FULL_CONFIG, maskSecrets: true, noPhysicFilePath: true } }))
    .messages.length;

/** What the preset's rules look for, whole and cut short, beside ordinary text. */
const FRAGMENTS = [
  ...SAMPLES.flatMap((s) => [s.oneLine, s.block]),
  ["https://admin", ":", "s3cr3tP4ss@db.example.com/path"].join(""),
  ["postgres://app", ":", "hunter2pass@10.0.0.5:5432/prod"].join(""),
  ["mongodb+srv://svc", ":", "Xy7pLq2Zr9@cluster0.example.net/db"].join(""),
  ["npm", "_", "abcdefghijklmnopqrstuvwxyzABCDEF1234"].join(""),
  ["SG", ".", "abcdefghijklmnopqrstuv.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq"].join(""),
  ["shpat", "_", "0123456789abcdef0123456789abcdef"].join(""),
  ["lin_api", "_", "0123456789abcdefghijABCDEFGHIJ0123456789"].join(""),
  ["https://hooks.slack.com/services/", "T00000000/B00000000/", "XXXXXXXXXXXXXXXXXXXXXXXX"].join(""),
  ["sk-ant-api03", "-", "A".repeat(91), "AA"].join(""),
  "AWS_SECRET_ACCESS_KEY=", "aws_secret_access_key: ", "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----",
  "ghp_", "xoxb-", "://", "user:pass@", "@", ":", "=", "\n", " ", "\"", "'",
  "Use pnpm in this repository.", "retry with backoff", "src/payments/webhook.ts", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
];

describe("the shortcut before secretlint is sound", () => {
  it("ordinary prose skips secretlint altogether (the common case on the command path)", () => {
    expect(mayHoldPresetSecret(CLEAN.title)).toBe(false);
    expect(mayHoldPresetSecret(CLEAN.body)).toBe(false);
    expect(mayHoldPresetSecret(CLEAN.paths.join("\n"))).toBe(false);
  });

  it("whenever secretlint reports something in a text, the shortcut lets secretlint run on it (random texts from secret fragments)", async () => {
    let reported = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(fc.constantFrom(...FRAGMENTS), fc.string({ maxLength: 12 }), fc.constantFrom(...FRAGMENTS).map((f) => f.toLowerCase())), { minLength: 1, maxLength: 6 }),
        async (parts) => {
          const text = parts.join("");
          const found = await secretlintFinds(text);
          if (found > 0) reported++;
          return found === 0 || mayHoldPresetSecret(text);
        },
      ),
      { numRuns: 300, seed: 20261129 },
    );
    // Not vacuous: many of the texts held something secretlint reports.
    expect(reported).toBeGreaterThan(50);
  });
});
