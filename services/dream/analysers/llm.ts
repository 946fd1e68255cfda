import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { MemoryKind } from "../../../schemas/primitives.js";
import type { TranscriptSpan } from "../../../schemas/events.js";
import { invalid, isMemledgerError, unavailable } from "../../../schemas/errors.js";
import { backoffDelayMs, isRetryableStatus, parseRetryAfterMs } from "../../embeddings/openai-compatible.js";
import type { DreamSettings, PhaseContext, ProposalDraft, SessionTranscript, TranscriptAnalyser } from "../phase.js";
import { byKey, clampBody, evidence, line, shortHash } from "../proposals.js";

/**
 * The LLM learner, behind the same TranscriptAnalyser interface as the offline one: any server that
 * speaks OpenAI's POST /v1/chat/completions (OpenAI, Ollama, vLLM, llama.cpp, LiteLLM).
 *
 * 1. Sub-analyses, in parallel (at most `parallelism` requests in flight): one request per transcript,
 *    its lines numbered, asking for the patterns worth remembering with the lines they rest on.
 * 2. One synthesis request over every sub-analysis (session ids, patterns, no transcript text), asking
 *    for the memories that recur across sessions.
 * The organisation's guidance file ("what patterns matter here") is part of both system prompts. Every
 * answer must be JSON of a fixed shape (checked with zod); anything else is a typed `unavailable` error
 * with the cause. Memories recurring in fewer than `learnMinSessions` sessions are dropped, as with the
 * offline analyser.
 *
 * What is sent: the prompts below, the guidance file, and the transcripts (cut to MAX_TRANSCRIPT_CHARS);
 * never memories, settings or other secrets. The key goes only in the Authorization header.
 */

export const LLM_DEFAULTS = { timeoutMs: 120_000, maxRetries: 2, initialBackoffMs: 500, maxBackoffMs: 10_000 } as const;
/** Per transcript sent: larger ones keep their beginning and end, and say what was cut. */
export const MAX_TRANSCRIPT_CHARS = 60_000;
const MAX_LINE_CHARS = 2_000;

const Finding = z.object({
  kind: MemoryKind,
  title: z.string().min(1),
  description: z.string().min(1),
  /** 1-based, inclusive lines of the numbered transcript the finding rests on. */
  lines: z.tuple([z.number().int().min(1), z.number().int().min(1)]).optional(),
});
const SubAnalysis = z.object({ findings: z.array(Finding).max(50) });
export type SubAnalysis = z.infer<typeof SubAnalysis>;

const Synthesised = z.object({
  memories: z
    .array(
      z.object({
        kind: MemoryKind,
        title: z.string().min(1),
        body: z.string().min(1),
        tags: z.array(z.string()).max(16).optional(),
        importance: z.number().int().min(1).max(5).optional(),
        sessions: z.array(z.string()).min(1),
      }),
    )
    .max(100),
});
export type Synthesised = z.infer<typeof Synthesised>;

const ChatResponse = z.object({ choices: z.array(z.object({ message: z.object({ content: z.string().nullable() }) })).min(1) });

export const SUB_ANALYSIS_PROMPT = `You analyse one transcript of an AI coding agent's session. Find what a future agent on this codebase should know: errors that recur, commands that fail and what fixes them, fragile areas, conventions the agent had to discover, procedures that worked. Ignore one-off typos. Answer only with JSON: {"findings":[{"kind":"fragile|procedure|convention|fact|decision|note","title":"...","description":"...","lines":[first,last]}]} where lines are the numbered transcript lines the finding rests on. An empty list is a fine answer.`;

export const SYNTHESIS_PROMPT = `You are given findings from several sessions of AI coding agents, each under its session id. Merge the findings that describe the same thing and keep those that recur across sessions. Answer only with JSON: {"memories":[{"kind":"fragile|procedure|convention|fact|decision|note","title":"one line","body":"markdown: what to know and what to do","tags":["..."],"importance":1-5,"sessions":["session ids it was seen in"]}]}.`;

