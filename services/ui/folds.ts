import { memoryDecider, type MemoryState, type MemoryVersion } from "../../commands/memory.js";
import type { Evidence, MemoryEvent, ProposedChange } from "../../schemas/events.js";
import type { Actor } from "../../schemas/primitives.js";
import type { LogEntry } from "../client.js";

/**
 * What the review page folds from an app's log, kept between requests.
 *
 * The page reads an app's log once and then only what is new (UiLedger.log); each fold here remembers how
 * far into that log it has folded and, on the next request, folds only the entries after it. Before,
 * every request folded the whole log again: a queue request cost time in proportion to the app's
 * history rather than to what changed since the last one. Pure: no I/O, the entries come from the caller.
 */
abstract class LogFold {
  /** Entries of the log folded so far (the log only grows). */
  private folded = 0;

  /** Folds the entries after the last one folded. */
  advance(entries: readonly LogEntry[]): this {
    for (; this.folded < entries.length; this.folded++) this.fold(entries[this.folded]!);
    return this;
  }

  protected abstract fold(entry: LogEntry): void;
}

/** A memory with a pending version, as the queue lists it. */
export interface Waiting {
  memoryId: string;
  state: MemoryState;
  /** The memory subject's last sequence as read. */
  seq: number;
  pending: MemoryVersion;
  /** The `memory.proposed` entry of the pending version (branch, worktree, transcript, org provenance). */
  proposed: LogEntry | undefined;
}

/** Every memory folded with the memory decider's own evolve, and which of them have a pending version. */
export class QueueFold extends LogFold {
  private readonly memories = new Map<string, { state: MemoryState; seq: number }>();
  /** `memory.proposed` entries by event id (a version's `eventId`). */
  private readonly proposals = new Map<string, LogEntry>();
  /** Memories with a pending version that are not superseded (a superseded memory's pending versions wait for nobody). */
  private readonly withPending = new Set<string>();

  protected fold(e: LogEntry): void {
    if (!e.type.startsWith("memory.") || e.type.startsWith("memory.promotion_")) return;
    const current = this.memories.get(e.aggregateId) ?? { state: memoryDecider.initialState(), seq: 0 };
    const state = memoryDecider.evolve(current.state, e as MemoryEvent);
    this.memories.set(e.aggregateId, { state, seq: e.seq });
    if (e.type === "memory.proposed") this.proposals.set(e.id, e);
    if (!state.superseded && state.versions.some((v) => v.status === "proposed")) this.withPending.add(e.aggregateId);
    else this.withPending.delete(e.aggregateId);
  }

  /** Every pending version, oldest proposal first (proposals of the same millisecond in log order). */
  waiting(): Waiting[] {
    const out: Waiting[] = [];
    for (const memoryId of this.withPending) {
      const { state, seq } = this.memories.get(memoryId)!;
      for (const pending of state.versions) {
        if (pending.status === "proposed") out.push({ memoryId, state, seq, pending, proposed: this.proposals.get(pending.eventId) });
      }
    }
    return out.sort((a, b) => a.pending.proposedAt.localeCompare(b.pending.proposedAt) || (a.proposed?.seq ?? 0) - (b.proposed?.seq ?? 0));
  }
}

export type ProposalStatus = "pending" | "accepted" | "applied" | "rejected" | "reverted";

export interface ProposalView {
  proposalId: string;
  runId: string;
  phase: string;
  key: string;
  change: ProposedChange;
  evidence: Evidence;
  reason: string;
  status: ProposalStatus;
  madeAt: string;
  decidedBy: Actor | null;
  decisionReason: string | null;
  seq: number;
}

export interface RunView {
  runId: string;
  startedAt: string;
  trigger: string;
  phases: string[];
  asOfSeq: number | null;
  status: "running" | "completed" | "reverted";
  steps: { phase: string; proposals: number; report: string | null }[];
  revertReason: string | null;
  proposals: ProposalView[];
  seq: number;
}

/** Consolidation runs and their proposals, from the run.* and proposal.* events. */
export class RunsFold extends LogFold {
  private readonly runs = new Map<string, RunView>();
  private readonly proposals = new Map<string, ProposalView>();

  protected fold(e: LogEntry): void {
    if (e.type.startsWith("run.")) return this.foldRun(e);
    if (e.type.startsWith("proposal.")) this.foldProposal(e);
  }

  /** The runs, the one changed last first; copies, so that what a caller renders does not change under it. */
  list(): RunView[] {
    return [...this.runs.values()]
      .sort((a, b) => b.seq - a.seq)
      .map((run) => ({ ...run, steps: [...run.steps], proposals: run.proposals.map((p) => ({ ...p })) }));
  }

  private foldRun(e: LogEntry): void {
    if (e.type === "run.started") {
      const trigger = e.data.trigger.kind === "dream" ? `dream${e.data.trigger.forced ? " (forced)" : ""}` : `end of session ${e.data.trigger.sessionId}`;
      this.runs.set(e.aggregateId, { runId: e.aggregateId, startedAt: e.time, trigger, phases: e.data.phases, asOfSeq: e.data.asOfSeq, status: "running", steps: [], revertReason: null, proposals: [], seq: e.seq });
      return;
    }
    const run = this.runs.get(e.aggregateId);
    if (!run) return;
    run.seq = e.seq;
    if (e.type === "run.step_completed") run.steps.push({ phase: e.data.phase, proposals: e.data.proposals, report: e.data.report });
    else if (e.type === "run.completed") run.status = "completed";
    else if (e.type === "run.reverted") {
      run.status = "reverted";
      run.revertReason = e.data.reason;
    }
  }

  private foldProposal(e: LogEntry): void {
    if (e.type === "proposal.made") {
      const view: ProposalView = {
        proposalId: e.aggregateId,
        runId: e.data.runId,
        phase: e.data.phase,
        key: e.data.key,
        change: e.data.change,
        evidence: e.data.evidence,
        reason: e.data.reason,
        status: "pending",
        madeAt: e.time,
        decidedBy: null,
        decisionReason: null,
        seq: e.seq,
      };
      this.proposals.set(e.aggregateId, view);
      this.runs.get(e.data.runId)?.proposals.push(view);
      return;
    }
    const view = this.proposals.get(e.aggregateId);
    if (!view) return;
    view.seq = e.seq;
    if (e.type === "proposal.accepted") {
      view.status = "accepted";
      view.decidedBy = e.actor;
      view.decisionReason = e.data.reason;
    } else if (e.type === "proposal.applied") view.status = "applied";
    else if (e.type === "proposal.rejected") {
      view.status = "rejected";
      view.decidedBy = e.actor;
      view.decisionReason = e.data.reason;
    } else if (e.type === "proposal.reverted") view.status = "reverted";
  }
}
