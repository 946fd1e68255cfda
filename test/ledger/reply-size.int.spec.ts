import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { naming } from "../../events/subjects.js";
import type { ReviewResult, RunView } from "../../services/dream/review.js";
import { MemoryClient, type LogEntry } from "../../services/client.js";
import { CommandService } from "../../services/command-service.js";
import { runDream } from "../../services/dream/runner.js";
import { EventStore } from "../../services/event-store.js";
import { connectNats, maxPayloadOf } from "../../services/nats.js";
import { UiLedger } from "../../services/ui/ledger.js";
import { deleteStreams, streamMessageCount, uniquePrefix } from "../support/env.js";
import { startNatsServer, type NatsServer } from "../support/servers.js";
import { cli, jsonLine } from "../cli/support.js";
import { prunePhase } from "../dream/dream-support.js";
import type { NatsConnection } from "@nats-io/transport-node";

/**
 * A reply is one NATS message, and a server refuses a message larger than its max_payload: the service
 * cannot send such a reply, and the requester used to see only its request time out. On a server of
 * its own with a small max_payload (32 KiB; the default is 1 MiB, which 10,000 log entries of ~600 bytes
 * exceed six times over), the log is read in pages that fit, and a reply that cannot fit is a typed error
 * at once.
 */
const MAX_PAYLOAD = 32 * 1024;
const APP = "replies";