export interface LlmAnalyserOptions {
  url: string;
  model: string;
  apiKey?: string | null;
  /** A file of the organisation's guidance, added to both system prompts. */
  guidanceFile?: string | null;
  /** Sub-analysis requests in flight at once (default 4). */
  parallelism?: number;
  timeoutMs?: number;
  maxRetries?: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

/** The chat completions endpoint of a base URL given with or without `/v1`. */
export function chatEndpoint(baseUrl: string): URL {
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch (err) {
    throw invalid(`LLM URL is not a URL: ${JSON.stringify(baseUrl)} (MEMLEDGER_LLM_URL)`, { url: baseUrl }, err);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw invalid(`LLM URL must be http or https, got ${url.protocol} (MEMLEDGER_LLM_URL)`);
  const path = url.pathname.replace(/\/+$/, "");
  url.pathname = path.endsWith("/v1") ? `${path}/chat/completions` : `${path}/v1/chat/completions`;
  return url;
}

/** The settings' `llm` from MEMLEDGER_LLM_URL, MEMLEDGER_LLM_MODEL, MEMLEDGER_LLM_KEY, MEMLEDGER_LLM_GUIDANCE, MEMLEDGER_LLM_PARALLELISM; null without a URL. */
export function llmSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): DreamSettings["llm"] {
  const url = env.MEMLEDGER_LLM_URL?.trim();
  if (!url) return null;
  const model = env.MEMLEDGER_LLM_MODEL?.trim();
  if (!model) throw invalid("MEMLEDGER_LLM_URL is set but MEMLEDGER_LLM_MODEL is not: name the model to use");
  const parallelism = env.MEMLEDGER_LLM_PARALLELISM ? Number(env.MEMLEDGER_LLM_PARALLELISM) : 4;
  if (!Number.isInteger(parallelism) || parallelism < 1) throw invalid(`MEMLEDGER_LLM_PARALLELISM must be a whole number >= 1, got ${env.MEMLEDGER_LLM_PARALLELISM}`);
  return { url, model, apiKey: env.MEMLEDGER_LLM_KEY?.trim() || null, guidanceFile: env.MEMLEDGER_LLM_GUIDANCE?.trim() || null, parallelism };
}

/** The transcript with numbered lines, cut to MAX_TRANSCRIPT_CHARS (its beginning and end kept). */
export function numberedTranscript(text: string): string {
  const lines = text.split("\n").map((l, i) => `${String(i + 1).padStart(5)}| ${l.length > MAX_LINE_CHARS ? `${l.slice(0, MAX_LINE_CHARS)}…` : l}`);
  const whole = lines.join("\n");
  if (whole.length <= MAX_TRANSCRIPT_CHARS) return whole;
  const head: string[] = [];
  const tail: string[] = [];
  let size = 0;
  let i = 0;
  let j = lines.length - 1;
  while (i <= j) {
    const next = head.length <= tail.length ? lines[i]! : lines[j]!;
    if (size + next.length + 1 > MAX_TRANSCRIPT_CHARS - 100) break;
    size += next.length + 1;
    if (head.length <= tail.length) head.push(lines[i++]!);
    else tail.unshift(lines[j--]!);
  }
  return [...head, `      … lines ${i + 1} to ${j + 1} left out (transcript longer than ${MAX_TRANSCRIPT_CHARS} characters) …`, ...tail].join("\n");
}

/** The JSON object in a model's answer (bare, or in a ```json fence). */
function jsonOf(content: string): unknown {
  const fenced = /```(?:json)?\s*([\s\S]*?)```/.exec(content);
  const text = (fenced ? fenced[1]! : content).trim();
  const start = text.indexOf("{");
  const end = text.lastIndexOf("}");
  return JSON.parse(start >= 0 && end > start ? text.slice(start, end + 1) : text);
}

export class LlmAnalyser implements TranscriptAnalyser {
  readonly name = "llm";
  private readonly endpoint: URL;
  private readonly parallelism: number;
  private guidance: Promise<string | null> | undefined;

  constructor(private readonly options: LlmAnalyserOptions) {
    if (!options.model?.trim()) throw invalid("the LLM model name is empty (MEMLEDGER_LLM_MODEL)");
    this.endpoint = chatEndpoint(options.url);
    this.parallelism = Math.max(1, options.parallelism ?? 4);
  }

  static fromSettings(llm: NonNullable<DreamSettings["llm"]>): LlmAnalyser {
    return new LlmAnalyser(llm);
  }

