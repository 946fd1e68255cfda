import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MemoryClient } from "../../services/client.js";
import { HOSTILE_POLICY, refusal, startGovernedLedger, type GovernedLedger, type LedgerSnapshot } from "./governed-ledger.js";
import { SAMPLES, type SecretSample } from "./secret-samples.js";

/**
 * Issue 9 item 6: secrets in the log forever. The log is immutable and deleting from it is denied, so a
 * credential in any proposal (not only a promoted one) could never be removed. Against a private
 * nats-server running the generated auth configuration, every proposal with a secret in its title, body,
 * tags or paths is refused as `invalid`, naming the rule and the field and never the secret, and nothing
 * is appended (streams, files, search unchanged) — in the app, in a revision and in the org. The policy's
 * `secrets.allowIn` relaxes the named scopes only.
 */

const POLICY = { ...HOSTILE_POLICY, secrets: { allowIn: ["team:vault"] } };
const QUERIES = ["deploy notes", "webhook idempotent"];

type Field = "title" | "body" | "tags" | "paths";
const FIELDS: readonly Field[] = ["title", "body", "tags", "paths"];

const clean = {
  title: "Webhook handlers must be idempotent",
  body: "Payment providers retry webhook deliveries for days: store the event id first and answer 200 for events already processed.",
  tags: ["payments"],
  paths: ["src/payments/webhook.ts"],
};

function proposalWith(sample: SecretSample, field: Field) {
  switch (field) {
    case "title":
      return { ...clean, title: `Deploy notes ${sample.oneLine}` };
    case "body":
      return { ...clean, body: `${clean.body}\n\nSetup:\n${sample.block}\n` };
    case "tags":
      return { ...clean, tags: [...clean.tags, sample.oneLine] };
    case "paths":
      return { ...clean, paths: [...clean.paths, `config/${sample.oneLine}`] };
  }
}

/** The refusal says `invalid`, names the field and a rule that fits the sample, and holds no part of the secret. */
function expectSecretRefusal(err: { code: string; message: string; details?: Record<string, unknown> }, sample: SecretSample, field: Field): void {
  expect(err.code).toBe("invalid");
  expect(err.details).toMatchObject({ reason: "secret", fields: [field] });
  expect(err.message).toContain(`the ${field}`);
  expect(sample.rules.some((rule) => err.message.includes(rule))).toBe(true);
  const said = JSON.stringify({ message: err.message, details: err.details });
  for (const part of sample.sensitive) expect(said).not.toContain(part);
}

describe("secrets never enter the log (generated auth config, private nats-server)", () => {
  let ledger: GovernedLedger;
  let alice: MemoryClient;
  let appMemory: string;
  let before: LedgerSnapshot;

  beforeAll(async () => {
    ledger = await startGovernedLedger(POLICY, { label: "secrets" });
    alice = await ledger.clientAs("agent:alice");
    // Control: the same proposal without a secret is appended (so the stream exists and "unchanged" means something).
    appMemory = (await alice.propose(clean)).memoryId;
    before = await ledger.snapshot(QUERIES);
    expect(before.streams[ledger.service.names.appStream("app1")]).toBe(1);
  });

  afterAll(async () => {
    await ledger?.stop();
  });

  it("each kind of secret in each field of an app proposal is refused, naming rule and field; nothing changes", async () => {
    let refused = 0;
    for (const sample of SAMPLES) {
      for (const field of FIELDS) {
        // A tag is at most 64 characters: no private key block fits (the schema refuses it, see below).
        if (field === "tags" && sample.oneLine.length > 64) continue;
        const err = await refusal(alice.propose(proposalWith(sample, field)));
        expectSecretRefusal(err, sample, field);
        refused++;
      }
    }
    expect(refused).toBe(SAMPLES.length * FIELDS.length - 1);
    // A private key pasted as a tag is refused too, by the tag's length limit.
    const pemTag = SAMPLES.find((s) => s.kind === "private key block")!;
    expect((await refusal(alice.propose({ ...clean, tags: [pemTag.oneLine] }))).code).toBe("invalid");
    expect(await ledger.snapshot(QUERIES)).toEqual(before);
  });

  it("a revision that adds a secret to a stored memory is refused; the memory keeps one version", async () => {
    const github = SAMPLES.find((s) => s.kind === "GitHub token")!;
    const err = await refusal(alice.propose({ ...proposalWith(github, "body"), memoryId: appMemory }));
    expectSecretRefusal(err, github, "body");
    expect((await alice.show(appMemory)).versions).toHaveLength(1);
    expect(await ledger.snapshot(QUERIES)).toEqual(before);
  });

  it("a secretlint-disable comment in the body does not get a secret past the gate", async () => {
    const github = SAMPLES.find((s) => s.kind === "GitHub token")!;
    const body = `${clean.body}\n<!-- secretlint-disable -->\n${github.block}\n<!-- secretlint-enable -->`;
    expectSecretRefusal(await refusal(alice.propose({ ...clean, body })), github, "body");
    expect(await ledger.snapshot(QUERIES)).toEqual(before);
  });

  it("the org is scanned too: the curator's own org proposal with a secret is refused, the org stream stays empty", async () => {
    const curator = await ledger.clientAs("service:curator", "org");
    const slack = SAMPLES.find((s) => s.kind === "Slack token")!;
    const err = await refusal(curator.propose({ ...proposalWith(slack, "body"), scope: "org" }));
    expectSecretRefusal(err, slack, "body");
    expect((await ledger.broker.streamCounts())[ledger.service.names.orgStream()] ?? 0).toBe(0);
  });

  it("secrets.allowIn relaxes the scope it names (also for a revision, whose scope is the stored memory's) and no other", async () => {
    const aws = SAMPLES.find((s) => s.kind === "AWS secret access key")!;
    const vault = await alice.propose({ ...proposalWith(aws, "body"), scope: "team:vault" });
    const revised = await alice.propose({ ...proposalWith(SAMPLES.find((s) => s.kind === "GitHub token")!, "body"), memoryId: vault.memoryId });
    expect(revised.version).toBe(2);
    const stream = ledger.service.names.appStream("app1");
    const counts = await ledger.broker.streamCounts();
    expect(counts[stream]).toBe(before.streams[stream]! + 2);
    expectSecretRefusal(await refusal(alice.propose({ ...proposalWith(aws, "body"), scope: "team:ops" })), aws, "body");
    expect(await ledger.broker.streamCounts()).toEqual(counts);
  });
});
