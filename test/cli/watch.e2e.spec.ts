import { spawn } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MemoryClient } from "../../services/client.js";
import { startLedger, type Ledger } from "../support/env.js";
import { eventually } from "../support/eventually.js";
import { CLI, cleanEnv, cli, lines } from "./support.js";

/** `memledger watch`: events as they land, read from the log, filtered by type. */

let ledger: Ledger;
let agent: MemoryClient;
let alice: MemoryClient;

beforeAll(async () => {
  ledger = await startLedger({ app: "watched" });
  agent = ledger.client("coder-1");
  alice = ledger.client("human:alice");
});

afterAll(async () => {
  await ledger?.cleanup();
});

const globals = () => ["--app", "watched", "--prefix", ledger.prefix];

/** A running watcher, resolved once it reports its consumer exists (nothing landing after is missed). */
async function watcher(args: string[]) {
  const child = spawn(process.execPath, [CLI, ...globals(), "watch", ...args], { env: cleanEnv(), stdio: ["ignore", "pipe", "pipe"] });
  const out = { stdout: "", stderr: "" };
  child.stdout!.setEncoding("utf8").on("data", (s: string) => (out.stdout += s));
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (out.stderr += s));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  await eventually("the watcher is watching", () => (out.stderr.includes("watching") ? true : undefined), 30_000);
  return { child, out, exited };
}

describe("memledger watch", () => {
  it("prints memory, claim and promotion events as they land, skipping sessions by default, as JSON lines", async () => {
    // An event from before the watcher started: not shown (it starts at the stream's end).
    await agent.propose({ title: "Before the watch", body: "Old news." });
    const watch = await watcher(["--json", "--count", "4"]);

    await agent.startSession({ task: "not a signal" });
    const fragile = await agent.propose({ title: "Webhook retries are fragile", body: "Never retry a 4xx.", kind: "fragile", paths: ["src/webhook.ts"] });
    await alice.approve(fragile.memoryId);
    await agent.claim("webhooks");
    await agent.promote(fragile.memoryId);

    expect(await watch.exited).toBe(0);
    const events = lines(watch.out.stdout).map((l) => JSON.parse(l));
    expect(events.map((e) => e.type)).toEqual(["memory.proposed", "memory.approved", "claim.claimed", "memory.promotion_requested"]);
    expect(events[0]).toMatchObject({ aggregateId: fragile.memoryId, seq: fragile.seq, data: { kind: "fragile", title: "Webhook retries are fragile" }, actor: { kind: "agent", id: "coder-1" } });
    expect(events[2].data).toMatchObject({ kind: "task", name: "webhooks", holder: "coder-1" });
  }, 60_000);

  it("--types and --since-seq: only the families asked for, from a sequence of the past; human lines name the signal", async () => {
    const watch = await watcher(["--types", "claim,memory.approved", "--since-seq", "1", "--count", "2"]);
    expect(await watch.exited).toBe(0);
    const out = lines(watch.out.stdout);
    expect(out).toHaveLength(2);
    expect(out[0]).toMatch(/memory\.approved .* approved: new memory available$/);
    expect(out[1]).toMatch(/claim\.claimed .* task webhooks claimed by coder-1 until /);

    const fragileLine = await watcher(["--types", "memory.proposed", "--since-seq", "1", "--count", "2"]);
    expect(await fragileLine.exited).toBe(0);
    expect(lines(fragileLine.out.stdout)[1]).toContain('FRAGILE src/webhook.ts: v1 "Webhook retries are fragile" proposed [fragile, app]');
  }, 60_000);

  it("stops on SIGTERM with status 0, and refuses a malformed --types before connecting", async () => {
    const watch = await watcher([]);
    watch.child.kill("SIGTERM");
    expect(await watch.exited).toBe(0);

    const bad = await cli([...globals(), "watch", "--types", "memory.*"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^memledger: invalid: --types: 'memory\.\*' is not an event type or family/);
  }, 30_000);
});
