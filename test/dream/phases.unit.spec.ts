import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { envelopes } from "../../testing/index.js";
import { ProposalMade, type LedgerEvent } from "../../schemas/events.js";
import type { Embedder } from "../../projections/embedder.js";
import { DEFAULT_DREAM_SETTINGS, type DreamSettings, type DreamView, type Phase, type PhaseContext, type ProposalDraft } from "../../services/dream/phase.js";
import { foldDreamView } from "../../services/dream/view.js";
import { prunePhase } from "../../services/dream/phases/prune.js";
import { mergePhase } from "../../services/dream/phases/merge.js";
import { absoluteDates, refreshPhase } from "../../services/dream/phases/refresh.js";
import { learnPhase } from "../../services/dream/phases/learn.js";
import { indexReport, reindexPhase } from "../../services/dream/phases/reindex.js";
import { normaliseSignature, occurrencesIn, signatureAnalyser } from "../../services/dream/analysers/signatures.js";
import { evidence } from "../../services/dream/proposals.js";
import { transcriptRefOf } from "../../services/transcripts.js";

/**
 * The phases as pure functions of a folded view: events built with memledger/testing's envelopes, folded
 * by foldDreamView, each phase's drafts checked against the proposal.made schema (what the runner will
 * append), their evidence, and their keys (the same view twice gives the same keys).
 */

const APP = "app1";
const NOW = new Date("2026-06-01T00:00:00.000Z");
const daysBefore = (days: number, from = NOW) => new Date(from.getTime() - days * 86_400_000).toISOString();

class Log {
  readonly events: { seq: number; event: LedgerEvent }[] = [];
  readonly transcripts = new Map<string, string>();

  add(type: string, data: unknown, meta: Record<string, unknown>): number {
    const seq = this.events.length + 1;
    const [event] = envelopes([{ type, data } as never], { app: APP, ...meta } as never, seq);
    this.events.push({ seq, event: event! });
    return seq;
  }

  memory(id: string, content: { title: string; body: string; tags?: string[]; paths?: string[]; importance?: number; kind?: string }, options: { at?: string; scope?: string; approve?: boolean } = {}): void {
    const at = options.at ?? daysBefore(10);
    const meta = { aggregateId: id, scope: options.scope ?? "app", time: at };
    this.add("memory.proposed", { version: 1, kind: "note", tags: [], paths: [], importance: 3, ...content }, { ...meta, id: `${id}-p1` });
    if (options.approve !== false) this.add("memory.approved", { version: 1 }, { ...meta, id: `${id}-a1` });
  }

  supersede(id: string, by: string | null): void {
    this.add("memory.superseded", { by, reason: "replaced" }, { aggregateId: id, id: `${id}-s`, time: daysBefore(5) });
  }

  session(id: string, transcript?: string, exposed: string[] = []): void {
    const meta = { aggregateId: id, scope: "agent:agent-a", time: daysBefore(2) };
    this.add("session.started", { agentId: "agent-a", task: "work", branch: null, worktree: null }, { ...meta, id: `${id}-st` });
    if (exposed.length > 0) {
      this.add("session.exposed", { receipts: [{ verb: "search", time: daysBefore(2), tokens: 5, memories: exposed.map((memoryId, i) => ({ memoryId, version: 1, rank: i + 1, channel: "bm25", origin: "app" })) }] }, { ...meta, id: `${id}-ex${this.events.length}` });
    }
    let ref;
    if (transcript !== undefined) {
      ref = transcriptRefOf(Buffer.from(transcript));
      this.transcripts.set(ref.name, transcript);
    }
    this.add("session.ended", ref ? { summary: null, transcript: ref } : { summary: null }, { ...meta, id: `${id}-end` });
  }

  view(): DreamView {
    return foldDreamView(APP, this.events.length, this.events);
  }

  ctx(settings: Partial<DreamSettings> = {}, extra: Partial<PhaseContext> = {}): PhaseContext {
    return {
      app: APP,
      runId: "run-1",
      trigger: { kind: "dream", forced: true },
      now: NOW,
      settings: { ...DEFAULT_DREAM_SETTINGS, ...settings },
      view: this.view(),
      readTranscript: async (ref) => this.transcripts.get(ref.name)!,
      ...extra,
    };
  }
}

