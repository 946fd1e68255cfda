import { activeVersionOf, memoryStatus, type MemoryState, type MemoryVersion } from "../../../commands/memory.js";
import type { SessionState } from "../../../commands/session.js";
import type { Evidence, MemoryRef, TranscriptSpan } from "../../../schemas/events.js";
import { LIMITS, type MemoryKind } from "../../../schemas/primitives.js";
import type { Phase, PhaseContext, ProposalDraft } from "../phase.js";

/**
 * The session-end review (issue 13 item 1, docs/candidates.md): for a run triggered by a session's end,
 * one proposal per candidate of that session still in force (`session:<id>`, active or awaiting
 * approval): `promote` it to a team or the app, or `supersede` it (discard: nothing is lost, the
 * candidate and the supersede stay in the log). Offline and deterministic: the same view gives the same
 * drafts, and every number the decision rests on is in the evidence, so a reviewer can check it.
 *
 * The heuristic, as points (CANDIDATE_RULES):
 *   kind        fragile, procedure, decision, convention +2; fact +1; note 0
 *   importance  importance - 3 (from -2 to +2)
 *   retrieved   +1 when search or hydrate returned it at least once (exposure receipts), +2 from 3 times
 *   transcript  +1 when the session's transcript mentions it (its id or its title)
 *   substance   -2 below 6 words of body, +1 from 25 words
 * Promoted at `promoteAt` points or more. Whatever its points, a candidate that says what an active shared
 * memory (app, a team) already says (word-set similarity at or above `duplicateAt`, or the same title) is
 * discarded as a duplicate, naming that memory.
 *
 * Target scope: a `team:<name>` tag on the candidate sends it to that team; otherwise the app (sessions
 * record no team for their agent).
 */

export const CANDIDATE_RULES = {
  kindPoints: { fragile: 2, procedure: 2, decision: 2, convention: 2, fact: 1, note: 0 } satisfies Record<MemoryKind, number>,
  thinWords: 6,
  thinPoints: -2,
  substantialWords: 25,
  substantialPoints: 1,
  promoteAt: 2,
  duplicateAt: 0.8,
} as const;

const SESSION_SCOPE = "session:";
const TEAM_TAG = /^team:([A-Za-z0-9_-]{1,64})$/;

/** A candidate is reviewed while it is in force: active, or proposed and awaiting approval. */
const inForce = (state: MemoryState) => ["active", "proposed"].includes(memoryStatus(state));
const isShared = (scope: string | null) => scope === "app" || (scope?.startsWith("team:") ?? false);

/** The version a candidate says: its active one, else the latest proposed. */
const shownVersion = (state: MemoryState): MemoryVersion | undefined => activeVersionOf(state) ?? state.versions.findLast((v) => v.status === "proposed");

const words = (text: string): string[] => text.toLowerCase().match(/[\p{L}\p{N}_]+/gu) ?? [];
/** The words that carry meaning (three letters or more), as a set, for near-duplicate checks. */
const wordSet = (text: string) => new Set(words(text).filter((w) => w.length >= 3));
const normalisedTitle = (title: string) => words(title).join(" ");

function jaccard(a: ReadonlySet<string>, b: ReadonlySet<string>): number {
  if (a.size === 0 && b.size === 0) return 0;
  let common = 0;
  for (const w of a) if (b.has(w)) common++;
  return common / (a.size + b.size - common);
}

const clip = (text: string, max: number) => (text.length <= max ? text : `${text.slice(0, max - 1)}…`);
const round = (n: number) => Math.round(n * 1000) / 1000;
const signed = (n: number) => (n > 0 ? `+${n}` : `${n}`);

interface SharedMemory {
  ref: MemoryRef;
  scope: string;
  title: string;
  normalisedTitle: string;
  words: Set<string>;
}

interface Transcript {
  span: { digest: string; lines: string[] };
}

/** One candidate's assessment: every term of the score, and the duplicate if any. */
export interface CandidateAssessment {
  memoryId: string;
  version: number;
  points: { kind: number; importance: number; retrieved: number; transcript: number; substance: number };
  score: number;
  words: number;
  retrievals: number;
  mentions: { count: number; first: number; last: number } | null;
  duplicate: { memoryId: string; version: number; scope: string; similarity: number } | null;
  decision: "promote" | "discard";
  target: string;
}

