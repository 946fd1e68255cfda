import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemoryClient } from "../../services/client.js";
import { readModelConfig } from "../../services/read-models.js";
import { defaultComponents, startMemledger, type Memledger } from "../../services/runtime.js";
import { parsePolicy } from "../../services/auth/load.js";
import { NATS_URL, deleteRedisKeys, deleteStreams, streamMessageCount, uniquePrefix } from "../support/env.js";
import { eventually } from "../support/eventually.js";
import { CLI, cleanEnv } from "../cli/support.js";
import { naming } from "../../events/subjects.js";
import { EventStore } from "../../services/event-store.js";
import { runDream } from "../../services/dream/runner.js";
import { approvedMemory, prunePhase } from "../dream/dream-support.js";

/**
 * The MCP server as an agent meets it: `memledger mcp` as a child process, driven by the MCP SDK's own
 * client over stdio and over streamable HTTP, against a running ledger (in this process) on a private prefix.
 */

const APP = "mcpapp";
const POLICY = parsePolicy({
  version: 1,
  roles: {
    agent: {
      allow: [
        { verbs: ["*"], scopes: ["agent:self"], autoApprove: true },
        { verbs: ["propose", "read"], scopes: ["team:*", "app", "org"] },
      ],
    },
    reviewer: { allow: [{ verbs: ["*"], scopes: ["*"] }] },
  },
  actors: { "agent:*": { roles: ["agent"] }, "human:alice": { roles: ["reviewer"] } },
});

type ToolResult = { content: { type: string; text: string }[]; structuredContent?: any; isError?: boolean };

let prefix: string;
let dir: string;
let ledger: Memledger;
let alice: MemoryClient;

beforeAll(async () => {
  prefix = uniquePrefix("mcp");
  dir = await mkdtemp(path.join(tmpdir(), "memledger-mcp-"));
  const readModels = readModelConfig({}, { filesRoot: path.join(dir, "files"), searchDir: path.join(dir, "search"), vectors: null });
  ledger = await startMemledger({
    servers: NATS_URL,
    prefix,
    policy: POLICY,
    components: defaultComponents({ readModels, curator: false }),
  });
  alice = new MemoryClient(ledger.nc, { app: APP, as: "human:alice", prefix });
}, 60_000);

afterAll(async () => {
  await ledger?.stop();
  const { connectNats } = await import("../../services/nats.js");
  const nc = await connectNats({ servers: NATS_URL });
  await deleteStreams(nc, prefix);
  await nc.close();
  await deleteRedisKeys(prefix);
  await rm(dir, { recursive: true, force: true });
});

const mcpArgs = (as = "coder-1") => ["mcp", "--app", APP, "--prefix", prefix, "--as", as, "--files", path.join(dir, "files")];

/** An MCP client over stdio to `memledger mcp --as <as>`; closed (and its child stopped) by `close`. */
async function stdioClient(as: string): Promise<Client> {
  const transport = new StdioClientTransport({ command: process.execPath, args: [CLI, ...mcpArgs(as)], env: cleanEnv() as Record<string, string>, stderr: "pipe" });
  const client = new Client({ name: "memledger-test", version: "1.0.0" });
  await client.connect(transport);
  return client;
}

async function call(client: Client, name: string, args: Record<string, unknown>): Promise<ToolResult> {
  return (await client.callTool({ name, arguments: args })) as ToolResult;
}

