import type { MemoryKind } from "../../../schemas/primitives.js";
import type { TranscriptSpan } from "../../../schemas/events.js";
import type { PhaseContext, ProposalDraft, SessionTranscript, TranscriptAnalyser } from "../phase.js";
import { activeMemories, byKey, evidence, line, shortHash } from "../proposals.js";

/**
 * The built-in, offline learner: what keeps going wrong across sessions.
 *
 * A transcript is read as JSONL messages when its lines parse as JSON (Claude Code's transcript lines
 * with `tool_use` / `tool_result` content blocks, OpenAI-style `tool_calls` and `role: "tool"` messages,
 * either bare or under `message`), and as plain text otherwise (shell prompts `$ cmd` and the lines after
 * them). Three kinds of pattern are collected per session:
 *   - error signatures: the first error line of a failing result (or any error line in plain text),
 *     normalised so the same failure looks the same everywhere: paths, numbers, hex, ids and quoted
 *     values of them are replaced by placeholders;
 *   - failing commands: a shell-like tool call (or prompt line) whose result failed (an `is_error`
 *     result, a non-zero exit code, or an error line), normalised the same way;
 *   - retried tool calls: the same call (tool and input) made again in the session after it failed.
 * A pattern seen in at least `learnMinSessions` of the analysed sessions becomes a proposed memory
 * (`fragile` for error signatures, `procedure` for commands and retries) with the sessions, transcript
 * spans (line ranges), counts and prevalence (sessions with it / sessions analysed) as evidence. A
 * pattern an active memory already carries (its `signature:<hash>` tag) is not proposed again.
 */

export type PatternKind = "error" | "command" | "retry";

export interface Occurrence {
  kind: PatternKind;
  signature: string;
  /** 1-based, inclusive lines of the transcript's text. */
  lines: [number, number];
  /** The raw line the signature came from (kept out of proposals: it may hold values the signature hides). */
  sample: string;
}

// ---- normalisation --------------------------------------------------------------------------------

/** The same failure looks the same everywhere: variable parts become placeholders. */
export function normaliseSignature(text: string): string {
  return text
    .replace(/\u001b\[[0-9;]*[A-Za-z]/g, "") // terminal colours
    .replace(/\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi, "<id>")
    .replace(/\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?\b/g, "<time>")
    .replace(/(?:[A-Za-z]:)?(?:[\w.@~-]*[\\/])+[\w.@-]+(?::\d+(?::\d+)?)?/g, "<path>") // paths, with line:col
    .replace(/\b0x[0-9a-f]+\b/gi, "<hex>")
    .replace(/\b[0-9a-f]{7,}\b/gi, (m) => (/\d/.test(m) ? "<hex>" : m))
    .replace(/\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{4,}\b/g, "<hex>") // short lowercase hex ids (migration 3a5f1)
    .replace(/\d+(\.\d+)?/g, "<n>")
    .replace(/(['"`])(<path>|<n>|<hex>|<id>)\1/g, "$2")
    .replace(/\s+/g, " ")
    .trim()
    .slice(0, 160);
}

/** Lines that say something failed, in the common shapes of compilers, runtimes, shells and test runners. */
const ERROR_LINE = [
  /^\s*(?:Uncaught\s+)?[A-Z][A-Za-z]*(?:Error|Exception)\b(?:\s*\[[^\]]*\])?:/, // TypeError: …, ValueError: …
  /^\s*Error(?:\s*\[[^\]]*\])?:/,
  /^\s*(?:error|fatal|panic)(?:\[[^\]]*\])?:/i, // error[E0425]: (rust), fatal: (git), panic:
  /^\s*npm ERR!/,
  /^\s*(?:FAIL|FAILED)\b/,
  /^\s*E\s{2,}\S/, // pytest
  /\bcommand not found\b/,
  /\bNo such file or directory\b/,
  /\bPermission denied\b/,
  /\bSegmentation fault\b/,
  /\b(?:ECONNREFUSED|ECONNRESET|EADDRINUSE|ENOENT|EACCES|ETIMEDOUT|ENOSPC)\b/,
  /\bTraceback \(most recent call last\)/,
];
const TRACEBACK = /\bTraceback \(most recent call last\)/;

export const isErrorLine = (text: string): boolean => ERROR_LINE.some((re) => re.test(text));

/** The first error line of a block of output (for a traceback: its last line, which names the exception). */
function firstErrorLine(text: string): string | null {
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    if (!isErrorLine(l)) continue;
    if (TRACEBACK.test(l)) {
      const exception = lines.slice(i + 1).find((x) => /^[A-Za-z_.]*(?:Error|Exception)\b/.test(x.trim()));
      if (exception) return exception.trim();
      continue;
    }
    return l.trim();
  }
  return null;
}