export function assessCandidate(
  memoryId: string,
  version: MemoryVersion,
  retrievals: number,
  transcriptLines: readonly string[] | null,
  shared: readonly SharedMemory[],
): CandidateAssessment {
  const rules = CANDIDATE_RULES;
  const bodyWords = words(version.body).length;
  const mine = wordSet(`${version.title} ${version.body}`);
  const title = normalisedTitle(version.title);
  let duplicate: CandidateAssessment["duplicate"] = null;
  for (const other of shared) {
    const similarity = other.normalisedTitle === title && title !== "" ? 1 : jaccard(mine, other.words);
    if (similarity >= rules.duplicateAt && (duplicate === null || similarity > duplicate.similarity)) {
      duplicate = { memoryId: other.ref.memoryId, version: other.ref.version, scope: other.scope, similarity: round(similarity) };
    }
  }
  let mentions: CandidateAssessment["mentions"] = null;
  if (transcriptLines) {
    const needleTitle = version.title.toLowerCase();
    let count = 0;
    let first = 0;
    let last = 0;
    for (const [i, line] of transcriptLines.entries()) {
      const lower = line.toLowerCase();
      if (!lower.includes(memoryId.toLowerCase()) && !lower.includes(needleTitle)) continue;
      count++;
      first ||= i + 1;
      last = i + 1;
    }
    if (count > 0) mentions = { count, first, last };
  }
  const points = {
    kind: rules.kindPoints[version.kind],
    importance: version.importance - 3,
    retrieved: retrievals >= 3 ? 2 : retrievals >= 1 ? 1 : 0,
    transcript: mentions ? 1 : 0,
    substance: bodyWords < rules.thinWords ? rules.thinPoints : bodyWords >= rules.substantialWords ? rules.substantialPoints : 0,
  };
  const score = points.kind + points.importance + points.retrieved + points.transcript + points.substance;
  const team = version.tags.map((t) => TEAM_TAG.exec(t)?.[1]).find((t) => t !== undefined);
  return {
    memoryId,
    version: version.version,
    points,
    score,
    words: bodyWords,
    retrievals,
    mentions,
    duplicate,
    decision: duplicate === null && score >= rules.promoteAt ? "promote" : "discard",
    target: team ? `team:${team}` : "app",
  };
}

function explain(a: CandidateAssessment, version: MemoryVersion): string {
  const terms = [
    `${version.kind} ${signed(a.points.kind)}`,
    `importance ${version.importance} ${signed(a.points.importance)}`,
    `${a.retrievals === 0 ? "never retrieved" : `retrieved ${a.retrievals} time${a.retrievals === 1 ? "" : "s"}`} ${signed(a.points.retrieved)}`,
    `${a.mentions ? `mentioned on ${a.mentions.count} transcript line${a.mentions.count === 1 ? "" : "s"}` : "not in the transcript"} ${signed(a.points.transcript)}`,
    `${a.words} word${a.words === 1 ? "" : "s"} of body ${signed(a.points.substance)}`,
  ].join(", ");
  return `${terms}: score ${a.score}`;
}

function reasonOf(a: CandidateAssessment, version: MemoryVersion): string {
  const why = explain(a, version);
  if (a.duplicate) {
    return clip(
      `Discard: active memory ${a.duplicate.memoryId} (v${a.duplicate.version}, ${a.duplicate.scope}) already says this (similarity ${a.duplicate.similarity} >= ${CANDIDATE_RULES.duplicateAt}); ${why}. The candidate is superseded and stays in the log.`,
      LIMITS.reasonLength,
    );
  }
  if (a.decision === "promote") {
    return clip(`Promote to ${a.target}${a.target === "app" ? "" : " (its tag)"}: ${why} >= ${CANDIDATE_RULES.promoteAt}.`, LIMITS.reasonLength);
  }
  return clip(`Discard: ${why} < ${CANDIDATE_RULES.promoteAt}, not enough to share beyond the session. The candidate is superseded and stays in the log.`, LIMITS.reasonLength);
}