/**
 * What the runner appends for a draft must pass the event schema, and a phase run again over the same
 * events folded again (a resumed step) must propose the same keys and changes. Returns the drafts.
 */
async function proposeChecked(phase: Phase, makeCtx: () => PhaseContext): Promise<ProposalDraft[]> {
  const ctx = makeCtx();
  const drafts = await phase.propose(ctx);
  for (const d of drafts) ProposalMade.shape.data.parse({ runId: ctx.runId, phase: phase.name, key: d.key, change: d.change, evidence: d.evidence, reason: d.reason });
  const again = await phase.propose(makeCtx());
  expect(again.map((d) => [d.key, d.change, d.evidence])).toEqual(drafts.map((d) => [d.key, d.change, d.evidence]));
  expect(new Set(drafts.map((d) => d.key)).size).toBe(drafts.length);
  return drafts;
}

describe("prune", () => {
  it("proposes never-retrieved memories older than the threshold, with their age and retrievals", async () => {
    const log = new Log();
    log.memory("m-old-unread", { title: "Old unread note", body: "Nobody reads this." }, { at: daysBefore(200) });
    log.memory("m-old-read", { title: "Old but read", body: "Agents read this one." }, { at: daysBefore(200) });
    log.memory("m-young", { title: "Young note", body: "Too recent to judge." }, { at: daysBefore(20) });
    log.session("s1", undefined, ["m-old-read"]);
    const drafts = await proposeChecked(prunePhase, () => log.ctx({ neverRetrievedDays: 90 }));
    expect(drafts.map((d) => d.key)).toEqual(["prune:m-old-unread@v1"]);
    expect(drafts[0]!.change).toEqual({ action: "supersede", memory: { memoryId: "m-old-unread", version: 1 } });
    expect(drafts[0]!.evidence.counts).toMatchObject({ ageDays: 200, retrievals: 0, thresholdDays: 90 });
    expect(drafts[0]!.evidence.memories).toEqual([{ memoryId: "m-old-unread", version: 1 }]);
  });

  it("proposes nothing as never retrieved when the app has no exposure receipts at all", async () => {
    const log = new Log();
    log.memory("m-old", { title: "Old", body: "Old text." }, { at: daysBefore(400) });
    expect(await proposeChecked(prunePhase, () => log.ctx())).toEqual([]);
  });

  it("ends a dead superseded chain: the successor that never came into force is proposed, the chain is its evidence", async () => {
    const log = new Log();
    log.memory("m-a", { title: "First", body: "Version one of the rule." });
    log.memory("m-b", { title: "Second", body: "Version two of the rule." });
    log.memory("m-c", { title: "Third, never approved", body: "Version three of the rule." }, { approve: false });
    log.supersede("m-a", "m-b");
    log.supersede("m-b", "m-c");
    log.memory("m-d", { title: "Healthy successor", body: "Fine." });
    log.memory("m-e", { title: "Replaced properly", body: "Old." });
    log.supersede("m-e", "m-d");
    const drafts = await proposeChecked(prunePhase, () => log.ctx());
    expect(drafts.map((d) => d.key)).toEqual(["prune:chain:m-c@v1"]);
    expect(drafts[0]!.change).toEqual({ action: "supersede", memory: { memoryId: "m-c", version: 1 } });
    expect(drafts[0]!.evidence.memories.map((m) => m.memoryId)).toEqual(["m-c", "m-a", "m-b"]);
    expect(drafts[0]!.evidence.counts).toMatchObject({ chainLength: 3, superseded: 2 });
  });

  it("leaves session candidates to the session-end review", async () => {
    const log = new Log();
    log.memory("m-cand", { title: "Candidate", body: "Speculative." }, { at: daysBefore(300), scope: "session:s9" });
    log.session("s1", undefined, ["other"]);
    expect(await proposeChecked(prunePhase, () => log.ctx())).toEqual([]);
  });
});

