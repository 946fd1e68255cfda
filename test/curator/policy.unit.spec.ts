import { generateKeyPairSync } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  CuratorPolicy,
  appSpecificity,
  decidePromotion,
  scanSecrets,
  type OrgIndexView,
  type OrgMemoryView,
  type PromotedContent,
  type PromotionCandidate,
} from "../../services/curator/index.js";

/**
 * Given/When/Then for the curator's decision. Secrets are found by the real scanner (secretlint plus the
 * gap rules), then the pure decision runs on its findings, as the curator does it.
 */

const REVIEWER = { kind: "human", id: "alice" } as const;
const policy = (overrides: Partial<CuratorPolicy> = {}): CuratorPolicy => CuratorPolicy.parse(overrides);

const generic: PromotedContent = {
  title: "Retry webhooks with exponential backoff",
  body: "Payment providers retry webhook deliveries for days. Handlers must be idempotent: store the event id first and answer 200 for events already processed, otherwise retries double-charge customers.",
  kind: "convention",
  tags: ["payments", "webhooks"],
  paths: ["src/payments/webhook.ts"],
  importance: 4,
};

async function candidate(content: Partial<PromotedContent> = {}, state: Partial<PromotionCandidate> = {}): Promise<PromotionCandidate> {
  const full = { ...generic, ...content };
  return { app: "shop", memoryId: "mem-1", version: 1, content: full, active: true, approvedBy: REVIEWER, secrets: await scanSecrets(full), ...state };
}

const emptyOrg: OrgIndexView = { similar: () => [], promotedFrom: () => undefined };
const orgWith = (memories: OrgMemoryView[], promotedFrom: Record<string, OrgMemoryView> = {}): OrgIndexView => ({
  similar: (_text, k) => memories.slice(0, k),
  promotedFrom: (app, memoryId) => promotedFrom[`${app}/${memoryId}`],
});

// Secrets assembled at run time so this file itself holds no credential-shaped literal.
const pem = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();
const edPem = generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString();
const SECRETS: { name: string; text: string; rule: string }[] = [
  { name: "an AWS secret access key", text: `AWS_ACCESS_KEY_ID=${"AKIA"}Z3MQXW4B7KJ5PLRT\nAWS_SECRET_ACCESS_KEY=${"9dK2mQ7vX4pL8zR1tY6w"}N3bH5jC0fG2sA7eU4iO1`, rule: "@secretlint/secretlint-rule-aws" },
  { name: "an AWS access key id alone", text: `the deploy user is ${"AKIA"}Z3MQXW4B7KJ5PLRT`, rule: "memledger/aws-access-key-id" },
  { name: "a GitHub token", text: `export GH_TOKEN=${"ghp_"}a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8`, rule: "@secretlint/secretlint-rule-github" },
  { name: "an RSA private key", text: `deploy key:\n${pem}`, rule: "@secretlint/secretlint-rule-privatekey" },
  { name: "an Ed25519 private key", text: `signing key:\n${edPem}`, rule: "memledger/private-key-block" },
  { name: "a password in a URL", text: `connect to https://admin:${"s3cr3tP4ss"}@db.example.com/path`, rule: "@secretlint/secretlint-rule-basicauth" },
  { name: "a database connection string", text: `DATABASE_URL=postgres://app:${"hunter2pass"}@10.0.0.5:5432/prod`, rule: "@secretlint/secretlint-rule-database-connection-string" },
  { name: "a Slack token", text: `${"xoxb-"}123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx`, rule: "@secretlint/secretlint-rule-slack" },
  { name: "an npm token", text: `//registry.npmjs.org/:_authToken=${"npm_"}abcdefghijklmnopqrstuvwxyzABCDEF1234`, rule: "@secretlint/secretlint-rule-npm" },
  { name: "an OpenAI project key", text: `OPENAI_API_KEY=${"sk-proj-"}Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7dEf0hIj3kLm6nOp9qRs2t`, rule: "memledger/openai-project-key" },
  { name: "an Anthropic key", text: `${"sk-ant-api03-"}Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7dEf0hIj3kLm6nOp9qRs2tUv5wXy8zAb1dEf4hIj7kLm0nOp3qRs6tUv9wXy2-AbCdEfAA`, rule: "@secretlint/secretlint-rule-anthropic" },
  { name: "a JSON Web Token", text: `Authorization: Bearer ${"eyJhbGciOiJIUzI1NiJ9"}.eyJzdWIiOiJ1c2VyLTQyIiwicm9sZSI6ImFkbWluIn0.dGhpcyBpcyBub3QgYSByZWFsIHNpZw`, rule: "memledger/jwt" },
];

