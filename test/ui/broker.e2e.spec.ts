import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Page } from "playwright-core";
import { MemoryClient } from "../../services/client.js";
import { deleteRedisKeys } from "../support/env.js";
import { cli } from "../cli/support.js";
import { startGeneratedBroker, type GeneratedBroker } from "../hostile/generated-broker.js";
import { launchBrowser, screenshot, startCli, startUiProcess, type Process } from "./support.js";

/**
 * The review page under `memledger auth config`: its commands go out as the human's NATS user (which may
 * only send commands as itself), its direct reads (live updates, exposure) as the read-only auditor. The
 * broker and the policy decide, not the page.
 */
const POLICY = {
  version: 1,
  roles: {
    agent: { allow: [{ verbs: ["propose"], scopes: ["app"] }] },
    reviewer: { allow: [{ verbs: ["approve", "reject"], scopes: ["app"] }] },
    // Reads what is shared, decides nothing.
    observer: { allow: [{ verbs: ["read"], scopes: ["app"] }] },
  },
  actors: {
    "agent:coder-1": { roles: ["agent"] },
    "human:alice": { roles: ["reviewer"] },
    "human:bob": { roles: ["observer"] },
  },
};

describe("memledger ui behind an auth-enabled broker", () => {
  const app = "billing";
  let broker: GeneratedBroker;
  let tmp: string;
  let up: Process;
  let ui: Process & { url: string };
  let browser: Awaited<ReturnType<typeof launchBrowser>>;
  let page: Page;
  let agent: MemoryClient;

  const user = (name: string) => broker.creds.users[name]!.url;
  const lastSeq = async () => (await broker.streamCounts())[`${broker.prefix}_app_${app}`] ?? 0;

  beforeAll(async () => {
    broker = await startGeneratedBroker(POLICY, "uiauth");
    tmp = await mkdtemp(join(tmpdir(), "memledger-uiauth-"));
    const base = { MEMLEDGER_DATA: tmp, MEMLEDGER_VECTORS: "off", MEMLEDGER_PREFIX: broker.prefix };
    up = await startCli(["up", "--no-embedded", "--policy", broker.policyFile], { ...base, NATS_URL: user("memledger") }, "ready");
    ui = await startUiProcess(["--app", app, "--as", "human:alice"], { ...base, NATS_URL: user("human:alice"), MEMLEDGER_UI_READ_NATS: user("auditor") });
    agent = new MemoryClient(await broker.connectAs("agent:coder-1"), { app, as: "coder-1", prefix: broker.prefix });
    browser = await launchBrowser();
    page = await browser.context.newPage();
  });

  afterAll(async () => {
    await browser?.close();
    await ui?.stop();
    await up?.stop();
    await broker?.stop();
    if (broker) await deleteRedisKeys(broker.prefix);
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it("approves as the human's own NATS user and shows a later proposal live, read as the auditor", async () => {
    const first = await agent.propose({ title: "Invoices are immutable", body: "Correct with a credit note." });
    await page.goto(`${ui.url}/queue?app=${app}`);
    await page.getByText("Live updates: on").waitFor();
    await page.locator(`article[data-item="${first.memoryId}@1"]`).getByRole("button", { name: "Approve", exact: true }).click();
    await page.locator(".results", { hasText: "memory.approved appended" }).waitFor();
    const events = await agent.log({ memoryId: first.memoryId });
    expect(events.at(-1)).toMatchObject({ type: "memory.approved", actor: { kind: "human", id: "alice" } });

    const second = await agent.propose({ title: "VAT is computed per line", body: "Round per line, not per invoice." });
    await page.locator(`article[data-item="${second.memoryId}@1"]`).waitFor({ timeout: 15_000 });
    await screenshot(page, "queue-auth");
  });

  it("refuses to start when its connection may not read the streams, naming --read-nats", async () => {
    const ran = await cli(["ui", "--port", "0", "--app", app, "--as", "human:alice"], { env: { MEMLEDGER_VECTORS: "off", MEMLEDGER_PREFIX: broker.prefix, NATS_URL: user("human:alice") } });
    expect(ran.code).toBe(1);
    expect(ran.stderr).toMatch(/^memledger: unavailable: the review page cannot read the streams .* give --read-nats/);
    expect(ran.stdout).not.toContain("listening");
  });

  it("a human the policy lets only read is refused by the service, and nothing is appended", async () => {
    const proposal = await agent.propose({ title: "Dunning after 30 days", body: "Three reminders." });
    const bob = await startUiProcess(["--app", app, "--as", "human:bob"], { MEMLEDGER_VECTORS: "off", MEMLEDGER_PREFIX: broker.prefix, NATS_URL: user("human:bob"), MEMLEDGER_UI_READ_NATS: user("auditor") });
    try {
      const bobPage = await browser.context.newPage();
      await bobPage.goto(`${bob.url}/queue?app=${app}`);
      const before = await lastSeq();
      await bobPage.locator(`article[data-item="${proposal.memoryId}@1"]`).getByRole("button", { name: "Approve", exact: true }).click();
      const refusal = bobPage.locator(".results .refused");
      await refusal.waitFor();
      expect(await refusal.textContent()).toMatch(/refused \(forbidden\): human:bob may not approve/);
      expect(await lastSeq()).toBe(before);
      await bobPage.close();
    } finally {
      await bob.stop();
    }
  });
});
