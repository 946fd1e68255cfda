import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { envelopes } from "../../testing/index.js";
import { ProposalMade, type LedgerEvent } from "../../schemas/events.js";
import { MemledgerError } from "../../schemas/errors.js";
import { DEFAULT_DREAM_SETTINGS, type DreamSettings, type PhaseContext, type SessionTranscript } from "../../services/dream/phase.js";
import { foldDreamView } from "../../services/dream/view.js";
import { LlmAnalyser, SUB_ANALYSIS_PROMPT, SYNTHESIS_PROMPT, llmSettingsFromEnv } from "../../services/dream/analysers/llm.js";
import { learnPhase } from "../../services/dream/phases/learn.js";
import { transcriptRefOf } from "../../services/transcripts.js";

/**
 * The LLM analyser against a real HTTP server on a free loopback port that speaks OpenAI's
 * POST /v1/chat/completions with fixed answers (an external service, not a mock of memledger's code).
 * The server holds sub-analysis answers briefly so concurrent requests overlap, and records what it was
 * sent: the sub-analyses run in parallel (bounded), the synthesis only after all of them, the guidance
 * file is in every system prompt, the key only in the header; the drafts rest on the sessions and line
 * spans the answers named, within what was analysed.
 */

interface Recorded {
  kind: "sub" | "synthesis" | "other";
  headers: IncomingHttpHeaders;
  body: { model?: string; messages?: { role: string; content: string }[]; temperature?: number };
  startedAt: number;
  inFlightAtStart: number;
}

type Reply = { status: number; body: string };

class ChatServer {
  readonly requests: Recorded[] = [];
  readonly events: string[] = [];
  /** Replies that answer first, in order, whatever the request. */
  readonly script: Reply[] = [];
  maxInFlight = 0;
  /** Sub-analyses held until this many are in flight together, or `expectSubs` have arrived. */
  holdFor = 1;
  expectSubs = 0;
  private inFlight = 0;
  private constructor(private readonly server: Server) {}

