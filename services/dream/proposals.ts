import { createHash } from "node:crypto";
import { activeVersionOf, contentOfVersion, memoryStatus, type MemoryState, type MemoryVersion } from "../../commands/memory.js";
import { Evidence, type MemoryRef, type ProposedChange, type TranscriptSpan } from "../../schemas/events.js";
import { LIMITS } from "../../schemas/primitives.js";
import type { DreamView, ProposalDraft } from "./phase.js";

/**
 * What every phase needs to turn findings into drafts that pass the event schema: evidence clamped to the
 * schema's list limits (the totals stay in `counts`, so a reviewer sees what was left out), one-line
 * text cut to its limit, content cut to the memory limits, stable short hashes for keys.
 */

/** The schema's list limits on Evidence (schemas/events.ts). */
export const EVIDENCE_LIMITS = { sessions: 1000, transcripts: 200, memories: 200 } as const;

const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

/** One line of at most `max` characters: control characters become spaces, a cut is marked. */
export function line(text: string, max: number = LIMITS.reasonLength): string {
  const flat = text.replace(CONTROL, " ").replace(/ {2,}/g, " ").trim();
  const chars = Array.from(flat);
  return chars.length <= max ? flat : `${chars.slice(0, max - 1).join("")}…`;
}

/** A short, stable hash for keys and tags. */
export const shortHash = (text: string, length = 16): string => createHash("sha256").update(text).digest("hex").slice(0, length);

export interface EvidenceInput {
  sessions?: readonly string[];
  transcripts?: readonly TranscriptSpan[];
  memories?: readonly MemoryRef[];
  counts?: Record<string, number>;
  prevalence?: number | null;
  scores?: Record<string, number>;
  summary: string;
}

/**
 * Evidence within the schema's limits. A list longer than its limit is cut, and `counts` then says how
 * many there were (`sessionsTotal`, `transcriptsTotal`, `memoriesTotal`). Counts are whole numbers >= 0.
 */
export function evidence(input: EvidenceInput): Evidence {
  const counts: Record<string, number> = {};
  for (const [name, value] of Object.entries(input.counts ?? {})) counts[name.slice(0, 64)] = Math.max(0, Math.round(value));
  const clamp = <T>(list: readonly T[] | undefined, name: keyof typeof EVIDENCE_LIMITS): T[] => {
    const all = list ?? [];
    if (all.length > EVIDENCE_LIMITS[name]) counts[`${name}Total`] = all.length;
    return all.slice(0, EVIDENCE_LIMITS[name]);
  };
  const scores: Record<string, number> = {};
  for (const [name, value] of Object.entries(input.scores ?? {})) if (Number.isFinite(value)) scores[name.slice(0, 64)] = round(value);
  const prevalence = input.prevalence === null || input.prevalence === undefined ? null : Math.min(1, Math.max(0, round(input.prevalence)));
  return Evidence.parse({
    sessions: clamp(input.sessions, "sessions"),
    transcripts: clamp(input.transcripts, "transcripts"),
    memories: clamp(input.memories, "memories"),
    counts,
    prevalence,
    scores,
    summary: line(input.summary),
  });
}

/** Four decimals: enough for a reviewer, and the same number on every run over the same view. */
export const round = (x: number): number => Math.round(x * 10_000) / 10_000;

/** An active memory of the view with its active version. */
export interface ActiveMemory {
  id: string;
  scope: string;
  state: MemoryState;
  version: MemoryVersion;
  /** Stream sequence of the memory's last event. */
  seq: number;
}

/**
 * Active memories a run may consolidate, by id (a deterministic order). Session candidates
 * (`session:<id>`) are the session-end review's, not the dream's.
 */
export function activeMemories(view: DreamView): ActiveMemory[] {
  const out: ActiveMemory[] = [];
  for (const [id, { state, seq }] of view.memories) {
    if (memoryStatus(state) !== "active" || state.scope === null || state.scope.startsWith("session:")) continue;
    const version = activeVersionOf(state);
    if (version) out.push({ id, scope: state.scope, state, version, seq });
  }
  return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

export const refOf = (memory: Pick<ActiveMemory, "id" | "version">): MemoryRef => ({ memoryId: memory.id, version: memory.version.version });

/** When a version took force (approved), else when it was proposed. */
export const versionTime = (version: MemoryVersion): string => version.decidedAt ?? version.proposedAt;

export const DAY_MS = 24 * 60 * 60 * 1000;

/** A memory's content as a proposal writes it, from a version (optionally changed). */
export function contentOf(version: MemoryVersion, changes: Partial<Extract<ProposedChange, { action: "revise" }>["content"]> = {}): Extract<ProposedChange, { action: "revise" }>["content"] {
  return { ...contentOfVersion(version), ...changes };
}

/** A markdown body cut to the memory limit (bytes), at a line break when it can be. */
export function clampBody(body: string, maxBytes: number = LIMITS.bodyBytes): string {
  if (Buffer.byteLength(body, "utf8") <= maxBytes) return body;
  const note = "\n\n…(cut to the memory size limit)";
  let cut = body;
  while (Buffer.byteLength(cut, "utf8") + Buffer.byteLength(note, "utf8") > maxBytes) cut = cut.slice(0, Math.floor(cut.length * 0.9));
  const lastBreak = cut.lastIndexOf("\n");
  return `${lastBreak > cut.length / 2 ? cut.slice(0, lastBreak) : cut}${note}`;
}

/** Drafts with duplicate keys collapsed (the first wins) and sorted by key: the same list for the same view. */
export function byKey(drafts: readonly ProposalDraft[]): ProposalDraft[] {
  const seen = new Map<string, ProposalDraft>();
  for (const draft of drafts) if (!seen.has(draft.key)) seen.set(draft.key, draft);
  return [...seen.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}