describe("merge", () => {
  const base = "Run the integration tests with npm run test:int after starting NATS on port 4222 and Redis on port 6379.";
  function duplicates(): Log {
    const log = new Log();
    log.memory("m-1", { title: "Integration tests need NATS and Redis", body: base, tags: ["tests"], importance: 3 });
    log.memory("m-2", { title: "Integration tests need NATS and Redis", body: `${base}\nUse a fresh prefix per test.`, tags: ["ci"], paths: ["test/support/env.ts"], importance: 4 });
    log.memory("m-3", { title: "Integration tests need NATS and Redis running", body: `${base} Both must be up.`, tags: ["tests"], importance: 2 });
    log.memory("m-other", { title: "Deploy with make release", body: "Releases are cut from main with make release and a signed tag." });
    log.memory("m-team", { title: "Integration tests need NATS and Redis", body: base }, { scope: "team:infra" });
    log.session("s1", undefined, ["m-2", "m-2"]);
    return log;
  }

  it("merges near-duplicates in one scope into one memory with every source, the merged text and the similarities", async () => {
    const drafts = await proposeChecked(mergePhase, () => duplicates().ctx({ mergeSimilarity: 0.75 }));
    expect(drafts).toHaveLength(1);
    const change = drafts[0]!.change;
    if (change.action !== "merge") throw new Error(`expected a merge, got ${change.action}`);
    // The leader is the most retrieved (m-2); the memory in another scope is not merged across scopes.
    expect(change.sources.map((s) => s.memoryId)).toEqual(["m-2", "m-1", "m-3"]);
    expect(change.scope).toBe("app");
    expect(change.content.body).toContain("Use a fresh prefix per test.");
    expect(change.content.tags.sort()).toEqual(["ci", "tests"]);
    expect(change.content.paths).toEqual(["test/support/env.ts"]);
    expect(change.content.importance).toBe(4);
    const ev = drafts[0]!.evidence;
    expect(ev.memories).toEqual(change.sources);
    expect(ev.counts).toMatchObject({ sources: 3, retrievals: 2 });
    expect(ev.scores.minSimilarity).toBeGreaterThanOrEqual(0.75);
    expect(Object.keys(ev.scores)).toEqual(expect.arrayContaining(["similarity.1", "similarity.2", "lexical.1"]));
  });

  it("does not merge below the threshold, nor two memories that contradict each other", async () => {
    expect(await proposeChecked(mergePhase, () => duplicates().ctx({ mergeSimilarity: 0.99 }))).toEqual([]);
    const log = new Log();
    log.memory("m-x", { title: "Payment gateway retries", body: "Retry the payment gateway 3 times with exponential backoff before giving up." });
    log.memory("m-y", { title: "Payment gateway retries", body: "Retry the payment gateway 5 times with exponential backoff before giving up." });
    expect(await proposeChecked(mergePhase, () => log.ctx({ mergeSimilarity: 0.8 }))).toEqual([]);
  });

  it("finds near-duplicates among hundreds of memories made of the same common words", async () => {
    const log = new Log();
    const vocabulary = "cache queue worker deploy build lint index token session retry timeout config".split(" ");
    let state = 7;
    const next = () => (state = (state * 48271) % 2147483647);
    const text = (n: number) => Array.from({ length: n }, () => vocabulary[next() % vocabulary.length]).join(" ");
    for (let i = 0; i < 300; i++) log.memory(`m-${String(i).padStart(3, "0")}`, { title: text(4), body: `${text(20)}.` });
    const body = `${text(20)}.`;
    log.memory("m-dup-a", { title: "Flaky zookeeper handshake", body });
    log.memory("m-dup-b", { title: "Flaky zookeeper handshake", body: `${body} Again.` });
    const drafts = await proposeChecked(mergePhase, () => log.ctx({ mergeSimilarity: 0.9 }));
    const merges = drafts.map((d) => (d.change.action === "merge" ? d.change.sources.map((x) => x.memoryId).sort() : []));
    expect(merges).toContainEqual(["m-dup-a", "m-dup-b"]);
  });

  it("uses the embedder for hybrid similarity when the app has one", async () => {
    const calls: string[][] = [];
    const embedder: Embedder = {
      modelId: "hash@1",
      dimensions: 8,
      async embed(texts) {
        calls.push([...texts]);
        // Same vector for every text: semantic similarity 1, so hybrid = (lexical + 1) / 2.
        return texts.map(() => new Float32Array([1, 0, 0, 0, 0, 0, 0, 0]));
      },
    };
    const drafts = await proposeChecked(mergePhase, () => duplicates().ctx({ mergeSimilarity: 0.9 }, { embedder }));
    expect(calls.length).toBeGreaterThan(0);
    expect(drafts).toHaveLength(1);
    expect(drafts[0]!.evidence.scores["semantic.1"]).toBeCloseTo(1, 5);
    expect(drafts[0]!.evidence.scores["similarity.1"]).toBeCloseTo((drafts[0]!.evidence.scores["lexical.1"]! + 1) / 2, 3);
  });
});