  private readGuidance(): Promise<string | null> {
    const file = this.options.guidanceFile;
    this.guidance ??= file
      ? readFile(file, "utf8").catch((err) => {
          throw invalid(`cannot read the LLM guidance file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { file }, err);
        })
      : Promise.resolve(null);
    return this.guidance;
  }

  private system(prompt: string, guidance: string | null): string {
    return guidance ? `${prompt}\n\nThe organisation's guidance on what patterns matter here:\n${guidance.trim()}` : prompt;
  }

  async analyse(transcripts: readonly SessionTranscript[], ctx: PhaseContext): Promise<ProposalDraft[]> {
    if (transcripts.length === 0) return [];
    const guidance = await this.readGuidance();
    const subs = await this.subAnalyses(transcripts, guidance, ctx.signal);
    const synthesis = await this.synthesise(subs, guidance, ctx.signal);
    return this.drafts(transcripts, subs, synthesis, ctx);
  }

  /** One request per transcript, at most `parallelism` in flight; results in the transcripts' order. */
  async subAnalyses(transcripts: readonly SessionTranscript[], guidance: string | null, signal?: AbortSignal): Promise<{ transcript: SessionTranscript; lines: number; analysis: SubAnalysis }[]> {
    const out: { transcript: SessionTranscript; lines: number; analysis: SubAnalysis }[] = new Array(transcripts.length);
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < transcripts.length; i = next++) {
        const t = transcripts[i]!;
        const analysis = await this.ask(
          SubAnalysis,
          [
            { role: "system", content: this.system(SUB_ANALYSIS_PROMPT, guidance) },
            { role: "user", content: `Session ${t.sessionId}${t.agentId ? ` (agent ${t.agentId})` : ""}. Transcript, numbered lines:\n\n${numberedTranscript(t.text)}` },
          ],
          `sub-analysis of session ${t.sessionId}`,
          signal,
        );
        out[i] = { transcript: t, lines: t.text.split("\n").length, analysis };
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.parallelism, transcripts.length) }, worker));
    return out;
  }

  async synthesise(subs: readonly { transcript: SessionTranscript; analysis: SubAnalysis }[], guidance: string | null, signal?: AbortSignal): Promise<Synthesised> {
    const findings = subs.map((s) => ({ session: s.transcript.sessionId, findings: s.analysis.findings.map(({ kind, title, description }) => ({ kind, title, description })) }));
    return this.ask(
      Synthesised,
      [
        { role: "system", content: this.system(SYNTHESIS_PROMPT, guidance) },
        { role: "user", content: `Findings of ${subs.length} sessions:\n\n${JSON.stringify(findings, null, 1)}` },
      ],
      "synthesis",
      signal,
    );
  }

  private drafts(transcripts: readonly SessionTranscript[], subs: readonly { transcript: SessionTranscript; lines: number; analysis: SubAnalysis }[], synthesis: Synthesised, ctx: PhaseContext): ProposalDraft[] {
    const analysed = new Set(transcripts.map((t) => t.sessionId));
    const drafts: ProposalDraft[] = [];
    for (const memory of synthesis.memories) {
      // Only sessions that were analysed count (a model may invent or misspell ids).
      const sessions = [...new Set(memory.sessions)].filter((s) => analysed.has(s)).sort();
      if (sessions.length < ctx.settings.learnMinSessions) continue;
      const spans: TranscriptSpan[] = [];
      for (const sub of subs) {
        if (!sessions.includes(sub.transcript.sessionId)) continue;
        for (const f of sub.analysis.findings) {
          if (!f.lines) continue;
          const first = Math.min(f.lines[0], sub.lines);
          spans.push({ sessionId: sub.transcript.sessionId, digest: sub.transcript.ref.digest, lines: [first, Math.max(first, Math.min(f.lines[1], sub.lines))] });
        }
      }
      const title = line(memory.title, 200) || "Learned from transcripts";
      const tags = [...new Set(["learned", "llm", ...(memory.tags ?? []).map((t) => line(t, 64).replace(/,/g, " ").trim()).filter((t) => t.length > 0)])].slice(0, 32);
      drafts.push({
        key: `learn:llm:${memory.kind}:${shortHash(`${memory.kind}\u0000${title.toLowerCase()}`)}`,
        change: { action: "create", scope: "app", content: { title, body: clampBody(memory.body), kind: memory.kind, tags, paths: [], importance: memory.importance ?? 3 } },
        evidence: evidence({
          sessions,
          transcripts: spans,
          counts: { sessions: sessions.length, analysedSessions: analysed.size, subAnalyses: subs.length, minSessions: ctx.settings.learnMinSessions },
          prevalence: sessions.length / analysed.size,
          summary: `The LLM analyser (${this.options.model}) found this in ${sessions.length} of ${analysed.size} sessions`,
        }),
        reason: line(`Learned from transcripts by the LLM analyser: ${title}`),
      });
    }
    return byKey(drafts);
  }

