import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rebuildProjections } from "../../services/projection-runner.js";
import { EventStore } from "../../services/event-store.js";
import { filesProjection, readMemoryIndex, treeHash } from "../../projections/files/index.js";
import { naming } from "../../events/subjects.js";
import { cli, failed, jsonLine, lines } from "../cli/support.js";
import { startLedger, type Ledger } from "../support/env.js";

/**
 * The auditor's verbs, run as CLI processes against a ledger written through the command service:
 * history with provenance, diffs, blame, MEMORY.md as of a moment, and an export/import round trip whose
 * rebuilt files equal the source's.
 */
describe("audit: history, diff, blame, index as of, export and import", () => {
  let ledger: Ledger;
  let dir: string;
  let memoryId: string;
  let other: string;
  let seqAfterV1: number;
  let indexAfterV1: string;
  const g = () => ["--prefix", ledger.prefix, "--app", ledger.app, "--json"];

  beforeAll(async () => {
    ledger = await startLedger({ app: "audit1" });
    dir = await mkdtemp(join(tmpdir(), "memledger-audit-"));
    const agent = ledger.client("coder-1");
    const reviewer = ledger.client("human:alice");
    const v1 = await agent.propose({ title: "Retry webhooks three times", body: "Retries: 3.\nBackoff: linear.", kind: "procedure", tags: ["payments"], paths: ["src/payments/webhook.ts"], git: { branch: "fix/retries", worktree: "/w/1" }, sessionId: "sess-1" });
    memoryId = v1.memoryId;
    await reviewer.approve(memoryId);
    const before = await runIndex([]);
    seqAfterV1 = before.seq;
    indexAfterV1 = before.markdown;
    await agent.propose({ memoryId, title: "Retry webhooks five times", body: "Retries: 5.\nBackoff: exponential.", kind: "procedure", tags: ["payments", "webhooks"], paths: ["src/payments/webhook.ts", "src/payments/queue.ts"] });
    await reviewer.reject(memoryId, "five is too many for Stripe's rate limits");
    const o = await agent.propose({ title: "Queue names are per tenant", body: "tenant-<id>", paths: ["src/payments"] });
    other = o.memoryId;
    await reviewer.approve(other);
    await reviewer.supersede(other, "moved to the tenancy doc");
  });

  afterAll(async () => {
    await ledger?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  async function runIndex(extra: string[]): Promise<{ markdown: string; seq: number }> {
    return jsonLine(await cli(["index", ...extra, ...g()]));
  }

  it("history lists every event with actor, session, branch, worktree and reason", async () => {
    const ran = await cli(["history", memoryId, ...g()]);
    const history = jsonLine(ran);
    expect(history.entries.map((e: { type: string }) => e.type)).toEqual(["memory.proposed", "memory.approved", "memory.proposed", "memory.rejected"]);
    const [proposed, approved, , rejected] = history.entries;
    expect(proposed).toMatchObject({ version: 1, actor: { kind: "agent", id: "coder-1" }, sessionId: "sess-1", git: { branch: "fix/retries", worktree: "/w/1" } });
    expect(approved).toMatchObject({ version: 1, actor: { kind: "human", id: "alice" } });
    expect(rejected).toMatchObject({ version: 2, reason: "five is too many for Stripe's rate limits" });
    const text = await cli(["history", memoryId, "--prefix", ledger.prefix, "--app", ledger.app]);
    expect(lines(text.stdout)).toHaveLength(4);
    expect(text.stdout).toContain("branch fix/retries");
  });

  it("history as of a sequence shows the memory as it was then", async () => {
    const history = jsonLine(await cli(["history", memoryId, "--as-of-seq", String(seqAfterV1), ...g()]));
    expect(history.entries).toHaveLength(2);
    expect(history.versions.map((v: { version: number }) => v.version)).toEqual([1]);
    const then = jsonLine(await cli(["show", memoryId, "--as-of-seq", String(seqAfterV1), ...g()]));
    expect(then).toMatchObject({ status: "active", activeVersion: 1, seq: seqAfterV1 });
    expect(then.versions).toHaveLength(1);
    const now = jsonLine(await cli(["show", memoryId, ...g()]));
    expect(now.versions).toHaveLength(2);
    failed(await cli(["show", memoryId, "--as-of", "yesterday", "--prefix", ledger.prefix, "--app", ledger.app]), 2, "invalid");
    failed(await cli(["history", memoryId, "--as-of-seq", "0", "--prefix", ledger.prefix, "--app", ledger.app]), 2, "invalid");
    failed(await cli(["history", "no-such-memory", "--prefix", ledger.prefix, "--app", ledger.app]), 5, "not_found");
  });

  it("diff prints a unified diff of title, tags, paths and body", async () => {
    const ran = await cli(["diff", memoryId, "1", "2", "--prefix", ledger.prefix, "--app", ledger.app]);
    expect(ran.code, ran.stderr).toBe(0);
    expect(ran.stdout).toContain(`--- ${memoryId}@v1`);
    expect(ran.stdout).toContain(`+++ ${memoryId}@v2`);
    for (const line of ["-title: Retry webhooks three times", "+title: Retry webhooks five times", "-tags: payments", "+tags: payments, webhooks", "+paths: src/payments/webhook.ts, src/payments/queue.ts", "-Retries: 3.", "+Retries: 5."]) {
      expect(ran.stdout.split("\n")).toContain(line);
    }
    const same = jsonLine(await cli(["diff", memoryId, "1", "1", ...g()]));
    expect(same.changed).toBe(false);
    failed(await cli(["diff", memoryId, "1", "9", "--prefix", ledger.prefix, "--app", ledger.app]), 5, "not_found");
  });

  it("blame lists every version that named the path or a folder around it, newest first", async () => {
    const ran = await cli(["blame", "src/payments/webhook.ts", ...g()]);
    const found = lines(ran.stdout).map((l) => JSON.parse(l));
    expect(found.map((e: { memoryId: string; version: number }) => `${e.memoryId === memoryId ? "m" : "o"}${e.version}`)).toEqual(["o1", "m2", "m1"]);
    const folder = lines((await cli(["blame", "src/payments/queue.ts", ...g()])).stdout).map((l) => JSON.parse(l));
    expect(folder.map((e: { version: number }) => e.version)).toEqual([1, 2]);
    expect(lines((await cli(["blame", "src/billing", ...g()])).stdout)).toEqual([]);
  });

  it("index as of a sequence is the MEMORY.md of that moment, and now equals the live projection's", async () => {
    const then = await runIndex(["--as-of-seq", String(seqAfterV1)]);
    expect(then.markdown).toBe(indexAfterV1);
    expect(then.markdown).toContain("Retry webhooks three times");
    const now = await runIndex([]);
    expect(now.markdown).not.toContain("Queue names are per tenant");
    // The same fold the files projection runs: a rebuild renders the same MEMORY.md.
    const store = await EventStore.open(ledger.nc, naming(ledger.prefix));
    const root = join(dir, "files");
    const scope = { prefix: ledger.prefix, app: ledger.app, stream: store.names.appStream(ledger.app) };
    await rebuildProjections(store, [filesProjection({ root })], scope);
    expect(await readMemoryIndex(root, ledger.app)).toBe(now.markdown);
  });

  it("export then import into an empty app: same events in order, same ids, same rebuilt files", async () => {
    const file = join(dir, "ledger.jsonl");
    const exported = await cli(["export", "--out", file, "--prefix", ledger.prefix, "--app", ledger.app]);
    expect(exported.code, exported.stderr).toBe(0);
    const text = await readFile(file, "utf8");
    const [header, ...events] = lines(text).map((l) => JSON.parse(l));
    expect(header).toMatchObject({ format: "memledger-export", app: ledger.app, prefix: ledger.prefix });
    expect(events.map((e: { seq: number }) => e.seq)).toEqual(events.map((_: unknown, i: number) => i + 1));

    const imported = jsonLine(await cli(["import", file, "--prefix", ledger.prefix, "--app", "audit2", "--json"]));
    expect(imported).toMatchObject({ imported: events.length, skipped: 0, lastSeq: events.length });
    const log = lines((await cli(["log", "--prefix", ledger.prefix, "--app", "audit2", "--json"])).stdout).map((l) => JSON.parse(l));
    expect(log.map((e: { id: string }) => e.id)).toEqual(events.map((e: { event: { id: string } }) => e.event.id));

    const store = await EventStore.open(ledger.nc, naming(ledger.prefix));
    const rebuild = async (app: string) => {
      const root = join(dir, `files-${app}`);
      await rebuildProjections(store, [filesProjection({ root })], { prefix: ledger.prefix, app, stream: store.names.appStream(app) });
      return (await readMemoryIndex(root, app))!.replace(`Memory index: ${app}`, "Memory index: APP");
    };
    expect(await rebuild("audit2")).toBe(await rebuild(ledger.app));

    // The imported ledger is chained anew under its new app, and verifies.
    const verified = await cli(["verify", "--prefix", ledger.prefix, "--app", "audit2", "--json"]);
    expect(verified.code, verified.stderr).toBe(0);
    expect(JSON.parse(verified.stdout)).toMatchObject({ messages: events.length, chained: events.length, problems: [] });

    // Importing again is refused: the app is no longer empty, and nothing is appended.
    const again = await cli(["import", file, "--prefix", ledger.prefix, "--app", "audit2"]);
    failed(again, 3, "conflict");
    expect(await store.lastSeq(store.names.appStream("audit2"))).toBe(events.length);
    // A file that is not an export changes nothing either.
    failed(await cli(["import", "-", "--prefix", ledger.prefix, "--app", "audit3"], { input: '{"hello":1}\n' }), 2, "invalid");
    expect(treeHash).toBeTypeOf("function");

    // Junk published on a stream subject (publishing is not denied, only deletes are) fails verify: exit 1.
    await ledger.nc.request(store.names.aggregate("audit2", "memory", "junk"), new TextEncoder().encode("junk"));
    const tampered = await cli(["verify", "--prefix", ledger.prefix, "--app", "audit2"]);
    expect(tampered.code).toBe(1);
    expect(tampered.stdout).toContain("not_an_event");
    expect(tampered.stderr).toMatch(/verify found 1 problems/);
  });
});