describe("decidePromotion: secrets", () => {
  for (const secret of SECRETS) {
    it(`Given a body containing ${secret.name}, When decided, Then rejected naming rule ${secret.rule}, without echoing the secret`, async () => {
      const body = `${generic.body}\n\nSetup notes:\n${secret.text}\n`;
      const decision = decidePromotion(await candidate({ body }), emptyOrg, policy());
      expect(decision.type).toBe("reject");
      if (decision.type !== "reject") return;
      const codes = decision.reasons.map((r) => r.code);
      expect(codes).toContain(`secret:${secret.rule}`);
      const said = JSON.stringify(decision);
      // No line of the secret's text (beyond the harmless prefix words) appears in what is stored.
      for (const line of secret.text.split("\n")) {
        const sensitive = line.replace(/^[^=:]*[=:]\s*/, "").trim();
        if (sensitive.length >= 12 && !sensitive.startsWith("-----")) expect(said).not.toContain(sensitive);
      }
      expect(said).toMatch(/in the body, line \d+/);
    });
  }

  it("Given a secret in the title, When decided, Then the reason names the title", async () => {
    const decision = decidePromotion(await candidate({ title: `token ${"ghp_"}a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8` }), emptyOrg, policy());
    expect(decision).toMatchObject({ type: "reject", reasons: [expect.objectContaining({ code: "secret:@secretlint/secretlint-rule-github" })] });
    expect(JSON.stringify(decision)).toMatch(/in the title/);
  });

  it("Given an AWS example key from the docs and ordinary prose, When decided, Then nothing is a secret", async () => {
    const decision = decidePromotion(await candidate({ body: `${generic.body} The docs use AKIAIOSFODNN7EXAMPLE as a placeholder.` }), emptyOrg, policy());
    expect(decision.type).toBe("accept");
  });
});

describe("decidePromotion: validity", () => {
  it("Given a version that is no longer active (rolled back or superseded), When decided, Then rejected as unvalidated", async () => {
    const decision = decidePromotion(await candidate({}, { active: false }), emptyOrg, policy());
    expect(decision).toMatchObject({ type: "reject", reasons: [expect.objectContaining({ code: "unvalidated" })] });
  });

  it("Given a version never approved, When decided, Then rejected as unvalidated", async () => {
    const decision = decidePromotion(await candidate({}, { approvedBy: null }), emptyOrg, policy());
    expect(decision).toMatchObject({ type: "reject", reasons: [expect.objectContaining({ code: "unvalidated" })] });
  });

  it("Given a version approved by the policy alone, When decided, Then accepted but flagged and never auto-approved", async () => {
    const decision = decidePromotion(await candidate({}, { approvedBy: { kind: "service", id: "policy" } }), emptyOrg, policy({ autoApprove: true }));
    expect(decision).toMatchObject({ type: "accept", approve: false, flags: [expect.objectContaining({ code: "unvalidated:policy_approved" })] });
  });

  it("Given a version approved by the policy alone and a policy that refuses that, When decided, Then rejected", async () => {
    const decision = decidePromotion(await candidate({}, { approvedBy: { kind: "service", id: "policy" } }), emptyOrg, policy({ policyApproved: "reject" }));
    expect(decision).toMatchObject({ type: "reject", reasons: [expect.objectContaining({ code: "unvalidated:policy_approved" })] });
  });

  it("Given a secret and an inactive version, When decided, Then every reason is given at once", async () => {
    const body = `${generic.body}\n${"ghp_"}a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8`;
    const decision = decidePromotion(await candidate({ body }, { active: false }), emptyOrg, policy());
    expect(decision.type === "reject" && decision.reasons.map((r) => r.code).sort()).toEqual(["secret:@secretlint/secretlint-rule-github", "unvalidated"]);
  });
});