describe("refresh", () => {
  it("makes relative dates absolute from the version's time, leaving code alone", () => {
    const anchor = new Date("2026-03-14T10:00:00.000Z"); // a Saturday
    const { text, replaced } = absoluteDates("The deploy broke yesterday; fixed since yesterday. 3 days ago it worked. Last week was fine. `yesterday` stays.", anchor);
    expect(text).toBe("The deploy broke on 2026-03-13; fixed since 2026-03-13. on 2026-03-11 it worked. in the week of 2026-03-02 was fine. `yesterday` stays.");
    expect(replaced).toHaveLength(4);
    expect(absoluteDates("Nothing relative here.", anchor).replaced).toEqual([]);
  });

  it("revises a memory with relative dates and one whose importance retrievals contradict, once per memory", async () => {
    const log = new Log();
    log.memory("m-date", { title: "Outage", body: "The cache fell over yesterday." }, { at: "2026-05-20T08:00:00.000Z" });
    log.memory("m-hot", { title: "Hot memory", body: "Everyone needs this.", importance: 2 });
    log.memory("m-cold", { title: "Cold but important", body: "Nobody needs this.", importance: 5 }, { at: daysBefore(120) });
    log.memory("m-plain", { title: "Plain", body: "Nothing to change." });
    for (let i = 0; i < 6; i++) log.session(`s${i}`, undefined, ["m-hot"]);
    const drafts = await proposeChecked(refreshPhase, () => log.ctx({ neverRetrievedDays: 90 }));
    expect(drafts.map((d) => d.key)).toEqual(["refresh:m-cold@v1", "refresh:m-date@v1", "refresh:m-hot@v1"]);
    const byId = Object.fromEntries(drafts.map((d) => [d.key.split(":")[1]!.split("@")[0]!, d]));
    const date = byId["m-date"]!.change;
    expect(date.action === "revise" && date.content.body).toBe("The cache fell over on 2026-05-19.");
    expect(byId["m-date"]!.evidence.counts.relativeDates).toBe(1);
    const hot = byId["m-hot"]!.change;
    expect(hot.action === "revise" && hot.content.importance).toBe(3);
    expect(byId["m-hot"]!.evidence.counts).toMatchObject({ retrievals: 6, importanceBefore: 2, importanceAfter: 3 });
    const cold = byId["m-cold"]!.change;
    expect(cold.action === "revise" && cold.content.importance).toBe(4);
  });

  it("flags contradictions between memories on the same subject", async () => {
    const log = new Log();
    log.memory("m-always", { title: "Database migrations", body: "Always run database migrations inside a transaction on deploy." });
    log.memory("m-never", { title: "Database migrations", body: "Never run database migrations inside a transaction on deploy." });
    log.memory("m-retry3", { title: "Webhook retries", body: "The webhook worker retries 3 times before dead-lettering." });
    log.memory("m-retry5", { title: "Webhook retries", body: "The webhook worker retries 5 times before dead-lettering." });
    log.memory("m-unrelated", { title: "Frontend builds", body: "Run vite build for the frontend." });
    const drafts = (await proposeChecked(refreshPhase, () => log.ctx())).filter((d) => d.change.action === "flag");
    expect(drafts.map((d) => d.change)).toEqual([
      { action: "flag", memories: [{ memoryId: "m-always", version: 1 }, { memoryId: "m-never", version: 1 }] },
      { action: "flag", memories: [{ memoryId: "m-retry3", version: 1 }, { memoryId: "m-retry5", version: 1 }] },
    ]);
    expect(drafts[1]!.evidence.summary).toContain("retries 3 times");
    expect(drafts[1]!.evidence.scores.similarity).toBeGreaterThanOrEqual(0.5);
  });
});

// ---- learn ------------------------------------------------------------------------------------------

