import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ProjectionSupervisor } from "../../services/projection-supervisor.js";
import { openReadModels, readModelConfig } from "../../services/read-models.js";
import { StandInEmbeddingServer } from "../embeddings/support.js";
import { NATS_URL, startLedger, type Ledger } from "../support/env.js";
import { EventLog } from "./events.js";

const CLI = resolve(import.meta.dirname, "../../dist/services/cli/main.js");

function cli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const base: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith("MEMLEDGER_") && key !== "QDRANT_URL") base[key] = value;
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...base, NATS_URL, ...env } });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
  child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  child.stdin.end();
  return new Promise((done, fail) => {
    child.on("error", fail);
    child.on("close", (code) => done({ code, stdout, stderr }));
  });
}

const jsonLines = (ran: { code: number | null; stdout: string; stderr: string }) => {
  expect(ran.code, ran.stderr).toBe(0);
  return ran.stdout.trim().split("\n").map((line) => JSON.parse(line));
};

/**
 * `memledger search` as a user runs it: the projections ran in-process as `up` runs them (search with
 * vectors, embedder from the environment behind the prefix's KV cache), then the CLI loads the app's and
 * the org's snapshots, catches up from the streams and retrieves. The model is an OpenAI-compatible
 * embeddings server on loopback returning hash vectors (a stand-in for the model, not for NATS).
 */
describe("memledger search", () => {
  let ledger: Ledger;
  let server: StandInEmbeddingServer;
  let root: string;
  let env: Record<string, string>;
  const orgEvents = new EventLog("org");

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error("dist/ is missing: run `npm run build` (npm test does)");
    ledger = await startLedger();
    server = await StandInEmbeddingServer.start(16);
    root = await mkdtemp(join(tmpdir(), "memledger-cli-search-"));
    env = {
      MEMLEDGER_DATA: root,
      MEMLEDGER_EMBEDDER: "openai",
      MEMLEDGER_EMBED_URL: server.baseUrl,
      MEMLEDGER_EMBED_MODEL: "stand-in",
      MEMLEDGER_VECTORS: "orama",
    };

    const alice = ledger.client("alice");
    const reviewer = ledger.client("human:rita");
    for (let i = 0; i < 30; i++) {
      const { memoryId } = await alice.propose({ title: `Stripe webhook handler note ${i}`, body: `The Stripe webhook handler retries deliveries (${i}).` });
      await reviewer.approve(memoryId);
    }
    const target = await alice.propose({ title: "StripeWebhookHandler race condition", body: "Two deliveries can run at once in StripeWebhookHandler." });
    await reviewer.approve(target.memoryId);
    const gone = await alice.propose({ title: "Zeppelin parking", body: "Zeppelins park on the roof." });
    await reviewer.approve(gone.memoryId);
    await reviewer.supersede(gone.memoryId, "no more zeppelins");

    // An org memory, written to the org stream as the curator would.
    const store = ledger.service.store;
    await store.ensureOrgStream();
    orgEvents.write("orgwebhooks", { title: "Org policy: webhook signatures", body: "Every service verifies webhook signatures before parsing.", scope: "org" });
    let last = 0;
    for (const { event } of orgEvents.events) last = (await store.append(store.names.orgMemory(event.aggregateId), event, last)).seq;

    // `up`'s projections, until both streams are projected; stopping them writes the snapshots.
    const models = openReadModels(ledger.prefix, readModelConfig(env), { nc: ledger.nc });
    const supervisor = new ProjectionSupervisor(store, [models.search], { batchSize: 10 });
    await supervisor.start();
    expect(await supervisor.waitFor(ledger.app, await store.lastSeq(store.names.appStream(ledger.app)))).toBe(true);
    expect(await supervisor.waitFor("org", await store.lastSeq(store.names.orgStream()))).toBe(true);
    await supervisor.stop();
    await models.close();
  });

  afterAll(async () => {
    // cleanup deletes every stream of the prefix, the KV buckets (embeddings, projection status) included.
    await ledger?.cleanup();
    await server?.stop();
    await rm(root, { recursive: true, force: true });
  });

  const search = (query: string, ...flags: string[]) => cli(["--prefix", ledger.prefix, "--app", ledger.app, "search", query, ...flags], env);

  test("hybrid --explain --json: the identifier first, each channel's rank and score, org memories marked org, nothing re-embedded", async () => {
    const before = server.requests.length;
    const hits = jsonLines(await search("StripeWebhookHandler", "--explain", "--json", "--k", "5"));
    expect(hits).toHaveLength(5);
    expect(hits[0].title).toBe("StripeWebhookHandler race condition");
    expect(hits[0].rank).toBe(1);
    expect(hits[0].channels.bm25).toEqual({ rank: 1, score: expect.any(Number) });
    expect(hits.some((hit: { channels: { vector?: unknown } }) => hit.channels.vector)).toBe(true);
    expect(hits[0].fused).toBeGreaterThan(0);
    // The CLI loaded the vectors saved with the snapshot: the only text it sent to the model is the query.
    const sent = server.requests.slice(before).flatMap((request) => request.body.input ?? []);
    expect(sent).toEqual(["StripeWebhookHandler"]);

    const org = jsonLines(await search("webhook signatures policy", "--json", "--mode", "hybrid"));
    const orgHit = org.find((hit: { origin: string }) => hit.origin === "org");
    expect(orgHit?.title).toBe("Org policy: webhook signatures");
    expect(org.filter((hit: { origin: string }) => hit.origin === "app").length).toBeGreaterThan(0);
  });

  test("--mode vector and bm25; the superseded memory is in neither; text output with --explain", async () => {
    const vector = jsonLines(await search("Zeppelins park on the roof.", "--json", "--mode", "vector"));
    expect(vector.every((hit: { title: string; channels: object }) => hit.title !== "Zeppelin parking" && !("bm25" in hit.channels))).toBe(true);
    const before = server.requests.length;
    const bm25 = await search("zeppelin", "--mode", "bm25");
    expect(bm25.code, bm25.stderr).toBe(0);
    expect(bm25.stdout.trim()).toBe("no matching memory");
    expect(server.requests.length).toBe(before);

    const text = await search("StripeWebhookHandler", "--explain", "--k", "3");
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^ 1\. StripeWebhookHandler race condition .*score/m);
    expect(text.stdout).toMatch(/^ {4}bm25 #1 \(\d+\.\d+\) {2}vector (#\d+ \(-?\d\.\d+\)|-) {2}fused 0\.\d+/m);
    const bad = await search("x", "--mode", "fuzzy");
    expect(bad.code).toBe(2);
  });
});