  static async start(): Promise<ChatServer> {
    let self!: ChatServer;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => void self.answer(req.url ?? "", req.headers, Buffer.concat(chunks).toString("utf8"), res));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    self = new ChatServer(server);
    return self;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  private async answer(url: string, headers: IncomingHttpHeaders, raw: string, res: ServerResponse): Promise<void> {
    const body = JSON.parse(raw) as Recorded["body"];
    const system = body.messages?.find((m) => m.role === "system")?.content ?? "";
    const kind = system.startsWith(SUB_ANALYSIS_PROMPT) ? "sub" : system.startsWith(SYNTHESIS_PROMPT) ? "synthesis" : "other";
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    this.requests.push({ kind, headers, body, startedAt: Date.now(), inFlightAtStart: this.inFlight });
    this.events.push(`start:${kind}`);
    // A sub-analysis is held until `holdFor` are in flight (or every expected one has arrived), so
    // requests the client sends in parallel are seen together however loaded the machine is; the
    // deadline only keeps a broken client from hanging the test.
    if (kind === "sub") {
      const deadline = Date.now() + 10_000;
      const subsSeen = () => this.requests.filter((r) => r.kind === "sub").length;
      while (this.inFlight < this.holdFor && subsSeen() < this.expectSubs && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const scripted = this.script.shift();
    const reply = scripted ?? (url === "/v1/chat/completions" ? { status: 200, body: JSON.stringify(chat(fixedAnswer(kind, body))) } : { status: 404, body: "{}" });
    this.events.push(`end:${kind}`);
    this.inFlight--;
    res.writeHead(reply.status, { "content-type": "application/json" });
    res.end(reply.body);
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

const chat = (content: string) => ({ id: "c", object: "chat.completion", model: "m", choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }] });

function fixedAnswer(kind: Recorded["kind"], body: Recorded["body"]): string {
  const user = body.messages?.find((m) => m.role === "user")?.content ?? "";
  if (kind === "sub") {
    const session = /^Session (\S+)/.exec(user)?.[1] ?? "?";
    // s-3's answer cites lines far past its end: the draft's span is clamped to the transcript.
    const lines = session === "s-3" ? [2, 9999] : [2, 3];
    return JSON.stringify({ findings: [{ kind: "procedure", title: "Install before building", description: `npm run build fails without npm ci (${session})`, lines }] });
  }
  if (kind === "synthesis") {
    // Fenced, as many models answer: the analyser reads the JSON inside.
    return "```json\n" + JSON.stringify({
      memories: [
        { kind: "procedure", title: "Run npm ci before npm run build", body: "The build fails on a fresh checkout: run `npm ci` first.", tags: ["build"], importance: 4, sessions: ["s-1", "s-2", "s-3", "ghost-session"] },
        { kind: "note", title: "A one-off", body: "Seen once.", sessions: ["s-1"] },
      ],
    }) + "\n```";
  }
  return "{}";
}

const transcriptText = (n: number) => [`line one of ${n}`, "$ npm run build", "Error: Cannot find module 'left-pad'", "$ npm ci", "ok"].join("\n");

function transcripts(count: number): SessionTranscript[] {
  return Array.from({ length: count }, (_, i) => {
    const text = transcriptText(i + 1);
    return { sessionId: `s-${i + 1}`, agentId: "agent-a", ref: transcriptRefOf(Buffer.from(text)), text };
  });
}

function ctxWith(settings: Partial<DreamSettings> = {}, sessions: SessionTranscript[] = []): PhaseContext {
  const events: { seq: number; event: LedgerEvent }[] = [];
  const texts = new Map<string, string>();
  for (const t of sessions) {
    texts.set(t.ref.name, t.text);
    for (const e of envelopes(
      [
        { type: "session.started", data: { agentId: "agent-a", task: "t", branch: null, worktree: null } },
        { type: "session.ended", data: { summary: null, transcript: t.ref } },
      ] as never,
      { aggregateId: t.sessionId, app: "app1", scope: "agent:agent-a" } as never,
      events.length + 1,
    )) {
      events.push({ seq: events.length + 1, event: e as LedgerEvent });
    }
  }
  return {
    app: "app1",
    runId: "run-1",
    trigger: { kind: "dream", forced: true },
    now: new Date("2026-06-01T00:00:00.000Z"),
    settings: { ...DEFAULT_DREAM_SETTINGS, ...settings },
    view: foldDreamView("app1", events.length, events),
    readTranscript: async (ref) => texts.get(ref.name)!,
  };
}

describe("LLM analyser against a local OpenAI-compatible chat server", () => {
  let server: ChatServer;
  let dir: string;
  let guidanceFile: string;
  const GUIDANCE = "What matters here: build failures and flaky integration tests. Ignore formatting nits.";

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "memledger-llm-"));
    guidanceFile = path.join(dir, "guidance.md");
    await writeFile(guidanceFile, GUIDANCE);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(async () => {
    server = await ChatServer.start();
  });
  afterEach(async () => {
    await server.stop();
  });

  const analyser = (options: Partial<ConstructorParameters<typeof LlmAnalyser>[0]> = {}) =>
    new LlmAnalyser({ url: server.url, model: "stand-in-chat", apiKey: "sk-test-key", guidanceFile, parallelism: 2, initialBackoffMs: 1, maxBackoffMs: 5, ...options });

  it("runs the sub-analyses in parallel (at most `parallelism`), then one synthesis, with the guidance in every system prompt", async () => {
    const sessions = transcripts(5);
    server.holdFor = 2;
    server.expectSubs = 5;
    const drafts = await analyser().analyse(sessions, ctxWith({ learnMinSessions: 3 }));

    const subs = server.requests.filter((r) => r.kind === "sub");
    const synthesis = server.requests.filter((r) => r.kind === "synthesis");
    expect(subs).toHaveLength(5);
    expect(synthesis).toHaveLength(1);
    expect(server.requests).toHaveLength(6);
    // Parallel, bounded: two sub-analyses were in flight together, never three.
    expect(server.maxInFlight).toBe(2);
    // The synthesis starts only after every sub-analysis has ended.
    expect(server.events.lastIndexOf("end:sub")).toBeLessThan(server.events.indexOf("start:synthesis"));
    for (const r of server.requests) {
      expect(r.body.model).toBe("stand-in-chat");
      expect(r.body.temperature).toBe(0);
      expect(r.headers.authorization).toBe("Bearer sk-test-key");
      expect(r.body.messages!.find((m) => m.role === "system")!.content).toContain(GUIDANCE);
      // The key goes in the header only, never in what the model reads.
      expect(JSON.stringify(r.body)).not.toContain("sk-test-key");
    }
    // Each sub-analysis carries its whole transcript with numbered lines; the synthesis carries findings, not transcripts.
    expect(subs.map((r) => /^Session (\S+)/.exec(r.body.messages![1]!.content)![1]).sort()).toEqual(["s-1", "s-2", "s-3", "s-4", "s-5"]);
    expect(subs[0]!.body.messages![1]!.content).toMatch(/\n {4}3\| Error: Cannot find module 'left-pad'/);
    expect(synthesis[0]!.body.messages![1]!.content).toContain("npm run build fails without npm ci (s-4)");
    expect(synthesis[0]!.body.messages![1]!.content).not.toContain("line one of");

    // One memory recurs in >= 3 analysed sessions (the invented session id is dropped); the one-off is not proposed.
    expect(drafts).toHaveLength(1);
    const d = drafts[0]!;
    ProposalMade.shape.data.parse({ runId: "run-1", phase: "learn", key: d.key, change: d.change, evidence: d.evidence, reason: d.reason });
    expect(d.change).toEqual({
      action: "create",
      scope: "app",
      content: { title: "Run npm ci before npm run build", body: "The build fails on a fresh checkout: run `npm ci` first.", kind: "procedure", tags: ["learned", "llm", "build"], paths: [], importance: 4 },
    });
    expect(d.evidence.sessions).toEqual(["s-1", "s-2", "s-3"]);
    expect(d.evidence.prevalence).toBe(0.6);
    expect(d.evidence.counts).toMatchObject({ sessions: 3, analysedSessions: 5, subAnalyses: 5, minSessions: 3 });
    expect(d.evidence.transcripts).toEqual([
      { sessionId: "s-1", digest: sessions[0]!.ref.digest, lines: [2, 3] },
      { sessionId: "s-2", digest: sessions[1]!.ref.digest, lines: [2, 3] },
      { sessionId: "s-3", digest: sessions[2]!.ref.digest, lines: [2, 5] },
    ]);
  });

  it("runs inside the learn phase beside the offline analyser when settings name an endpoint", async () => {
    const sessions = transcripts(3);
    const llm = { url: server.url, model: "stand-in-chat", apiKey: null, guidanceFile: null, parallelism: 3 };
    server.holdFor = 3;
    server.expectSubs = 3;
    const drafts = await learnPhase.propose(ctxWith({ learnMinSessions: 3, llm }, sessions));
    expect(drafts.some((d) => d.key.startsWith("learn:llm:"))).toBe(true);
    expect(drafts.some((d) => d.key.startsWith("learn:signatures:"))).toBe(true);
    expect(server.requests.filter((r) => r.kind === "sub")).toHaveLength(3);
    expect(server.requests.every((r) => r.headers.authorization === undefined)).toBe(true);
    expect(server.maxInFlight).toBe(3);
  });

  it("retries a 500, then answers", async () => {
    server.script.push({ status: 500, body: '{"error":"boom"}' });
    const drafts = await analyser({ parallelism: 1 }).analyse(transcripts(3), ctxWith({ learnMinSessions: 3 }));
    expect(drafts).toHaveLength(1);
    expect(server.requests).toHaveLength(5);
  });

  it("fails with a typed error, its cause kept, on an answer that is not the JSON asked for, on a refusal, and on a missing guidance file", async () => {
    server.script.push({ status: 200, body: JSON.stringify(chat("I think the build is broken.")) });
    const notJson = await analyser({ parallelism: 1 }).analyse(transcripts(1), ctxWith()).catch((e: unknown) => e);
    expect(notJson).toBeInstanceOf(MemledgerError);
    expect((notJson as MemledgerError).code).toBe("unavailable");
    expect((notJson as MemledgerError).cause).toBeInstanceOf(Error);

    server.script.push({ status: 200, body: JSON.stringify(chat(JSON.stringify({ findings: [{ kind: "gossip", title: "x", description: "y" }] }))) });
    const wrongShape = await analyser({ parallelism: 1 }).analyse(transcripts(1), ctxWith()).catch((e: unknown) => e);
    expect((wrongShape as MemledgerError).code).toBe("unavailable");
    expect((wrongShape as MemledgerError).message).toContain("sub-analysis of session s-1");

    server.script.push({ status: 401, body: '{"error":"bad key"}' });
    const before = server.requests.length;
    const refused = await analyser({ parallelism: 1 }).analyse(transcripts(1), ctxWith()).catch((e: unknown) => e);
    expect((refused as MemledgerError).code).toBe("unavailable");
    expect((refused as MemledgerError).details).toMatchObject({ status: 401, retryable: false });
    expect(server.requests.length - before).toBe(1);

    const noGuidance = await analyser({ guidanceFile: path.join(dir, "missing.md") }).analyse(transcripts(1), ctxWith()).catch((e: unknown) => e);
    expect((noGuidance as MemledgerError).code).toBe("invalid");
    expect((noGuidance as MemledgerError).cause).toBeDefined();
  });

  it("reads its settings from MEMLEDGER_LLM_*", () => {
    expect(llmSettingsFromEnv({})).toBeNull();
    expect(llmSettingsFromEnv({ MEMLEDGER_LLM_URL: "http://127.0.0.1:1/v1", MEMLEDGER_LLM_MODEL: "m", MEMLEDGER_LLM_KEY: "k", MEMLEDGER_LLM_GUIDANCE: "/g.md" })).toEqual({
      url: "http://127.0.0.1:1/v1",
      model: "m",
      apiKey: "k",
      guidanceFile: "/g.md",
      parallelism: 4,
    });
    expect(() => llmSettingsFromEnv({ MEMLEDGER_LLM_URL: "http://x" })).toThrow(/MEMLEDGER_LLM_MODEL/);
  });
});