const claudeTranscript = (home: string, n: number) =>
  [
    JSON.stringify({ type: "user", message: { role: "user", content: "fix the build" } }),
    JSON.stringify({ type: "assistant", message: { role: "assistant", content: [{ type: "tool_use", id: `tu${n}`, name: "Bash", input: { command: "npm run build" } }] } }),
    JSON.stringify({ type: "user", message: { role: "user", content: [{ type: "tool_result", tool_use_id: `tu${n}`, is_error: true, content: `> build\nError: Cannot find module '${home}/project/node_modules/left-pad/index.js'\nexit code 1` }] } }),
    JSON.stringify({ type: "assistant", message: { role: "assistant", content: [{ type: "tool_use", id: `tv${n}`, name: "Bash", input: { command: "npm run build" } }] } }),
    JSON.stringify({ type: "user", message: { role: "user", content: [{ type: "tool_result", tool_use_id: `tv${n}`, content: "ok" }] } }),
  ].join("\n");

const openAiTranscript = (home: string) =>
  [
    JSON.stringify({ role: "user", content: "build it" }),
    JSON.stringify({ role: "assistant", content: null, tool_calls: [{ id: "c1", type: "function", function: { name: "Bash", arguments: JSON.stringify({ command: "npm run build" }) } }] }),
    JSON.stringify({ role: "tool", tool_call_id: "c1", content: `Error: Cannot find module '${home}/app/node_modules/left-pad/index.js'` }),
    JSON.stringify({ role: "assistant", content: null, tool_calls: [{ id: "c2", type: "function", function: { name: "Bash", arguments: JSON.stringify({ command: "npm run build" }) } }] }),
    JSON.stringify({ role: "tool", tool_call_id: "c2", content: "done" }),
  ].join("\n");

const plainTranscript = (home: string) => ["Session log", "$ npm run build", `Error: Cannot find module '${home}/x/node_modules/left-pad/index.js'`, "$ npm run build", "built in 2.1s"].join("\n");

