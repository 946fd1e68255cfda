import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BrowserContext, Page } from "playwright-core";
import { MemoryClient, type LogEntry } from "../../services/client.js";
import { connectNats } from "../../services/nats.js";
import { EventStore } from "../../services/event-store.js";
import { naming } from "../../events/subjects.js";
import { NATS_URL, deleteRedisKeys, deleteStreams, uniquePrefix } from "../support/env.js";
import { eventually } from "../support/eventually.js";
import type { NatsConnection } from "@nats-io/transport-node";
import { activeVersionOf, memoryStatus } from "../../commands/memory.js";
import type { Phase, ProposalDraft } from "../../services/dream/phase.js";
import { runDream } from "../../services/dream/runner.js";
import { DEFAULT_CURATOR_POLICY, appSpecificity } from "../../services/curator/policy.js";
import { transcriptRefOf } from "../../services/transcripts.js";
import { launchBrowser, screenshot, startCli, startUiProcess, writePolicy, type Process } from "./support.js";

/**
 * The review page against a running `up` with a policy: every action is the page's human's command, the
 * policy's refusal is shown and appends nothing, hostile text renders inert, and events appended by others
 * appear on the open page without a reload.
 */

const POLICY = {
  version: 1,
  roles: {
    agent: {
      allow: [
        { verbs: ["*"], scopes: ["agent:self"], autoApprove: true },
        { verbs: ["propose", "promote"], scopes: ["team:*", "app"] },
      ],
    },
    // The page's human reviews the app and one team only: team:secret is out of its reach.
    reviewer: {
      allow: [
        { verbs: ["propose", "approve", "reject", "supersede", "rollback", "promote"], scopes: ["team:core", "app"] },
        // Accept, reject and revert consolidation runs.
        { verbs: ["dream"], scopes: ["app"] },
      ],
    },
    curator: { allow: [{ verbs: ["*"], scopes: ["org"] }] },
  },
  actors: {
    "agent:*": { roles: ["agent"] },
    "human:alice": { roles: ["reviewer"] },
    "service:curator": { roles: ["curator"] },
  },
};

/**
 * Two deterministic phases for the runs screen (the real phases have their own tests): prune proposes to
 * supersede every active memory tagged `ui-stale`; learn proposes two conventions, citing a transcript span.
 */
const uiPrune: Phase = {
  name: "prune",
  async propose({ view }) {
    return [...view.memories]
      .filter(([, m]) => memoryStatus(m.state) === "active" && activeVersionOf(m.state)!.tags.includes("ui-stale"))
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([id, m]): ProposalDraft => {
        const ref = { memoryId: id, version: m.state.activeVersion! };
        return { key: id, change: { action: "supersede", memory: ref }, evidence: { sessions: [], transcripts: [], memories: [ref], counts: { retrievals: 0, days: 120 }, prevalence: null, scores: {}, summary: "never retrieved in 120 days" }, reason: "stale: never retrieved" };
      });
  },
};
const learnPhase = (sessions: string[], digest: string): Phase => ({
  name: "learn",
  async propose() {
    return ["Run the linter before pushing", "Pin Node to 20 in CI"].map((title, i): ProposalDraft => ({
      key: `pattern-${i}`,
      change: { action: "create", scope: "app", content: { title, body: `${title}.`, kind: "convention", tags: [], paths: [], importance: 3 } },
      evidence: { sessions, transcripts: [{ sessionId: sessions[0]!, digest, lines: [2, 3] }], memories: [], counts: { sessions: sessions.length, occurrences: 4 }, prevalence: 0.75, scores: {}, summary: `seen in ${sessions.length} sessions` },
      reason: "recurring correction",
    }));
  },
});