/** The conversation every transport must carry the same way. */
async function exercise(client: Client, label: string): Promise<void> {
  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name);
  for (const name of ["hydrate", "search", "get", "history", "propose", "approve", "reject", "supersede", "rollback", "claim", "renew", "release", "promote", "session_start", "session_end"]) {
    expect(names).toContain(name);
  }
  const propose = tools.find((t) => t.name === "propose")!;
  // Derived from the command schema: its fields and its strictness, and never an actor argument.
  expect(propose.inputSchema.properties).toHaveProperty("title");
  expect(propose.inputSchema.properties).toHaveProperty("expectedSeq");
  expect(propose.inputSchema.properties).not.toHaveProperty("actor");
  expect(propose.inputSchema.required).toEqual(expect.arrayContaining(["title", "body"]));
  expect(tools.find((t) => t.name === "session_end")!.inputSchema.properties).toHaveProperty("transcriptPath");

  // propose -> get -> approve (by a reviewer: the agent may only propose in the app scope)
  const proposed = await call(client, "propose", { title: `Webhooks retry with backoff (${label})`, body: "Stripe webhooks are retried with exponential backoff.", kind: "convention", tags: ["payments"] });
  expect(proposed.isError, proposed.content[0]?.text).toBeFalsy();
  const { memoryId, seq } = proposed.structuredContent as { memoryId: string; seq: number };
  expect(JSON.parse(proposed.content[0]!.text)).toMatchObject({ memoryId, version: 1 });

  const got = await call(client, "get", { memoryId });
  expect(got.structuredContent).toMatchObject({ memoryId, status: "proposed", seq, versions: [{ title: `Webhooks retry with backoff (${label})` }] });

  // forbidden: the policy lets an agent propose in the app scope, not approve; the code travels in the result
  const stream = `${prefix}_app_${APP}`;
  const before = await streamMessageCount(ledger.nc, stream);
  const refused = await call(client, "approve", { memoryId });
  expect(refused.isError).toBe(true);
  expect(refused.structuredContent.error.code).toBe("forbidden");
  expect(refused.content[0]!.text).toMatch(/^forbidden: /);
  expect(await streamMessageCount(ledger.nc, stream)).toBe(before);

  const approved = await alice.approve(memoryId, { expectedSeq: seq });

  // stale expectedSeq: the conflict AND the memory as it is now, so the agent can re-read and retry
  const stale = await call(client, "propose", { memoryId, expectedSeq: seq, title: "Webhooks retry (stale)", body: "Written against an old read." });
  expect(stale.isError).toBe(true);
  expect(stale.structuredContent.error.code).toBe("conflict");
  expect(stale.structuredContent.current).toMatchObject({ memoryId, seq: approved.seq, activeVersion: 1, status: "active" });
  expect(stale.content[0]!.text).toMatch(/^conflict: /);
  expect(stale.content[0]!.text).toContain(`retry with expectedSeq ${approved.seq}`);
  expect(await streamMessageCount(ledger.nc, stream)).toBe(before + 1);
  const retried = await call(client, "propose", { memoryId, expectedSeq: approved.seq, title: "Webhooks retry with backoff, capped", body: "At most 5 attempts." });
  expect(retried.structuredContent).toMatchObject({ memoryId, version: 2 });

  // history: the memory's events from the log, with who did each (the command service's history verb)
  const history = await call(client, "history", { memoryId });
  expect(history.isError, history.content[0]?.text).toBeFalsy();
  expect(history.structuredContent.entries.map((e: { type: string; actor: { id: string } }) => `${e.type} ${e.actor.id}`)).toEqual([
    "memory.proposed coder-1",
    "memory.approved alice",
    "memory.proposed coder-1",
  ]);
  // ... under the read policy, as get: another agent's scratchpad is not readable to coder-1
  const other = new MemoryClient(ledger.nc, { app: APP, as: "coder-2", prefix });
  const secret = await other.propose({ title: `Scratch note (${label})`, body: "mine", scope: "agent:coder-2" });
  const hidden = await call(client, "history", { memoryId: secret.memoryId });
  expect(hidden.isError).toBe(true);
  expect(hidden.structuredContent.error.code).toBe("forbidden");

  // search: the live index of the ledger, read-your-writes through the SDK client's minSeq
  const found = await call(client, "search", { query: "exponential backoff webhooks", limit: 5 });
  expect(found.isError, found.content[0]?.text).toBeFalsy();
  expect(found.structuredContent.results.map((hit: { memoryId: string }) => hit.memoryId)).toContain(memoryId);

  // invalid input carries `invalid`, checked against the same schema, and nothing is sent
  const beforeInvalid = await streamMessageCount(ledger.nc, stream);
  const bad = await call(client, "propose", { title: "two\nlines", body: "x" });
  expect(bad.isError).toBe(true);
  expect(bad.structuredContent.error.code).toBe("invalid");
  expect(bad.content[0]!.text).toMatch(/^invalid: propose: title: /);
  const impersonating = await call(client, "propose", { title: "As someone else", body: "x", actor: { kind: "human", id: "alice" } });
  expect(impersonating.structuredContent.error.code).toBe("invalid");
  expect(impersonating.content[0]!.text).toMatch(/actor is not an argument/);
  const missing = await call(client, "get", { memoryId: "no-such-memory" });
  expect(missing.structuredContent.error.code).toBe("not_found");
  expect(await streamMessageCount(ledger.nc, stream)).toBe(beforeInvalid);

  // the server acts as its configured identity
  const log = await alice.log({ memoryId });
  expect(log.filter((e) => e.type === "memory.proposed").map((e) => `${e.actor.kind}:${e.actor.id}`)).toEqual(["agent:coder-1", "agent:coder-1"]);

  // MEMORY.md and the memory's file, from the files projection
  const index = await eventually("MEMORY.md lists the approved memory", async () => {
    const read = await client.readResource({ uri: `memledger://${APP}/MEMORY.md` }).catch(() => undefined);
    const text = (read?.contents[0] as { text?: string } | undefined)?.text;
    return text?.includes(memoryId) ? text : undefined;
  });
  expect(index).toContain(`Webhooks retry with backoff (${label})`);
  const { resources } = await client.listResources();
  const file = resources.find((r) => r.uri.includes(`/memories/`) && r.uri.endsWith(`${memoryId}.md`));
  expect(file, JSON.stringify(resources)).toBeDefined();
  const body = await client.readResource({ uri: file!.uri });
  expect((body.contents[0] as { text: string }).text).toContain("exponential backoff");
  await expect(client.readResource({ uri: `memledger://${APP}/memories/../../etc/passwd.md` })).rejects.toThrow(/invalid|not_found/);

  // hydrate: the pack's markdown is the text the model reads
  const pack = await call(client, "hydrate", { task: "webhook retries", budget: 2000 });
  expect(pack.isError, pack.content[0]?.text).toBeFalsy();
  expect(pack.content[0]!.text).toBe(pack.structuredContent.markdown);
  expect(pack.structuredContent.tokens).toBeLessThanOrEqual(2000);

  // a session whose end stores the transcript the tool names, by digest
  const transcript = path.join(dir, `transcript-${label}.jsonl`);
  const transcriptText = `{"type":"user","text":"fix the webhooks (${label})"}\n`;
  await writeFile(transcript, transcriptText);
  const started = await call(client, "session_start", { task: "fix webhooks", branch: "fix/webhooks" });
  const { sessionId } = started.structuredContent as { sessionId: string };
  const ended = await call(client, "session_end", { sessionId, summary: "done", transcriptPath: transcript });
  expect(ended.isError, ended.content[0]?.text).toBeFalsy();
  const digest = `sha256:${createHash("sha256").update(transcriptText).digest("hex")}`;
  const session = await alice.showSession(sessionId);
  expect(session).toMatchObject({ agentId: "coder-1", summary: "done", transcript: { digest, bytes: Buffer.byteLength(transcriptText) } });
}