describe("learn: the offline signature analyser", () => {
  it("normalises paths, numbers and hex out of signatures", () => {
    expect(normaliseSignature("Error: ENOENT: no such file or directory, open '/home/ann/p/config/app.json' at 0x7ffe12 line 42")).toBe(
      "Error: ENOENT: no such file or directory, open <path> at <hex> line <n>",
    );
    expect(normaliseSignature("TypeError: cannot read properties of undefined (reading 'id') at src/a/b.ts:12:5")).toBe(
      "TypeError: cannot read properties of undefined (reading 'id') at <path>",
    );
  });

  it("finds error signatures, failing commands and retries in Claude Code, OpenAI-style and plain transcripts, with line spans", () => {
    for (const text of [claudeTranscript("/home/ann", 1), openAiTranscript("/Users/bob"), plainTranscript("/srv/ci")]) {
      const found = occurrencesIn(text);
      expect(found.map((o) => [o.kind, o.signature])).toEqual(
        expect.arrayContaining([
          ["error", "Error: Cannot find module <path>"],
          // The same command through any harness (a Bash tool, a shell tool, a prompt) is one pattern.
          ["command", "$ npm run build"],
          ["retry", "$ npm run build"],
        ]),
      );
      for (const o of found) expect(o.lines[0]).toBeLessThanOrEqual(o.lines[1]);
    }
    const claude = occurrencesIn(claudeTranscript("/home/ann", 1));
    expect(claude.find((o) => o.kind === "error")!.lines).toEqual([2, 3]);
    expect(claude.find((o) => o.kind === "retry")!.lines).toEqual([2, 4]);
    expect(occurrencesIn("all good\nnothing failed here\n0 failed, 12 passed")).toEqual([]);
  });

  function learnLog(): Log {
    const log = new Log();
    log.session("s-1", claudeTranscript("/home/ann", 1));
    log.session("s-2", openAiTranscript("/Users/bob"));
    log.session("s-3", plainTranscript("/srv/ci"));
    log.session("s-4", "a quiet session\nnothing went wrong");
    log.session("s-5"); // no transcript: not analysed
    return log;
  }

  it("proposes patterns recurring in at least N sessions, with sessions, spans, counts and prevalence", async () => {
    const drafts = await proposeChecked(learnPhase, () => learnLog().ctx({ learnMinSessions: 3 }));
    const kinds = drafts.map((d) => (d.change.action === "create" ? d.change.content.kind : null));
    expect(kinds.sort()).toEqual(["fragile", "procedure", "procedure"]);
    const error = drafts.find((d) => d.change.action === "create" && d.change.content.kind === "fragile")!;
    expect(error.change.action === "create" && error.change.content.title).toBe("Recurring error: Error: Cannot find module <path>");
    expect(error.change.action === "create" && error.change.scope).toBe("app");
    expect(error.evidence.sessions).toEqual(["s-1", "s-2", "s-3"]);
    expect(error.evidence.prevalence).toBe(0.75);
    expect(error.evidence.counts).toMatchObject({ sessions: 3, occurrences: 3, analysedSessions: 4, minSessions: 3 });
    expect(error.evidence.transcripts.map((t) => [t.sessionId, t.lines])).toEqual([
      ["s-1", [2, 3]],
      ["s-2", [2, 3]],
      ["s-3", [3, 3]],
    ]);
    // The transcript's own path never reaches the proposed memory.
    expect(JSON.stringify(error.change)).not.toContain("/home/ann");
    expect(await proposeChecked(learnPhase, () => learnLog().ctx({ learnMinSessions: 4 }))).toEqual([]);
  });

  it("does not propose a pattern an active memory already carries, nor sessions from before the last dream run", async () => {
    const log = learnLog();
    const first = await proposeChecked(learnPhase, () => log.ctx({ learnMinSessions: 3 }));
    const known = first[0]!.change;
    if (known.action !== "create") throw new Error("expected create");
    log.memory("m-learned", known.content);
    const after = await proposeChecked(learnPhase, () => log.ctx({ learnMinSessions: 3 }));
    expect(after.map((d) => d.key)).toEqual(first.slice(1).map((d) => d.key));

    log.add("run.started", { trigger: { kind: "dream", forced: false }, phases: ["learn"], asOfSeq: 1, gates: { lastRunId: null, lastRunAt: null, sessionsSince: 0, forced: false }, holder: "h", settings: {} }, { aggregateId: "run-0", id: "run-0-s" });
    log.add("run.completed", { proposals: {}, index: null }, { aggregateId: "run-0", id: "run-0-c" });
    expect(await proposeChecked(learnPhase, () => log.ctx({ learnMinSessions: 3 }))).toEqual([]);
  });

  it("keeps evidence within the schema's limits and says how much was left out", async () => {
    const sessions = Array.from({ length: 1200 }, (_, i) => `s-${i}`);
    const ev = evidence({
      sessions,
      transcripts: sessions.map((sessionId) => ({ sessionId, digest: `sha256:${createHash("sha256").update(sessionId).digest("hex")}`, lines: [1, 2] as [number, number] })),
      counts: { sessions: 1200 },
      summary: "x".repeat(5000),
    });
    expect(ev.sessions).toHaveLength(1000);
    expect(ev.transcripts).toHaveLength(200);
    expect(ev.counts).toMatchObject({ sessions: 1200, sessionsTotal: 1200, transcriptsTotal: 1200 });
    expect(ev.summary.length).toBeLessThanOrEqual(2000);
    expect(signatureAnalyser.name).toBe("signatures");
  });
});

describe("reindex", () => {
  it("reports MEMORY.md as the files projection renders it: within 200 lines and 25 KB, how many listed", async () => {
    const log = new Log();
    for (let i = 0; i < 300; i++) log.memory(`m-${String(i).padStart(3, "0")}`, { title: `Memory number ${i} about something`, body: "Body." });
    log.memory("m-gone", { title: "Gone", body: "Old." });
    log.supersede("m-gone", null);
    const ctx = log.ctx();
    expect(await proposeChecked(reindexPhase, () => ctx)).toEqual([]);
    const report = reindexPhase.report(ctx);
    expect(report).toEqual(indexReport(ctx.view));
    expect(report.withinLimits).toBe(true);
    expect(report.lines).toBeLessThanOrEqual(200);
    expect(report.bytes).toBeLessThanOrEqual(25 * 1024);
    expect(report.eligible).toBe(300);
    expect(report.listed).toBeGreaterThan(0);
    expect(report.listed).toBeLessThan(300);
    expect(report.summary).toContain(`lists ${report.listed} of 300`);
  });
});