  /** One chat completion, retried on 408, 429, 5xx, timeouts and refused connections; the answer checked with `schema`. */
  private async ask<T>(schema: z.ZodType<T>, messages: { role: string; content: string }[], what: string, signal?: AbortSignal): Promise<T> {
    const body = JSON.stringify({ model: this.options.model, messages, temperature: 0, response_format: { type: "json_object" } });
    const headers: Record<string, string> = { "content-type": "application/json", accept: "application/json" };
    if (this.options.apiKey) headers.authorization = `Bearer ${this.options.apiKey}`;
    const maxRetries = this.options.maxRetries ?? LLM_DEFAULTS.maxRetries;
    const backoff = { initialBackoffMs: this.options.initialBackoffMs ?? LLM_DEFAULTS.initialBackoffMs, maxBackoffMs: this.options.maxBackoffMs ?? LLM_DEFAULTS.maxBackoffMs };
    const endpoint = `${this.endpoint.origin}${this.endpoint.pathname}`;
    let last: { message: string; cause: unknown } = { message: "", cause: undefined };
    for (let attempt = 0; attempt <= maxRetries; attempt++) {
      signal?.throwIfAborted();
      let response: Response;
      try {
        const timeout = AbortSignal.timeout(this.options.timeoutMs ?? LLM_DEFAULTS.timeoutMs);
        response = await fetch(this.endpoint, { method: "POST", headers, body, signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
      } catch (err) {
        if (signal?.aborted) throw err;
        last = { message: (err as Error).name === "TimeoutError" ? "no answer in time" : (err as Error).message, cause: err };
        if (attempt < maxRetries) await sleep(backoffDelayMs(attempt, backoff, undefined));
        continue;
      }
      const text = await response.text().catch(() => "");
      if (!response.ok) {
        const snippet = text.length > 300 ? `${text.slice(0, 300)}…` : text;
        if (!isRetryableStatus(response.status)) {
          throw unavailable(`LLM endpoint ${endpoint} answered HTTP ${response.status} to the ${what}${response.status === 401 || response.status === 403 ? " (check MEMLEDGER_LLM_KEY)" : response.status === 404 ? " (check MEMLEDGER_LLM_URL and MEMLEDGER_LLM_MODEL)" : ""}: ${snippet}`, { endpoint, status: response.status, retryable: false });
        }
        last = { message: `HTTP ${response.status}: ${snippet}`, cause: undefined };
        if (attempt < maxRetries) await sleep(backoffDelayMs(attempt, backoff, parseRetryAfterMs(response.headers.get("retry-after"), Date.now())));
        continue;
      }
      return this.parseAnswer(schema, text, what, endpoint);
    }
    throw unavailable(`LLM endpoint ${endpoint} failed the ${what} ${maxRetries + 1} times; last: ${last.message}`, { endpoint, attempts: maxRetries + 1, retryable: true }, last.cause);
  }

  private parseAnswer<T>(schema: z.ZodType<T>, text: string, what: string, endpoint: string): T {
    try {
      const chat = ChatResponse.parse(JSON.parse(text));
      return schema.parse(jsonOf(chat.choices[0]!.message.content ?? ""));
    } catch (err) {
      if (isMemledgerError(err)) throw err;
      throw unavailable(`LLM endpoint ${endpoint} answered the ${what} with something other than the JSON asked for: ${(err as Error).message.slice(0, 300)}`, { endpoint, retryable: false }, err);
    }
  }
}