describe("memledger mcp over stdio", () => {
  it("lists tools, proposes, reads, refuses with codes, returns the current version on conflict, serves MEMORY.md", async () => {
    const client = await stdioClient("coder-1");
    try {
      await exercise(client, "stdio");
    } finally {
      await client.close();
    }
  }, 90_000);

  it("consolidation tools: an agent lists and reads runs but may not decide; a human accepts, is refused on a second accept, and reverts", async () => {
    const stream = `${prefix}_app_${APP}`;
    const staleId = await approvedMemory(alice, "Build with make (dream)", "Run make build.", ["stale"]);
    const store = await EventStore.open(ledger.nc, naming(prefix));
    const run = await runDream({ nc: ledger.nc, store }, { app: APP, phases: [prunePhase], force: true });
    if (run.status !== "completed") throw new Error(`the run did not complete: ${run.status}`);

    const agent = await stdioClient("coder-1");
    const human = await stdioClient("human:alice");
    try {
      const { tools } = await agent.listTools();
      for (const name of ["dream_list", "dream_show", "dream_accept", "dream_reject", "dream_revert"]) expect(tools.map((t) => t.name)).toContain(name);
      const accept = tools.find((t) => t.name === "dream_accept")!;
      expect(accept.inputSchema.properties).toHaveProperty("runId");
      expect(accept.inputSchema.properties).toHaveProperty("proposalIds");
      expect(accept.inputSchema.properties).not.toHaveProperty("actor");
      expect(accept.inputSchema.required).toEqual(["runId"]);

      // Reads: the run, and its one proposal with its change and evidence.
      const listed = await call(agent, "dream_list", {});
      expect(listed.isError, listed.content[0]?.text).toBeFalsy();
      expect(listed.structuredContent.results).toEqual(expect.arrayContaining([expect.objectContaining({ runId: run.runId, status: "completed" })]));
      const shown = await call(agent, "dream_show", { runId: run.runId });
      expect(shown.isError, shown.content[0]?.text).toBeFalsy();
      const proposals = shown.structuredContent.proposals as { proposalId: string; phase: string; status: string; change: { action: string; memory: { memoryId: string } }; evidence: { summary: string } }[];
      expect(proposals.map((p) => [p.phase, p.status, p.change.action, p.change.memory.memoryId, p.evidence.summary])).toEqual([["prune", "pending", "supersede", staleId, "tagged stale"]]);
      const [proposal] = proposals;
      // Pages: the whole run fits, so there is no next page; past the last proposal, an empty one.
      expect(shown.structuredContent).toMatchObject({ proposalsTotal: 1, proposalsNext: null });
      expect((await call(agent, "dream_show", { runId: run.runId, from: 1 })).structuredContent).toMatchObject({ proposals: [], proposalsTotal: 1, proposalsNext: null });

      // Bad input and an unknown run: typed errors, nothing appended.
      const before = await streamMessageCount(ledger.nc, stream);
      expect((await call(agent, "dream_show", { runId: "" })).structuredContent.error.code).toBe("invalid");
      expect((await call(agent, "dream_show", { runId: "no-such-run" })).structuredContent.error.code).toBe("not_found");
      expect((await call(agent, "dream_show", { runId: run.runId, from: -1 })).structuredContent.error.code).toBe("invalid");
      expect((await call(human, "dream_reject", { runId: run.runId })).structuredContent.error.code).toBe("invalid"); // a reason is required

      // Deciding is the policy's `dream` verb: the agent is refused and nothing is appended.
      const refused = await call(agent, "dream_accept", { runId: run.runId });
      expect(refused.isError).toBe(true);
      expect(refused.structuredContent.error.code).toBe("forbidden");
      expect(await streamMessageCount(ledger.nc, stream)).toBe(before);
      expect((await alice.show(staleId)).status).toBe("active");

      // The human accepts: the proposal is applied, the memory superseded.
      const accepted = await call(human, "dream_accept", { runId: run.runId, proposalIds: [proposal!.proposalId], reason: "obsolete" });
      expect(accepted.isError, accepted.content[0]?.text).toBeFalsy();
      expect(accepted.structuredContent.results).toMatchObject([{ proposalId: proposal!.proposalId, outcome: "applied" }]);
      expect((await alice.show(staleId)).status).toBe("superseded");

      // Accepting it again is refused item by item: an error result that still holds every outcome, nothing appended.
      const afterAccept = await streamMessageCount(ledger.nc, stream);
      const again = await call(human, "dream_accept", { runId: run.runId, proposalIds: [proposal!.proposalId] });
      expect(again.isError).toBe(true);
      expect(again.structuredContent.error.code).toBe("conflict");
      expect(again.structuredContent.results).toMatchObject([{ proposalId: proposal!.proposalId, outcome: "refused", error: { details: { reason: "already_decided" } } }]);
      expect(again.content[0]!.text).toMatch(/^conflict: proposal /);
      expect(await streamMessageCount(ledger.nc, stream)).toBe(afterAccept);

      // The run is reverted as one batch: the memory is active again.
      const reverted = await call(human, "dream_revert", { runId: run.runId, reason: "too eager" });
      expect(reverted.isError, reverted.content[0]?.text).toBeFalsy();
      expect(reverted.structuredContent.results).toMatchObject([{ proposalId: proposal!.proposalId, outcome: "reverted" }]);
      expect((await alice.show(staleId)).status).toBe("active");
    } finally {
      await agent.close();
      await human.close();
    }
  }, 90_000);
});