const EXIT_CODE = /\b(?:exit(?:ed)?(?: with)?(?: code| status)|exit_code|exitCode|returncode)["']?\s*[:=]?\s*(-?\d+)/i;

// ---- reading transcripts --------------------------------------------------------------------------

interface ToolCall {
  id: string | null;
  name: string;
  input: string;
  line: number;
}

interface ToolResult {
  callId: string | null;
  text: string;
  isError: boolean;
  line: number;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** Stable JSON (sorted keys) so that the same input is the same call whatever the key order. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (isObject(value)) return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  return JSON.stringify(value) ?? "null";
}

function textOf(content: unknown): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((c) => (typeof c === "string" ? c : isObject(c) ? textOf(c.text ?? c.content ?? "") : "")).join("\n");
  if (isObject(content)) return textOf(content.text ?? content.content ?? content.output ?? "");
  return "";
}

/** What a call ran, for shell-like tools: its command line; otherwise null. */
function commandOf(input: unknown): string | null {
  if (typeof input === "string") {
    try {
      return commandOf(JSON.parse(input));
    } catch {
      return null;
    }
  }
  if (!isObject(input)) return null;
  for (const key of ["command", "cmd", "script"]) {
    const v = input[key];
    if (typeof v === "string") return v;
    if (Array.isArray(v) && v.every((x) => typeof x === "string")) return v.join(" ");
  }
  return null;
}

/** The tool calls and results of a JSONL transcript (null when it is not one). */
export function parseJsonl(text: string): { calls: ToolCall[]; results: ToolResult[]; inputs: Map<string, unknown> } | null {
  const lines = text.split("\n");
  const nonEmpty = lines.filter((l) => l.trim().length > 0);
  if (nonEmpty.length === 0) return null;
  let parsed = 0;
  const calls: ToolCall[] = [];
  const results: ToolResult[] = [];
  const inputs = new Map<string, unknown>();
  lines.forEach((raw, i) => {
    const lineNo = i + 1;
    if (raw.trim().length === 0) return;
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      return;
    }
    if (!isObject(value)) return;
    parsed++;
    const message = isObject(value.message) ? value.message : value;
    const role = message.role ?? value.type;
    // OpenAI style: assistant tool_calls, then role "tool" results.
    if (Array.isArray(message.tool_calls)) {
      for (const call of message.tool_calls) {
        if (!isObject(call)) continue;
        const fn = isObject(call.function) ? call.function : call;
        const name = typeof fn.name === "string" ? fn.name : "tool";
        let input: unknown = fn.arguments ?? fn.input ?? {};
        if (typeof input === "string") {
          try {
            input = JSON.parse(input);
          } catch {
            // kept as the string it is
          }
        }
        const id = typeof call.id === "string" ? call.id : null;
        if (id) inputs.set(id, input);
        calls.push({ id, name, input: canonical(input), line: lineNo });
      }
    }
    if (role === "tool" || role === "function") {
      const text = textOf(message.content);
      results.push({ callId: typeof message.tool_call_id === "string" ? message.tool_call_id : null, text, isError: message.is_error === true, line: lineNo });
    }
    // Claude Code style: content blocks.
    if (Array.isArray(message.content)) {
      for (const block of message.content) {
        if (!isObject(block)) continue;
        if (block.type === "tool_use") {
          const id = typeof block.id === "string" ? block.id : null;
          if (id) inputs.set(id, block.input);
          calls.push({ id, name: typeof block.name === "string" ? block.name : "tool", input: canonical(block.input ?? {}), line: lineNo });
        } else if (block.type === "tool_result") {
          const extra = isObject(value.toolUseResult) ? `\n${textOf(value.toolUseResult.stderr ?? "")}` : "";
          results.push({ callId: typeof block.tool_use_id === "string" ? block.tool_use_id : null, text: textOf(block.content) + extra, isError: block.is_error === true, line: lineNo });
        }
      }
    }
  });
  // Mostly JSON lines: a transcript; a text with a stray JSON line is still text.
  return parsed >= Math.max(1, Math.ceil(nonEmpty.length * 0.8)) ? { calls, results, inputs } : null;
}

