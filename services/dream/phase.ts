import type { MemoryState } from "../../commands/memory.js";
import type { SessionState } from "../../commands/session.js";
import type { Evidence, PhaseName, ProposedChange, RunTrigger, TranscriptRef } from "../../schemas/events.js";
import type { Embedder } from "../../projections/embedder.js";

/**
 * The contract between a consolidation run (services/dream/runner.ts: gates, lock, durable steps, the
 * run's events) and its phases (services/dream/phases/*): a phase reads the app as the log stood at the
 * run's `asOfSeq` and returns proposal drafts; it never writes. The runner derives each proposal's id from
 * the run, the phase and the draft's `key` and appends it with expected sequence 0, so a phase run twice
 * (a resumed step) must return the same keys for the same view.
 */

/** The app folded from its stream up to the run's `asOfSeq`, with the deciders' own evolve (services/dream/view.ts). */
export interface DreamView {
  app: string;
  asOfSeq: number;
  /** Every memory of the app, by id: its state and the sequence of its last event. */
  memories: ReadonlyMap<string, { state: MemoryState; seq: number }>;
  /** Every session of the app, by id. */
  sessions: ReadonlyMap<string, { state: SessionState; seq: number }>;
  /** Sessions that ended after the last completed dream run (all ended sessions when there was none), oldest first. */
  sessionsSinceLastRun: readonly string[];
  /** From exposure receipts (`session.exposed`): how often each memory was returned, and when last. */
  retrievals: ReadonlyMap<string, { count: number; last: string }>;
  /** The last completed `dream` run (session-end reviews do not count), or null. */
  lastRun: { runId: string; completedAt: string; completedSeq: number } | null;
}

/** Thresholds and switches; every one has a default (DEFAULT_DREAM_SETTINGS) and is recorded in `run.started`. */
export interface DreamSettings {
  /** Gates of a scheduled run. */
  minHoursSinceLastRun: number;
  minSessionsSinceLastRun: number;
  /** prune: a repository to check memories' paths against (git-aware: tracked files), or null to skip that check. */
  repoDir: string | null;
  /** prune: memories never retrieved and older than this many days. */
  neverRetrievedDays: number;
  /** merge: hybrid similarity at or above which two active memories are near-duplicates. */
  mergeSimilarity: number;
  /** learn: a pattern must recur in at least this many sessions. */
  learnMinSessions: number;
  /** learn: the LLM analyser, when an OpenAI-compatible endpoint is configured (MEMLEDGER_LLM_URL). */
  llm: { url: string; model: string; apiKey: string | null; guidanceFile: string | null; parallelism: number } | null;
}

export const DEFAULT_DREAM_SETTINGS: DreamSettings = {
  minHoursSinceLastRun: 24,
  minSessionsSinceLastRun: 5,
  repoDir: null,
  neverRetrievedDays: 90,
  mergeSimilarity: 0.9,
  learnMinSessions: 3,
  llm: null,
};

export interface PhaseContext {
  app: string;
  runId: string;
  trigger: RunTrigger;
  /** The run's start time (from `run.started`), so "older than", "yesterday" and the like are the same on a resume. */
  now: Date;
  settings: DreamSettings;
  view: DreamView;
  /** A stored transcript's bytes as text (services/transcripts.ts). */
  readTranscript(ref: TranscriptRef): Promise<string>;
  /** For hybrid similarity (merge); absent when the app runs without vectors (BM25 only). */
  embedder?: Embedder;
  signal?: AbortSignal;
}

/** What a phase proposes; the runner turns it into a `proposal.made` event. */
export interface ProposalDraft {
  /** Stable for the same view: the proposal id is derived from run id, phase and key. */
  key: string;
  change: ProposedChange;
  evidence: Evidence;
  reason: string;
}

export interface Phase {
  readonly name: PhaseName;
  propose(ctx: PhaseContext): Promise<ProposalDraft[]>;
}

/** A transcript of one session, read for the learn phase's analysers. */
export interface SessionTranscript {
  sessionId: string;
  agentId: string | null;
  ref: TranscriptRef;
  text: string;
}

/** One way of learning from transcripts (the offline signature analyser, the LLM analyser): same drafts. */
export interface TranscriptAnalyser {
  readonly name: string;
  analyse(transcripts: readonly SessionTranscript[], ctx: PhaseContext): Promise<ProposalDraft[]>;
}