function evidenceOf(
  a: CandidateAssessment,
  version: MemoryVersion,
  sessionId: string,
  session: SessionState | null,
  transcript: Transcript | null,
  candidates: number,
): Evidence {
  const transcripts: TranscriptSpan[] = [];
  if (transcript && transcript.span.lines.length > 0) {
    // The lines that mention the candidate, else the whole transcript: where a reviewer starts reading.
    const lines: [number, number] = a.mentions ? [a.mentions.first, a.mentions.last] : [1, transcript.span.lines.length];
    transcripts.push({ sessionId, digest: transcript.span.digest, lines });
  }
  const memories: MemoryRef[] = [{ memoryId: a.memoryId, version: a.version }];
  if (a.duplicate) memories.push({ memoryId: a.duplicate.memoryId, version: a.duplicate.version });
  const where = session ? `agent ${session.agentId ?? "?"}${session.worktree ? `, worktree ${session.worktree}` : ""}` : "session not found";
  return {
    sessions: [sessionId],
    transcripts,
    memories,
    counts: {
      words: a.words,
      importance: version.importance,
      retrievals: a.retrievals,
      transcriptMentions: a.mentions?.count ?? 0,
      transcriptLines: transcript?.span.lines.length ?? 0,
      candidatesInSession: candidates,
    },
    prevalence: null,
    scores: {
      score: a.score,
      promoteAt: CANDIDATE_RULES.promoteAt,
      kindPoints: a.points.kind,
      importancePoints: a.points.importance,
      retrievedPoints: a.points.retrieved,
      transcriptPoints: a.points.transcript,
      substancePoints: a.points.substance,
      ...(a.duplicate ? { duplicateSimilarity: a.duplicate.similarity } : {}),
    },
    summary: clip(
      `Candidate "${version.title}" of session ${sessionId} (${where}${session?.transcript ? `, transcript ${session.transcript.digest.slice(0, 19)}` : ", no transcript"}): ${explain(a, version)}`,
      LIMITS.reasonLength,
    ),
  };
}

async function transcriptOf(ctx: PhaseContext, session: SessionState | null): Promise<Transcript | null> {
  if (!session?.transcript) return null;
  try {
    const text = await ctx.readTranscript(session.transcript);
    return { span: { digest: session.transcript.digest, lines: text.split(/\r?\n/) } };
  } catch {
    // A transcript that cannot be read is no evidence either way; the other terms still decide.
    return null;
  }
}

export const candidatesPhase: Phase = {
  name: "candidates",
  async propose(ctx: PhaseContext): Promise<ProposalDraft[]> {
    if (ctx.trigger.kind !== "session_end") return [];
    const { sessionId } = ctx.trigger;
    const scope = `${SESSION_SCOPE}${sessionId}`;
    const { view } = ctx;
    const candidates = [...view.memories]
      .filter(([, m]) => m.state.scope === scope && inForce(m.state))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    if (candidates.length === 0) return [];
    const session = view.sessions.get(sessionId)?.state ?? null;
    const transcript = await transcriptOf(ctx, session);
    const shared: SharedMemory[] = [];
    for (const [id, m] of view.memories) {
      if (!isShared(m.state.scope) || memoryStatus(m.state) !== "active") continue;
      const active = activeVersionOf(m.state)!;
      shared.push({
        ref: { memoryId: id, version: active.version },
        scope: m.state.scope!,
        title: active.title,
        normalisedTitle: normalisedTitle(active.title),
        words: wordSet(`${active.title} ${active.body}`),
      });
    }
    shared.sort((a, b) => (a.ref.memoryId < b.ref.memoryId ? -1 : 1));

    const drafts: ProposalDraft[] = [];
    for (const [memoryId, m] of candidates) {
      const version = shownVersion(m.state);
      if (!version) continue;
      const a = assessCandidate(memoryId, version, view.retrievals.get(memoryId)?.count ?? 0, transcript?.span.lines ?? null, shared);
      const ref = { memoryId, version: version.version };
      drafts.push({
        key: `candidate:${memoryId}`,
        change:
          a.decision === "promote"
            ? {
                action: "promote",
                candidate: ref,
                scope: a.target,
                content: { title: version.title, body: version.body, kind: version.kind, tags: [...version.tags], paths: [...version.paths], importance: version.importance },
              }
            : { action: "supersede", memory: ref },
        evidence: evidenceOf(a, version, sessionId, session, transcript, candidates.length),
        reason: reasonOf(a, version),
      });
    }
    return drafts;
  },
};