/** Every occurrence of a pattern in one transcript. Pure. */
export function occurrencesIn(text: string): Occurrence[] {
  const jsonl = parseJsonl(text);
  return jsonl ? jsonlOccurrences(jsonl) : plainOccurrences(text);
}

function jsonlOccurrences({ calls, results, inputs }: NonNullable<ReturnType<typeof parseJsonl>>): Occurrence[] {
  const out: Occurrence[] = [];
  const callById = new Map(calls.filter((c) => c.id !== null).map((c) => [c.id!, c]));
  const failedAt = new Map<ToolCall, number>();
  for (const result of results) {
    const call = result.callId ? callById.get(result.callId) : undefined;
    const errorLine = firstErrorLine(result.text);
    const exit = EXIT_CODE.exec(result.text);
    const failed = result.isError || (exit !== null && Number(exit[1]) !== 0) || errorLine !== null;
    if (!failed) continue;
    const from = call?.line ?? result.line;
    if (errorLine) out.push({ kind: "error", signature: normaliseSignature(errorLine), lines: [from, result.line], sample: errorLine });
    if (call) {
      failedAt.set(call, result.line);
      const command = commandOf(call.id ? inputs.get(call.id) : call.input);
      if (command) out.push({ kind: "command", signature: commandSignature(command), lines: [call.line, result.line], sample: command });
    }
  }
  // A retry: the same call again after that call failed.
  const failedBefore = new Map<string, number>();
  for (const call of calls) {
    const identity = `${call.name}\u0000${call.input}`;
    const earlier = failedBefore.get(identity);
    if (earlier !== undefined) {
      const command = commandOf(call.id ? inputs.get(call.id) : call.input);
      const shown = command ?? call.input;
      out.push({ kind: "retry", signature: command ? commandSignature(command) : `${call.name} ${normaliseSignature(call.input)}`, lines: [earlier, call.line], sample: shown });
    }
    if (failedAt.has(call)) failedBefore.set(identity, call.line);
  }
  return out;
}

/** A command line as a pattern: the same command run through any harness (Bash tool, shell tool, a prompt) is one pattern. */
const commandSignature = (command: string): string => `$ ${normaliseSignature(command)}`;