describe("memledger mcp --http", () => {
  let child: ChildProcess | undefined;
  afterAll(() => {
    child?.kill("SIGTERM");
  });

  it("serves the same tools over streamable HTTP on 127.0.0.1, and refuses a foreign Host", async () => {
    child = spawn(process.execPath, [CLI, ...mcpArgs(), "--http", "0"], { env: cleanEnv(), stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr!.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    const ready = await new Promise<{ url: string }>((resolve, reject) => {
      let out = "";
      child!.stdout!.setEncoding("utf8").on("data", (s: string) => {
        out += s;
        const line = out.split("\n").find((l) => l.includes('"ready"'));
        if (line) resolve(JSON.parse(line));
      });
      child!.once("exit", (code) => reject(new Error(`mcp --http exited ${code}: ${stderr}`)));
    });
    expect(ready.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/mcp$/);

    const client = new Client({ name: "memledger-test", version: "1.0.0" });
    await client.connect(new StreamableHTTPClientTransport(new URL(ready.url)));
    try {
      await exercise(client, "http");
    } finally {
      await client.close();
    }

    // DNS rebinding: a request naming another host is refused before any tool runs.
    // (node:http: fetch may not set Host.)
    const status = await new Promise<number | undefined>((resolve, reject) => {
      const req = request(ready.url, {
        method: "POST",
        headers: { host: "evil.example", "content-type": "application/json", accept: "application/json, text/event-stream" },
      });
      req.on("response", (res) => {
        res.resume();
        resolve(res.statusCode);
      });
      req.on("error", reject);
      req.end(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list", params: {} }));
    });
    expect(status).toBe(403);

    const exited = new Promise((resolve) => child!.once("exit", (code, signal) => resolve({ code, signal })));
    child.kill("SIGTERM");
    expect(await exited).toEqual({ code: 0, signal: null });
  }, 90_000);
});