describe("memledger ui: the review page in a browser, against a running up", () => {
  const prefix = uniquePrefix("ui");
  const app = "shop";
  let tmp: string;
  let env: Record<string, string>;
  let up: Process;
  let ui: Process & { url: string };
  let browser: { context: BrowserContext; close(): Promise<void> };
  let page: Page;
  let nc: NatsConnection;
  let store: EventStore;
  let agent: MemoryClient;

  const lastSeq = () => store.lastSeq(store.names.appStream(app));
  const memoryLog = (memoryId: string): Promise<LogEntry[]> => agent.log({ memoryId });
  const card = (memoryId: string, version = 1) => page.locator(`article[data-item="${memoryId}@${version}"]`);
  const propose = (title: string, body: string, extra: Partial<Parameters<MemoryClient["propose"]>[0]> = {}) =>
    agent.propose({ title, body, ...extra }).then((o) => o.memoryId);
  const openQueue = async () => {
    await page.goto(`${ui.url}/queue?app=${app}`);
    await page.getByText("Live updates: on").waitFor();
  };

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "memledger-ui-"));
    const policy = await writePolicy(tmp, POLICY);
    env = { MEMLEDGER_DATA: tmp, MEMLEDGER_VECTORS: "off" };
    up = await startCli(["up", "--prefix", prefix, "--policy", policy], env, "ready");
    ui = await startUiProcess(["--prefix", prefix, "--app", app, "--as", "human:alice"], env);
    nc = await connectNats({ servers: NATS_URL });
    store = await EventStore.open(nc, naming(prefix));
    agent = new MemoryClient(nc, { app, as: "coder-1", prefix });
    browser = await launchBrowser();
    page = await browser.context.newPage();
  });

  afterAll(async () => {
    await browser?.close();
    await ui?.stop();
    await up?.stop();
    if (nc) {
      await deleteStreams(nc, prefix);
      await nc.close();
    }
    await deleteRedisKeys(prefix);
    await rm(tmp, { recursive: true, force: true });
  });

  it("approves a proposal through the page: memory.approved by human:alice is in the log", async () => {
    const id = await propose("Retry webhooks three times", "Retries: 3.\nBackoff: linear.", { paths: ["src/payments/webhook.ts"], git: { branch: "fix/retries", worktree: "/w/1" }, sessionId: "sess-1" });
    await openQueue();
    const item = card(id);
    await item.getByText("fix/retries").waitFor();
    expect(await item.locator(".diff .add", { hasText: "+Retries: 3." }).count()).toBe(1);
    await screenshot(page, "queue");
    await item.getByRole("button", { name: "Approve", exact: true }).click();
    await page.locator(".results", { hasText: "memory.approved appended" }).waitFor();
    const events = await memoryLog(id);
    expect(events.at(-1)).toMatchObject({ type: "memory.approved", actor: { kind: "human", id: "alice" }, data: { version: 1 } });
    // Gone from the queue once decided.
    expect(await card(id).count()).toBe(0);
  });

  it("rejects a proposal with the reviewer's reason", async () => {
    const id = await propose("Queue names are global", "One queue for all tenants.");
    await openQueue();
    const item = card(id);
    await item.getByLabel("Reason to reject").fill("queues are per tenant since the split");
    await item.getByRole("button", { name: "Reject", exact: true }).click();
    await page.locator(".results", { hasText: "memory.rejected appended" }).waitFor();
    expect((await memoryLog(id)).at(-1)).toMatchObject({ type: "memory.rejected", actor: { kind: "human", id: "alice" }, data: { version: 1, reason: "queues are per tenant since the split" } });
  });

  it("approves several at once with the keyboard", async () => {
    const a = await propose("Use UTC in logs", "All timestamps in UTC.", { scope: "team:core" });
    const b = await propose("Prefer small PRs", "Under 400 lines.");
    await openQueue();
    for (const id of [a, b]) {
      await card(id).getByLabel(/^Select/).focus();
      await page.keyboard.press("Space");
    }
    await page.locator("#queue-app-bulk").getByRole("button", { name: "Approve selected" }).focus();
    await page.keyboard.press("Enter");
    await page.locator(".results", { hasText: "2 done, 0 refused" }).waitFor();
    for (const id of [a, b]) expect((await memoryLog(id)).at(-1)).toMatchObject({ type: "memory.approved", actor: { kind: "human", id: "alice" } });
  });

  it("shows the policy's refusal of a forbidden action, and the log does not move", async () => {
    const id = await propose("Rotate the signing key", "Every 90 days.", { scope: "team:secret" });
    await openQueue();
    const before = await lastSeq();
    await card(id).getByRole("button", { name: "Approve", exact: true }).click();
    const refusal = page.locator(".results .refused");
    await refusal.waitFor();
    expect(await refusal.textContent()).toMatch(/refused \(forbidden\): human:alice may not approve in scope team:secret/);
    await screenshot(page, "queue-refused");
    expect(await lastSeq()).toBe(before);
    expect((await memoryLog(id)).map((e) => e.type)).toEqual(["memory.proposed"]);
    // Still waiting for someone who may decide it.
    expect(await card(id).count()).toBe(1);
  });

  it("shows the org's queue: where a proposal was promoted from and the curator's flags; approving the org is not the page's to do", async () => {
    const content = { title: "Retry failed webhooks with backoff", body: "Retry failed deliveries with exponential backoff, in src/webhooks/retry.ts via handleRetry.", paths: ["src/webhooks/retry.ts"] };
    // Between the curator's flag and reject thresholds for app-specific words: promoted, flagged.
    const share = appSpecificity(app, content);
    expect(share).toBeGreaterThanOrEqual(DEFAULT_CURATOR_POLICY.appSpecific.flagAbove);
    expect(share).toBeLessThan(DEFAULT_CURATOR_POLICY.appSpecific.rejectAbove);
    const id = await propose(content.title, content.body, { paths: content.paths });
    const reviewer = new MemoryClient(nc, { app, as: "human:alice", prefix });
    await reviewer.approve(id);
    await openQueue();
    await reviewer.promote(id);
    // The curator writes the org proposal; it appears live.
    const orgCard = page.locator("#queue-org article", { hasText: content.title });
    await orgCard.waitFor({ timeout: 30_000 });
    expect(await orgCard.textContent()).toContain(`${app} ${id} v1 by agent:coder-1`);
    expect(await orgCard.locator(".flags").textContent()).toContain("app_specific");
    const orgSeq = () => store.lastSeq(store.names.orgStream());
    const before = await orgSeq();
    await orgCard.getByRole("button", { name: "Approve", exact: true }).click();
    const refusal = page.locator("#queue-org .results .refused");
    await refusal.waitFor();
    expect(await refusal.textContent()).toMatch(/refused \(forbidden\): human:alice may not approve in scope org/);
    expect(await orgSeq()).toBe(before);
    await screenshot(page, "queue-org");
  });

  it("renders a hostile body inert", async () => {
    const hostile = `<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><a href="javascript:window.__pwned=3">click</a>`;
    const id = await propose(`<b onmouseover="window.__pwned=4">Title</b>`, hostile);
    await openQueue();
    const item = card(id);
    await item.locator("summary", { hasText: "Body as written" }).click();
    expect(await item.locator("pre.body").textContent()).toBe(hostile);
    expect(await page.locator("main script, main img, main [onerror], main [onmouseover], main a[href^='javascript']").count()).toBe(0);
    expect(await page.evaluate(() => (globalThis as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    await page.goto(`${ui.url}/memory/${app}/${id}`);
    expect(await page.locator("main script, main img").count()).toBe(0);
    expect(await page.evaluate(() => (globalThis as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
  });

  it("shows an event another client appends, without a reload", async () => {
    await openQueue();
    await page.evaluate(() => ((globalThis as unknown as { __samePage: boolean }).__samePage = true));
    const id = await propose("Feature flags live in LaunchDarkly", "Not in env vars.");
    await card(id).waitFor({ timeout: 15_000 });
    expect(await page.evaluate(() => (globalThis as unknown as { __samePage?: boolean }).__samePage)).toBe(true);
    expect(await page.locator("#live-feed li", { hasText: "memory.proposed" }).count()).toBeGreaterThan(0);
  });

  it("does not pull a section away from a reviewer typing in it; it catches up once they leave", async () => {
    const first = await propose("Alerts page the on-call", "PagerDuty, not email.");
    await openQueue();
    const reason = card(first).getByLabel("Reason to reject");
    await reason.fill("we moved to Opsgenie");
    await reason.focus();
    const id = await propose("Dashboards live in Grafana", "Not in Kibana.");
    await page.locator("#live-feed li", { hasText: "memory.proposed" }).first().waitFor();
    // Past the refresh's debounce: had the section been replaced, the text and the focus would be gone.
    await page.waitForTimeout(1_000);
    expect(await reason.inputValue()).toBe("we moved to Opsgenie");
    expect(await reason.evaluate((el) => el === (el.ownerDocument as unknown as { activeElement: unknown }).activeElement)).toBe(true);
    await page.locator("#app-select").focus();
    await card(id).waitFor({ timeout: 15_000 });
  });

  it("shows a memory's history with diffs and who did what, its exposure and promotions", async () => {
    const id = await propose("Deploy on Tuesdays", "Deploys happen on Tuesday.");
    const reviewer = new MemoryClient(nc, { app, as: "human:alice", prefix });
    await reviewer.approve(id);
    await agent.propose({ memoryId: id, title: "Deploy on Tuesdays and Thursdays", body: "Deploys happen on Tuesday and Thursday." });
    await reviewer.reject(id, "Thursday freezes are back");
    const session = await agent.startSession({ task: "deploy the shop" });
    // A hydrate that names the session leaves a receipt of what it showed (exposure).
    await eventually("the memory to be shown to the session", async () => {
      const pack = await agent.hydrate({ task: "deploy tuesday", sessionId: session.sessionId });
      return pack.markdown.includes("Deploy on Tuesdays") ? pack : undefined;
    }, 30_000, 300);
    await page.goto(`${ui.url}/memory/${app}/${id}`);
    await eventually("the exposure to be listed", async () => {
      await page.reload();
      return (await page.locator("section[aria-labelledby=exposure-h]").textContent())?.includes(session.sessionId) || undefined;
    }, 20_000, 300);
    const history = page.locator("section[aria-labelledby=history-h]");
    expect(await history.textContent()).toContain("human:alice");
    expect(await history.textContent()).toContain("Thursday freezes are back");
    expect(await page.locator(".diff .add", { hasText: "+Deploys happen on Tuesday and Thursday." }).count()).toBe(1);
    await screenshot(page, "memory");
  });

  it("filters the audit timeline by actor and type, and lists claims held now", async () => {
    await page.goto(`${ui.url}/timeline?app=${app}`);
    await page.getByLabel("Actor").fill("human:alice");
    await page.getByLabel("Type").fill("memory.rejected");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.waitForURL(/actor=human%3Aalice/);
    const rows = page.locator("#timeline tbody tr");
    expect(await rows.count()).toBeGreaterThanOrEqual(2);
    for (const row of await rows.all()) {
      expect(await row.locator("td").nth(2).textContent()).toBe("memory.rejected");
      expect(await row.locator("td").nth(3).textContent()).toBe("human:alice");
    }
    await screenshot(page, "timeline");

    await agent.claim("src/payments/webhook.ts", { kind: "lock", ttlMs: 600_000 });
    await page.goto(`${ui.url}/claims?app=${app}`);
    await eventually("the lock to be listed", async () => {
      await page.reload();
      return (await page.locator("#claims").textContent())?.includes("src/payments/webhook.ts") || undefined;
    }, 30_000, 300);
    expect(await page.locator("#claims tbody tr", { hasText: "src/payments/webhook.ts" }).textContent()).toContain("coder-1");
    await screenshot(page, "claims");
  });

  it("accepts half of a consolidation run through the page, then reverts the run", async () => {
    const reviewer = new MemoryClient(nc, { app, as: "human:alice", prefix });
    const stale: string[] = [];
    for (const title of ["Old build script", "Legacy deploy notes"]) {
      const id = await propose(title, `${title}: obsolete.`, { tags: ["ui-stale"] });
      await reviewer.approve(id);
      stale.push(id);
    }
    const transcript = "user: push it\nassistant: pushing without lint\nuser: run the linter before pushing, always\nassistant: ok\n";
    const sessions: string[] = [];
    for (let i = 0; i < 3; i++) {
      const s = await agent.startSession({ task: `task ${i}` });
      await agent.endSession(s.sessionId, i === 0 ? { transcriptBytes: new TextEncoder().encode(transcript) } : {});
      sessions.push(s.sessionId);
    }
    const digest = transcriptRefOf(new TextEncoder().encode(transcript)).digest;
    const run = await runDream({ nc, store }, { app, phases: [uiPrune, learnPhase(sessions, digest)], force: true });
    if (run.status !== "completed") throw new Error(`the run did not complete: ${run.status}`);
    expect(run.proposals).toHaveLength(4);

    await page.goto(`${ui.url}/runs?app=${app}`);
    const section = page.locator(`#run-${run.runId}`);
    await section.waitFor();
    // The evidence: the cited transcript lines, counts and prevalence.
    expect(await section.locator("pre.transcript").first().textContent()).toContain("run the linter before pushing, always");
    expect(await section.locator(".evidence").first().textContent()).toMatch(/never retrieved in 120 days/);
    expect(await section.textContent()).toContain("75% of analysed sessions");
    await screenshot(page, "runs");

    // Accept half: one prune and one learn proposal.
    const [prune] = run.proposals.filter((p) => p.phase === "prune");
    const [learn] = run.proposals.filter((p) => p.phase === "learn");
    const chosen = [prune!.proposalId, learn!.proposalId];
    for (const id of chosen) await section.locator(`article[data-proposal="${id}"]`).getByLabel(/^Select/).check();
    await section.getByRole("button", { name: "Accept selected" }).click();
    await page.locator(`#run-${run.runId} .results`, { hasText: "2 done, 0 refused" }).waitFor();
    const stream = store.names.appStream(app);
    const events = async () => (await store.readLog(stream, { sinceSeq: run.asOfSeq, limit: 10_000 })).map((e) => e.event);
    const decided = (await events()).filter((e) => e.type === "proposal.accepted");
    expect(decided.map((e) => e.aggregateId).sort()).toEqual([...chosen].sort());
    expect(decided.every((e) => e.actor.kind === "human" && e.actor.id === "alice")).toBe(true);
    const pruned = prune!.key;
    expect((await memoryLog(pruned)).at(-1)).toMatchObject({ type: "memory.superseded", actor: { kind: "human", id: "alice" } });
    // The other half is still waiting.
    const others = run.proposals.map((p) => p.proposalId).filter((id) => !chosen.includes(id));
    expect((await events()).filter((e) => e.type.startsWith("proposal.") && e.type !== "proposal.made" && others.includes(e.aggregateId))).toEqual([]);

    const revertForm = page.locator(`#run-${run.runId} form.revert`);
    await revertForm.getByLabel("Reason to revert the run").fill("too eager: keep the build notes");
    await revertForm.getByRole("button", { name: "Revert run" }).click();
    await page.locator(`#run-${run.runId} .badge.status-reverted`).first().waitFor();
    const after = await events();
    expect(after.filter((e) => e.type === "run.reverted")).toMatchObject([{ actor: { kind: "human", id: "alice" }, data: { reason: "too eager: keep the build notes" } }]);
    expect(after.filter((e) => e.type === "proposal.reverted").map((e) => e.aggregateId).sort()).toEqual([...chosen].sort());
    expect((await memoryLog(pruned)).at(-1)).toMatchObject({ type: "memory.reinstated" });
    await screenshot(page, "runs-reverted");
  });

  it("reads a long queue in pages, oldest first, and shows more on request", async () => {
    await page.goto(`${ui.url}/queue?app=${app}&limit=1`);
    const section = page.locator("#queue-app");
    const total = Number((await section.locator("h2 .count").textContent())!.replace(/\D/g, ""));
    expect(total).toBeGreaterThan(1);
    expect(await section.locator("article").count()).toBe(1);
    expect(await section.locator(".more").textContent()).toContain(`Showing the oldest 1 of ${total}`);
    await section.getByRole("link", { name: "Show more" }).click();
    await page.waitForFunction((n) => (globalThis as unknown as { document: { querySelectorAll(s: string): { length: number } } }).document.querySelectorAll("#queue-app article").length === n, Math.min(total, 4));
  });

  it("refuses a POST without the page's form token or from another origin, and appends nothing", async () => {
    const id = await propose("Cache for 5 minutes", "TTL 300s.");
    const before = await lastSeq();
    const noToken = await fetch(`${ui.url}/queue/decide`, { method: "POST", body: new URLSearchParams({ app, item: `${id}@1`, action: "approve" }) });
    expect(noToken.status).toBe(403);
    await openQueue();
    const token = await page.locator("input[name=_csrf]").first().inputValue();
    const crossSite = await fetch(`${ui.url}/queue/decide`, {
      method: "POST",
      headers: { Origin: "http://evil.example" },
      body: new URLSearchParams({ _csrf: token, app, item: `${id}@1`, action: "approve" }),
    });
    expect(crossSite.status).toBe(403);
    expect(await lastSeq()).toBe(before);
  });
});

describe("memledger ui: binding and the token", () => {
  const env = { MEMLEDGER_VECTORS: "off" };
  const prefix = uniquePrefix("uitok");

  it("refuses to listen on a non-loopback address without a token", async () => {
    const { cli } = await import("../cli/support.js");
    const ran = await cli(["ui", "--host", "0.0.0.0", "--port", "0", "--prefix", prefix, "--as", "human:alice"], { env });
    expect(ran.code).toBe(2);
    expect(ran.stderr).toMatch(/^memledger: invalid: memledger ui refuses to listen on 0\.0\.0\.0 without a token/);
    const agentUi = await cli(["ui", "--port", "0", "--prefix", prefix, "--as", "coder-1"], { env });
    expect(agentUi.code).toBe(2);
    expect(agentUi.stderr).toMatch(/acts as a human/);
  });

  it("with a token, every request needs it: bearer, or ?token= once and then the cookie", async () => {
    const token = "t0ken-for-the-review-page-test";
    const ui = await startUiProcess(["--host", "0.0.0.0", "--token", token, "--prefix", prefix, "--as", "human:alice"], env);
    try {
      const base = ui.url.replace("0.0.0.0", "127.0.0.1");
      expect((await fetch(`${base}/queue`)).status).toBe(401);
      expect((await fetch(`${base}/queue`, { headers: { Authorization: "Bearer wrong-token-wrong-token" } })).status).toBe(401);
      expect((await fetch(`${base}/queue`, { headers: { Authorization: `Bearer ${token}` } })).status).toBe(200);
      const once = await fetch(`${base}/queue?token=${token}`, { redirect: "manual" });
      expect(once.status).toBe(303);
      expect(once.headers.get("location")).toBe("/queue");
      const cookie = once.headers.get("set-cookie")!;
      expect(cookie).toMatch(/HttpOnly/);
      expect(cookie).toMatch(/SameSite=Strict/);
      expect((await fetch(`${base}/queue`, { headers: { Cookie: cookie.split(";")[0]! } })).status).toBe(200);
    } finally {
      await ui.stop();
      const nc = await connectNats({ servers: NATS_URL });
      await deleteStreams(nc, prefix);
      await nc.close();
    }
  });
});