const PROMPT = /^\s*(?:\$|❯|>|#)\s+(\S.*)$/;

function plainOccurrences(text: string): Occurrence[] {
  const out: Occurrence[] = [];
  const lines = text.split("\n");
  let command: { text: string; line: number; failed: boolean } | null = null;
  const failedCommands = new Map<string, number>();
  const closeCommand = () => {
    if (command?.failed) failedCommands.set(command.text, command.line);
    command = null;
  };
  lines.forEach((raw, i) => {
    const lineNo = i + 1;
    const prompt = PROMPT.exec(raw);
    if (prompt && !isErrorLine(raw)) {
      closeCommand();
      const text = prompt[1]!.trim();
      const earlier = failedCommands.get(text);
      if (earlier !== undefined) out.push({ kind: "retry", signature: commandSignature(text), lines: [earlier, lineNo], sample: text });
      command = { text, line: lineNo, failed: false };
      return;
    }
    if (!isErrorLine(raw) || TRACEBACK.test(raw)) return;
    out.push({ kind: "error", signature: normaliseSignature(raw.trim()), lines: [lineNo, lineNo], sample: raw.trim() });
    const current = command as { text: string; line: number; failed: boolean } | null;
    if (current && !current.failed) {
      current.failed = true;
      out.push({ kind: "command", signature: commandSignature(current.text), lines: [current.line, lineNo], sample: current.text });
    }
  });
  closeCommand();
  return out;
}

// ---- aggregation ------------------------------------------------------------------------------------

export interface Pattern {
  kind: PatternKind;
  signature: string;
  /** Sessions it occurred in, in the order analysed. */
  sessions: string[];
  occurrences: number;
  spans: TranscriptSpan[];
}

/** Spans kept per session in a pattern's evidence: a reviewer needs a few, not all. */
const SPANS_PER_SESSION = 3;

/** Patterns over the transcripts, each with the sessions it occurred in. Pure. */
export function patternsOf(transcripts: readonly SessionTranscript[]): Pattern[] {
  const patterns = new Map<string, Pattern & { spansIn: Map<string, number> }>();
  for (const t of transcripts) {
    for (const o of occurrencesIn(t.text)) {
      if (o.signature.length === 0) continue;
      const id = `${o.kind}\u0000${o.signature}`;
      let p = patterns.get(id);
      if (!p) patterns.set(id, (p = { kind: o.kind, signature: o.signature, sessions: [], occurrences: 0, spans: [], spansIn: new Map() }));
      p.occurrences++;
      if (!p.sessions.includes(t.sessionId)) p.sessions.push(t.sessionId);
      const kept = p.spansIn.get(t.sessionId) ?? 0;
      if (kept < SPANS_PER_SESSION) {
        p.spansIn.set(t.sessionId, kept + 1);
        p.spans.push({ sessionId: t.sessionId, digest: t.ref.digest, lines: [Math.max(1, o.lines[0]), Math.max(1, o.lines[0], o.lines[1])] });
      }
    }
  }
  return [...patterns.values()].map(({ spansIn: _s, ...p }) => p);
}

const KIND_OF: Record<PatternKind, MemoryKind> = { error: "fragile", command: "procedure", retry: "procedure" };

export const signatureTag = (p: Pick<Pattern, "kind" | "signature">): string => `signature:${shortHash(`${p.kind}\u0000${p.signature}`, 12)}`;

function titleOf(p: Pattern): string {
  switch (p.kind) {
    case "error":
      return line(`Recurring error: ${p.signature}`, 200);
    case "command":
      return line(`Command that keeps failing: ${p.signature}`, 200);
    case "retry":
      return line(`Tool call agents keep retrying: ${p.signature}`, 200);
  }
}

function bodyOf(p: Pattern, analysed: number): string {
  const seen = `Seen in ${p.sessions.length} of the ${analysed} sessions analysed (${p.occurrences} times).`;
  switch (p.kind) {
    case "error":
      return `Agents keep running into this error:\n\n    ${p.signature}\n\n${seen} Placeholders stand for what varies (<path>, <n>, <hex>). Before working here, check what causes it; the transcript spans in the proposal's evidence show where it happened.`;
    case "command":
      return `This command failed in session after session:\n\n    ${p.signature}\n\n${seen} Find out what it needs before running it (setup, a running service, arguments), and write that down here.`;
    case "retry":
      return `Agents retried this exact tool call after it failed:\n\n    ${p.signature}\n\n${seen} Retrying the same call did not help; record what fixes the failure instead.`;
  }
}

export const signatureAnalyser: TranscriptAnalyser = {
  name: "signatures",
  async analyse(transcripts: readonly SessionTranscript[], ctx: PhaseContext): Promise<ProposalDraft[]> {
    const analysed = new Set(transcripts.map((t) => t.sessionId)).size;
    if (analysed === 0) return [];
    const known = new Set(activeMemories(ctx.view).flatMap((m) => m.version.tags.filter((t) => t.startsWith("signature:"))));
    const drafts: ProposalDraft[] = [];
    for (const p of patternsOf(transcripts)) {
      if (p.sessions.length < ctx.settings.learnMinSessions) continue;
      const tag = signatureTag(p);
      if (known.has(tag)) continue;
      const prevalence = p.sessions.length / analysed;
      drafts.push({
        key: `learn:signatures:${p.kind}:${tag.slice("signature:".length)}`,
        change: {
          action: "create",
          scope: "app",
          content: { title: titleOf(p), body: bodyOf(p, analysed), kind: KIND_OF[p.kind], tags: ["learned", `pattern:${p.kind}`, tag], paths: [], importance: prevalence >= 0.5 ? 4 : 3 },
        },
        evidence: evidence({
          sessions: p.sessions,
          transcripts: p.spans,
          counts: { sessions: p.sessions.length, occurrences: p.occurrences, analysedSessions: analysed, minSessions: ctx.settings.learnMinSessions },
          prevalence,
          summary: `${p.kind === "error" ? "Error signature" : p.kind === "command" ? "Failing command" : "Retried tool call"} "${p.signature}" in ${p.sessions.length} of ${analysed} sessions (${p.occurrences} occurrences)`,
        }),
        reason: line(`Learned from transcripts: ${p.kind === "error" ? "a recurring error" : p.kind === "command" ? "a command that keeps failing" : "a tool call agents keep retrying"} (${p.sessions.length} sessions)`),
      });
    }
    return byKey(drafts);
  },
};