describe("decidePromotion: app-specific content", () => {
  const appSpecific: Partial<PromotedContent> = {
    title: "handleStripeEvent in src/payments/webhook.ts",
    body: "src/payments/webhook.ts calls handleStripeEvent via PaymentsRouter, see src/payments/router.ts and PAYMENTS_WEBHOOK_SECRET_NAME in src/config/payments.ts",
    paths: ["src/payments/webhook.ts", "src/payments/router.ts"],
  };

  it("Given a memory mostly made of the app's own paths and identifiers, When decided, Then rejected as app-specific", async () => {
    const decision = decidePromotion(await candidate(appSpecific), emptyOrg, policy());
    expect(decision).toMatchObject({ type: "reject", reasons: [expect.objectContaining({ code: "app_specific" })] });
  });

  it("Given general prose that names one file, When decided, Then accepted unflagged", async () => {
    expect(appSpecificity("shop", generic)).toBeLessThan(0.3);
    const decision = decidePromotion(await candidate(), emptyOrg, policy({ autoApprove: true }));
    expect(decision).toMatchObject({ type: "accept", flags: [], approve: true });
  });

  it("Given a memory between the flag and reject thresholds, When decided, Then accepted, flagged, not auto-approved", async () => {
    const content = { body: "Call handleStripeEvent in src/payments/webhook.ts for payment webhooks; PaymentsRouter retries.", title: "Webhook entry point" };
    const share = appSpecificity("shop", { ...generic, ...content });
    expect(share).toBeGreaterThanOrEqual(0.3);
    expect(share).toBeLessThan(0.5);
    const decision = decidePromotion(await candidate(content), emptyOrg, policy({ autoApprove: true }));
    expect(decision).toMatchObject({ type: "accept", approve: false, flags: [expect.objectContaining({ code: "app_specific" })] });
  });

  it("drops the app's file paths from a new org memory (provenance keeps the link)", async () => {
    const decision = decidePromotion(await candidate(), emptyOrg, policy());
    expect(decision.type === "accept" && decision.content.paths).toEqual([]);
  });
});

describe("decidePromotion: near-duplicates", () => {
  const existing: OrgMemoryView = {
    memoryId: "org-1",
    version: 2,
    title: "Webhook handlers must be idempotent",
    body: "Payment providers retry webhook deliveries for days. Handlers must be idempotent: store the event id first and answer 200 for events already processed.",
    kind: "convention",
    tags: ["webhooks"],
    importance: 3,
  };
  const unrelated: OrgMemoryView = { ...existing, memoryId: "org-2", title: "Use UTC in logs", body: "Every service logs timestamps in UTC with an explicit offset.", tags: [] };

  it("Given an org memory saying nearly the same, When decided, Then a merge into it as its next version", async () => {
    const decision = decidePromotion(await candidate(), orgWith([unrelated, existing]), policy());
    expect(decision).toMatchObject({ type: "merge", into: "org-1", intoVersion: 2 });
    if (decision.type !== "merge") return;
    expect(decision.similarity).toBeGreaterThanOrEqual(0.6);
    expect(decision.content.title).toBe(existing.title);
    expect(decision.content.tags.sort()).toEqual(["payments", "webhooks"]);
    expect(decision.content.importance).toBe(4);
    expect(decision.flags[0]).toMatchObject({ code: "merged" });
  });

  it("Given only unrelated org memories, When decided, Then a new org memory", async () => {
    expect(decidePromotion(await candidate(), orgWith([unrelated]), policy()).type).toBe("accept");
  });

  it("Given a similar org memory below a stricter threshold, When decided, Then a new org memory", async () => {
    expect(decidePromotion(await candidate(), orgWith([existing]), policy({ duplicateThreshold: 0.99 })).type).toBe("accept");
  });

  it("Given an earlier version of the same app memory already in the org, When decided, Then a merge into that org memory whatever the similarity", async () => {
    const decision = decidePromotion(await candidate({ title: "Completely reworded", body: "Something else entirely now." }), orgWith([], { "shop/mem-1": unrelated }), policy());
    expect(decision).toMatchObject({ type: "merge", into: "org-2" });
  });
});