describe("replies larger than the server's max_payload", () => {
  let server: NatsServer;
  let nc: NatsConnection;
  let service: CommandService;
  let prefix: string;
  const errors: unknown[] = [];
  const agent = () => new MemoryClient(nc, { app: APP, as: "agent-a", prefix });
  const human = () => new MemoryClient(nc, { app: APP, as: "human:alice", prefix });
  const stream = () => `${prefix}_app_${APP}`;

  beforeAll(async () => {
    server = await startNatsServer({ config: `max_payload: ${MAX_PAYLOAD}` });
    prefix = uniquePrefix("reply");
    nc = await connectNats({ servers: server.url });
    expect(maxPayloadOf(nc)).toBe(MAX_PAYLOAD);
    service = await CommandService.start(nc, { prefix, onError: (err) => errors.push(err) });
  }, 30_000);

  afterAll(async () => {
    await service?.stop();
    if (nc) await deleteStreams(nc, prefix);
    await nc?.close();
    await server?.stop();
  });

  it("the log is read whole, in pages that each fit, through the SDK, the CLI and the review page", async () => {
    const client = agent();
    const body = (i: number) => `Memory ${i}: ${"a fact worth keeping ".repeat(50)}`;
    for (let i = 0; i < 120; i += 20) await Promise.all(Array.from({ length: 20 }, (_, j) => client.propose({ title: `Memory ${i + j}`, body: body(i + j) })));
    const total = await streamMessageCount(nc, stream());
    expect(total).toBe(120);

    // One request answers with what fits, and no more.
    const page = await client.request<"log", LogEntry[]>("log", { limit: 1000 });
    expect(page.length).toBeGreaterThan(0);
    expect(page.length).toBeLessThan(120);
    expect(Buffer.byteLength(JSON.stringify({ ok: true, result: page }))).toBeLessThanOrEqual(MAX_PAYLOAD);

    // log() asks again from where each page ended: every event once, in order.
    const all = await client.log({ limit: 1000 });
    expect(all.map((e) => e.seq)).toEqual(Array.from({ length: 120 }, (_, i) => i + 1));
    const some = await client.log({ sinceSeq: 11, limit: 50 });
    expect(some.map((e) => e.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 11));

    // The CLI prints them all.
    const printed = await cli(["--nats", server.url, "--prefix", prefix, "--app", APP, "--as", "agent-a", "--json", "log", "--limit", "1000"]);
    expect(printed.code, printed.stderr).toBe(0);
    expect(printed.stdout.trim().split("\n").map((line) => (JSON.parse(line) as LogEntry).seq)).toEqual(all.map((e) => e.seq));

    // The review page's queue lists every pending proposal (it reads the log 10,000 entries at a time).
    const page2 = new UiLedger(nc, await EventStore.open(nc, naming(prefix)), { kind: "human", id: "alice" }, prefix);
    expect((await page2.queue(APP, 1000)).total).toBe(120);
  }, 60_000);

  it("a read whose one answer cannot fit is refused at once as invalid, naming max_payload, and nothing changes", async () => {
    const client = agent();
    // Three versions of 12 KiB each: one history is larger than 32 KiB, and cannot be cut.
    const big = "x".repeat(12 * 1024);
    let { memoryId, seq } = await client.propose({ title: "Large memory", body: `v1 ${big}` });
    for (const v of [2, 3]) ({ seq } = await client.propose({ memoryId, expectedSeq: seq, title: "Large memory", body: `v${v} ${big}` }));
    const before = await streamMessageCount(nc, stream());
    const started = Date.now();
    const refused = await client.history(memoryId).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(Date.now() - started).toBeLessThan(3000); // the request timeout is 10 s: this was answered
    expect(refused).toMatchObject({ code: "invalid", details: { verb: "history", maxPayload: MAX_PAYLOAD } });
    expect((refused as Error).message).toMatch(/max_payload/);
    expect(await streamMessageCount(nc, stream())).toBe(before);
  });

  it("a write whose reply cannot fit is applied and says so (internal: read it back), and reading it back shows it applied; the run is shown in pages", async () => {
    const writer = agent();
    const reviewer = human();
    const from = (await streamMessageCount(nc, stream())) + 1;
    // A run with enough proposals that the accept's per-proposal reply is larger than 32 KiB.
    for (let i = 0; i < 160; i += 20) {
      await Promise.all(
        Array.from({ length: 20 }, async (_, j) => {
          const proposed = await writer.propose({ title: `Stale ${i + j}`, body: "Run make build.", tags: ["stale"] });
          await reviewer.approve(proposed.memoryId);
        }),
      );
    }
    const store = await EventStore.open(nc, naming(prefix));
    const run = await runDream({ nc, store }, { app: APP, phases: [prunePhase], force: true });
    if (run.status !== "completed") throw new Error(`the run did not complete: ${run.status}`);

    const accepted = await reviewer.request<"dream_accept", ReviewResult>("dream_accept", { runId: run.runId }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(accepted).toMatchObject({ code: "internal", details: { verb: "dream_accept", maxPayload: MAX_PAYLOAD } });
    expect((accepted as Error).message).toMatch(/was applied/);
    const log = await reviewer.log({ sinceSeq: from, limit: 10_000 });
    expect(log.filter((e) => e.type === "proposal.applied")).toHaveLength(160);
    expect(log.filter((e) => e.type === "memory.superseded")).toHaveLength(160);
    // The operator's log has each oversize reply.
    expect(errors.map((e) => (e as { details?: { verb?: string } }).details?.verb)).toEqual(expect.arrayContaining(["history", "dream_accept"]));

    // dream_show of 160 proposals with their evidence does not fit in one reply: it comes in pages.
    const first = await reviewer.request<"dream_show", RunView>("dream_show", { runId: run.runId });
    expect(first.proposalsTotal).toBe(160);
    expect(first.proposals.length).toBeGreaterThan(0);
    expect(first.proposals.length).toBeLessThan(160);
    expect(first.proposalsNext).toBe(first.proposals.length);
    const second = await reviewer.request<"dream_show", RunView>("dream_show", { runId: run.runId, from: first.proposalsNext! });
    expect(second.proposals[0]!.proposalId).not.toBe(first.proposals.at(-1)!.proposalId);
    const beyond = await reviewer.request<"dream_show", RunView>("dream_show", { runId: run.runId, from: 160 });
    expect(beyond).toMatchObject({ proposals: [], proposalsTotal: 160, proposalsNext: null });
    // The SDK and the CLI read every page: all 160, each once, in the run's order, every one applied.
    const whole = await reviewer.dreamShow(run.runId);
    expect(whole.proposalsNext).toBeNull();
    expect(whole.proposals).toHaveLength(160);
    expect(new Set(whole.proposals.map((p) => p.proposalId)).size).toBe(160);
    expect(whole.proposals.slice(0, first.proposals.length)).toEqual(first.proposals);
    expect(whole.proposals.every((p) => p.status === "applied")).toBe(true);
    const printed = jsonLine(await cli(["--nats", server.url, "--prefix", prefix, "--app", APP, "--as", "human:alice", "--json", "dream", "show", run.runId]));
    expect(printed.proposals.map((p: { proposalId: string }) => p.proposalId)).toEqual(whole.proposals.map((p) => p.proposalId));
    // No page was too large to send.
    expect(errors.map((e) => (e as { details?: { verb?: string } }).details?.verb)).not.toContain("dream_show");
  }, 90_000);
});
