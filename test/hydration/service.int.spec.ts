import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { claimsProjection, claimsReader, escapeGlob, unlinkMatching } from "../../projections/claims/index.js";
import { filesProjection } from "../../projections/files/index.js";
import { rebuildProjection } from "../../services/projection-runner.js";
import type { ContextPack } from "../../services/hydration/pack.js";
import { o200kTokens } from "../../services/hydration/tokens.js";
import { manualClock } from "../claims/support.js";
import { REDIS_URL, startLedger, type Ledger } from "../support/env.js";

const section = (pack: ContextPack, name: string) => pack.sections.find((s) => s.name === name)!;

describe("hydrate through the command service (real NATS and Redis)", () => {
  let ledger: Ledger;
  let root: string;
  let redis: Redis;
  let keyPrefix: string;
  const clock = manualClock(Date.now());

  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), "memledger-hydrate-"));
    redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 3 });
    const prefix = `hyd${Math.random().toString(36).slice(2, 10)}`;
    keyPrefix = `${prefix}:claims`;
    ledger = await startLedger({ prefix, now: clock.now, claims: claimsReader({ redis, keyPrefix }), hydration: { filesRoot: path.join(root, "files") } });
  });

  afterEach(async () => {
    await ledger.cleanup();
    await unlinkMatching(redis, `${escapeGlob(keyPrefix)}:*`);
    redis.disconnect();
    await rm(root, { recursive: true, force: true });
  });

  /** Brings MEMORY.md and the Redis claims up to the log's end, so the test does not wait on live runners. */
  async function project(): Promise<void> {
    const scope = { prefix: ledger.prefix, app: ledger.app, stream: ledger.service.names.appStream(ledger.app) };
    await rebuildProjection(ledger.service.store, filesProjection({ root: path.join(root, "files") }), scope);
    await rebuildProjection(ledger.service.store, claimsProjection({ redis: REDIS_URL, keyPrefix }), scope);
  }

  it("gives an agent others' claims (not its own), fragile memories on its paths, changes since its last session, and the relevant memory first", async () => {
    const coder1 = ledger.client("coder-1");
    const coder2 = ledger.client("coder-2");
    const rita = ledger.client("human:rita");

    // Before coder-1's last session ended: known to it already, so not a change.
    const old = await coder2.propose({ title: "Logging goes through pino", body: "Use the shared pino logger.", kind: "convention" });
    await rita.approve(old.memoryId);
    const previous = await coder1.startSession({ task: "earlier work on auth" });
    const ended = await coder1.endSession(previous.sessionId, { summary: "done" });

    // After it: what the pack must report.
    const relevant = await coder2.propose({
      title: "Stripe webhook retries are idempotent",
      body: "Stripe retries webhooks for three days. Every handler stores the event id and skips a repeat, so retries are safe.",
      kind: "decision",
      paths: ["src/payments/webhook.ts"],
      importance: 4,
    });
    await rita.approve(relevant.memoryId);
    const noise = await coder2.propose({ title: "Frontend colours", body: "Use the design tokens for colours.", kind: "convention" });
    await rita.approve(noise.memoryId);
    const fragile = await coder2.propose({
      title: "Webhook signature check needs the raw body",
      body: "Do not parse JSON before verifying the Stripe signature: the check needs the raw bytes.",
      kind: "fragile",
      paths: ["src/payments"],
      importance: 5,
    });
    await rita.approve(fragile.memoryId);
    const elsewhere = await coder2.propose({ title: "Session cookie order matters", body: "Auth middleware order is load-bearing.", kind: "fragile", paths: ["src/auth"] });
    await rita.approve(elsewhere.memoryId);
    await rita.supersede(noise.memoryId, "moved to the design system docs");

    await coder2.claim("src/payments/webhook.ts", { kind: "lock", ttlMs: 30 * 60_000 });
    await coder2.claim("refactor-auth", { ttlMs: 30 * 60_000 });
    await coder1.claim("fix-webhook-retries", { ttlMs: 30 * 60_000 });
    await project();

    const pack = await coder1.hydrate({ task: "stripe webhook retries", paths: ["src/payments/webhook.ts"], branch: "fix/webhooks", budget: 4000 });

    expect(pack.tokens).toBeLessThanOrEqual(4000);
    expect(pack.tokens).toBe(o200kTokens.count(pack.markdown));
    expect(pack.markdown.startsWith("# Context pack for `coder-1`")).toBe(true);

    const claims = section(pack, "claims");
    expect(claims.included).toEqual(["lock:src/payments/webhook.ts", "task:refactor-auth"]);
    expect(pack.markdown).toContain("lock `src/payments/webhook.ts` held by coder-2");
    expect(pack.markdown).not.toContain("fix-webhook-retries");

    expect(section(pack, "fragile").included).toEqual([fragile.memoryId]);
    expect(pack.markdown).toContain("the check needs the raw bytes");

    expect(section(pack, "relevant").included[0]).toBe(relevant.memoryId);
    expect(pack.markdown).toContain("so retries are safe");
    expect(section(pack, "relevant").included).not.toContain(noise.memoryId); // superseded: not active

    const changes = section(pack, "changes");
    const changedSeqs = changes.included.map((key) => Number(key.slice("seq:".length)));
    expect(changedSeqs.length).toBe(9); // 4 proposals, 4 approvals and the supersede, all after the session ended
    expect(Math.min(...changedSeqs)).toBeGreaterThan(ended.seq);
    expect(pack.markdown).toContain(`Since your session \`${previous.sessionId}\` ended`);
    expect(pack.markdown).toContain(`superseded "Frontend colours" (\`${noise.memoryId}\`) by human:rita`);
    expect(pack.markdown).not.toContain(`(\`${old.memoryId}\`) by`); // changed before the session ended

    expect(section(pack, "index").included.length).toBeGreaterThan(3);
    expect(pack.markdown).toContain(`#### Memory index: ${ledger.app}`);
  });

  it("counts changes from the session before the current one, and says so when there was none", async () => {
    const coder1 = ledger.client("coder-1");
    const coder2 = ledger.client("coder-2");
    const first = await coder1.hydrate({ task: "anything" });
    expect(first.markdown).toContain("No earlier session of coder-1 in this app");
    expect(first.markdown).toContain("No MEMORY.md yet"); // nothing projected yet
    expect(first.markdown).toContain("Nobody else holds a claim or lock.");

    const s1 = await coder1.startSession({ task: "first" });
    await coder1.endSession(s1.sessionId);
    const between = await coder2.propose({ title: "Between sessions", body: "Proposed while coder-1 was away." });
    const s2 = await coder1.startSession({ task: "second" });
    const during = await coder2.propose({ title: "During the current session", body: "Proposed after coder-1 started again." });

    // With the current session named, and without it (the open latest session counts as current).
    for (const request of [{ sessionId: s2.sessionId }, {}]) {
      const pack = await coder1.hydrate({ task: "sessions", ...request });
      expect(section(pack, "changes").included).toEqual([`seq:${during.seq}`, `seq:${between.seq}`]);
      expect(pack.markdown).toContain(`Since your session \`${s1.sessionId}\` ended`);
    }
    // Another agent's sessions are not coder-1's.
    expect((await coder2.hydrate({ task: "x" })).markdown).toContain("No earlier session of coder-2");
  });

  it("keeps under tiny budgets and names what it dropped", async () => {
    const coder2 = ledger.client("coder-2");
    for (let i = 0; i < 6; i++) {
      const p = await coder2.propose({ title: `Payments note ${i}`, body: `Payments detail ${i}. `.repeat(40), paths: ["src/payments"] });
      await ledger.client("human:rita").approve(p.memoryId);
    }
    for (const budget of [1, 40, 120, 400]) {
      const pack = await ledger.client("coder-1").hydrate({ task: "payments detail", paths: ["src/payments/x.ts"], budget });
      expect(pack.tokens).toBeLessThanOrEqual(budget);
      expect(o200kTokens.count(pack.markdown)).toBe(pack.tokens);
      expect(pack.budget).toBe(budget);
      const relevant = section(pack, "relevant");
      expect(relevant.included.length + relevant.dropped.length).toBe(6);
      if (budget === 400) expect(relevant.dropped.length).toBeGreaterThan(0);
    }
    const refused = await ledger.client("coder-1").hydrate({ budget: 0 }).catch((err) => err);
    expect(refused.code).toBe("invalid");
  });
});
