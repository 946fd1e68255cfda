import { memoryDecider, memoryStatus, type MemoryCommand, type MemoryState } from "../../commands/memory.js";
import { proposalDecider, type ProposalState, type ProposalStatus } from "../../commands/proposal.js";
import { fold } from "../../commands/decider.js";
import { runDecider, runStatus, type RunState, type RunStatus } from "../../commands/run.js";
import type { MemoryRef, PhaseName, ProposalEvent, ProposedChange, WrittenEvent } from "../../schemas/events.js";
import { ConflictReason, MemledgerError, conflict, forbidden, invalid, notFound } from "../../schemas/errors.js";
import { LIMITS, type Actor } from "../../schemas/primitives.js";
import { authorize, type Policy } from "../../schemas/policy.js";
import type { CommandContext, CommandHandler } from "../command-handler.js";
import type { EventStore } from "../event-store.js";
import { readFiltered, readRuns } from "./gates.js";
import { derivedEventId } from "./runner.js";

/**
 * Review of a consolidation run (issue 13 item 5): show it, accept or reject its proposals (some or all),
 * revert it. Accepting writes ordinary memory events through the CommandHandler, each under an id derived
 * from the proposal (a crash mid-apply and a retry never write one twice; a retried accept finishes
 * applying), caused by the proposal's `proposal.accepted` event and correlated with the run:
 *
 *   supersede  memory.superseded                              revert: memory.reinstated
 *   merge      new memory proposed + approved, each source      revert: the merged one superseded, the
 *              superseded by it                                        sources reinstated
 *   revise     new version proposed + approved                 revert: rolled back to the version seen
 *   create     new memory proposed + approved                  revert: superseded
 *   promote    new memory proposed + approved, the candidate    revert: the new one superseded, the
 *              superseded by it                                        candidate reinstated
 *   flag       nothing (accepting records the human's ack)     revert: nothing
 *
 * Nothing is ever deleted: a prune is a supersede, and a revert adds compensating events.
 *
 * A proposal whose memory moved since the run saw it (its in-force version is no longer the one the
 * proposal names, or it was superseded) is refused (conflict, reason memory_moved) and nothing is written
 * for it. Who may accept, reject or revert: the policy's `dream` verb (schemas/policy.ts; by default humans).
 */

export interface ReviewDeps {
  store: EventStore;
  handler: CommandHandler;
  policy?: Policy;
}

export interface ProposalView {
  proposalId: string;
  runId: string;
  phase: PhaseName;
  key: string;
  status: ProposalStatus;
  change: ProposedChange;
  evidence: ProposalState["evidence"];
  reason: string;
  madeAt: string;
  decision: ProposalState["decision"];
  written: WrittenEvent[];
  compensated: WrittenEvent[];
}

export interface RunView {
  runId: string;
  app: string;
  status: RunStatus;
  trigger: RunState["trigger"];
  phases: PhaseName[];
  asOfSeq: number;
  holder: string | null;
  startedAt: string | null;
  gates: RunState["gates"];
  settings: RunState["settings"];
  steps: RunState["steps"];
  completed: RunState["completed"];
  reverted: RunState["reverted"];
  /** Sequence of the run's last event. */
  seq: number;
  proposals: ProposalView[];
  /** How many proposals the run has (`proposals` may be one page of them: the dream_show verb's). */
  proposalsTotal: number;
  /** The index where the next page of proposals starts, null when `proposals` reaches the last one. */
  proposalsNext: number | null;
}

export interface ItemOutcome {
  proposalId: string;
  /** applied (accept), rejected, reverted, or refused (nothing was written for it). */
  outcome: "applied" | "rejected" | "reverted" | "refused";
  status: ProposalStatus;
  events: WrittenEvent[];
  error?: { code: string; message: string; details?: Record<string, unknown> };
}

export interface ReviewResult {
  runId: string;
  app: string;
  results: ItemOutcome[];
}

export interface RevertResult extends ReviewResult {
  /** True when the run had been reverted before (this call wrote nothing new). */
  replayed: boolean;
}

const DREAM_SCOPE = "app";

/** Throws `forbidden` unless the policy lets `actor` review consolidation runs (the `dream` verb). */
export function requireDreamReviewer(policy: Policy | undefined, actor: Actor, what: string): void {
  if (!policy) return;
  const decision = authorize(policy, actor, "dream", DREAM_SCOPE);
  if (!decision.allowed) {
    throw forbidden(`${actor.kind}:${actor.id} may not ${what}: the policy does not allow the dream verb (${decision.reason})`, {
      actor,
      verb: "dream",
      roles: decision.roles,
      missing: decision.missing,
    });
  }
}

const toView = (state: ProposalState): ProposalView => ({
  proposalId: state.id!,
  runId: state.runId!,
  phase: state.phase!,
  key: state.key!,
  status: state.status,
  change: state.change!,
  evidence: state.evidence,
  reason: state.reason!,
  madeAt: state.madeAt!,
  decision: state.decision,
  written: state.written,
  compensated: state.compensated,
});

async function loadRun(deps: ReviewDeps, app: string, runId: string): Promise<{ state: RunState; seq: number; startedSeq: number }> {
  const loaded = await deps.handler.load(runDecider, app, runId).catch((err) => {
    if (err instanceof MemledgerError && err.code === "not_found") throw notFound(`no run ${runId} in app ${app}`, { runId });
    throw err;
  });
  if (loaded.state.id === null) throw notFound(`no run ${runId} in app ${app}`, { runId });
  const startedSeq = (loaded.state.startedEventId && loaded.seqOf.get(loaded.state.startedEventId)) || 1;
  return { state: loaded.state, seq: loaded.seq, startedSeq };
}

/** Every proposal of the run, folded from the proposal subjects (they all follow the run's start). */
async function proposalsOf(deps: ReviewDeps, app: string, runId: string, startedSeq: number): Promise<ProposalState[]> {
  const byId = new Map<string, ProposalEvent[]>();
  for await (const stored of readFiltered(deps.store, app, deps.store.names.aggregates(app, "proposal"), startedSeq)) {
    const event = stored.event as ProposalEvent;
    if (event.data.runId !== runId) continue;
    let list = byId.get(event.aggregateId);
    if (!list) byId.set(event.aggregateId, (list = []));
    list.push(event);
  }
  return [...byId.values()].map((events) => fold(proposalDecider, events)).filter((s) => s.id !== null && s.status !== "unknown");
}

/** A run with its proposals, their evidence and their status. */
export async function showRun(deps: ReviewDeps, app: string, runId: string): Promise<RunView> {
  const run = await loadRun(deps, app, runId);
  const proposals = await proposalsOf(deps, app, runId, run.startedSeq);
  const s = run.state;
  return {
    runId,
    app,
    status: runStatus(s),
    trigger: s.trigger,
    phases: s.phases,
    asOfSeq: s.asOfSeq,
    holder: s.holder,
    startedAt: s.startedAt,
    gates: s.gates,
    settings: s.settings,
    steps: s.steps,
    completed: s.completed,
    reverted: s.reverted,
    seq: run.seq,
    proposals: proposals.map(toView),
    proposalsTotal: proposals.length,
    proposalsNext: null,
  };
}

export interface RunSummary {
  runId: string;
  status: RunStatus;
  trigger: RunState["trigger"];
  startedAt: string | null;
  completedAt: string | null;
  proposals: Partial<Record<PhaseName, number>>;
}

/** The app's runs, newest first. */
export async function listRuns(deps: Pick<ReviewDeps, "store">, app: string, limit = 20): Promise<RunSummary[]> {
  const runs = await readRuns(deps.store, app);
  return runs
    .reverse()
    .slice(0, limit)
    .map((r) => ({
      runId: r.state.id!,
      status: runStatus(r.state),
      trigger: r.state.trigger,
      startedAt: r.state.startedAt,
      completedAt: r.state.completed?.at ?? null,
      proposals: r.state.completed?.proposals ?? Object.fromEntries(r.state.steps.map((st) => [st.phase, st.proposals])),
    }));
}

function requireReviewable(run: RunState): void {
  if (run.reverted) throw conflict(`run ${run.id} was reverted: its proposals can no longer be decided`, { reason: ConflictReason.run_reverted });
  if (!run.completed) throw conflict(`run ${run.id} has not completed yet`, { reason: ConflictReason.run_not_completed });
}

/** The run's proposals named (each must be the run's), or all of them. */
function select(all: ProposalState[], runId: string, ids: readonly string[] | undefined): (ProposalState | string)[] {
  if (!ids || ids.length === 0) return all;
  const byId = new Map(all.map((p) => [p.id!, p]));
  return [...new Set(ids)].map((id) => byId.get(id) ?? id);
}

const wireError = (err: unknown): ItemOutcome["error"] =>
  err instanceof MemledgerError ? { code: err.code, message: err.message, details: err.details } : { code: "internal", message: String(err) };

const reasonLine = (text: string): string => {
  const flat = text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, " ").trim();
  return flat.length <= LIMITS.reasonLength ? flat : `${flat.slice(0, LIMITS.reasonLength - 1)}…`;
};

/** The memory a new-memory change (merge, create, promote) creates: derived from the proposal. */
export const newMemoryIdOf = (proposalId: string): string => derivedEventId(proposalId, "memory");

/** The version a memory is in force at: its active version, or (a candidate not yet approved) its latest proposed one. */
const inForceVersion = (state: MemoryState): number | null => state.activeVersion ?? state.versions.findLast((v) => v.status === "proposed")?.version ?? null;

/** The memories a change acts on, as the proposal saw them. */
function refsOf(change: ProposedChange): MemoryRef[] {
  switch (change.action) {
    case "supersede":
      return [change.memory];
    case "merge":
      return change.sources;
    case "revise":
      return [change.memory];
    case "promote":
      return [change.candidate];
    case "create":
      return [];
    case "flag":
      return change.memories;
  }
}

/** Refuses (memory_moved) when any memory the change acts on is no longer where the proposal saw it. */
async function requireUnmoved(deps: ReviewDeps, app: string, proposalId: string, change: ProposedChange): Promise<void> {
  for (const ref of refsOf(change)) {
    const { state } = await deps.handler.load(memoryDecider, app, ref.memoryId);
    const status = memoryStatus(state);
    const current = state.superseded ? null : inForceVersion(state);
    if (status === "unknown" || state.superseded || current !== ref.version) {
      throw conflict(`proposal ${proposalId}: memory ${ref.memoryId} moved since the run saw it at version ${ref.version} (now ${status}${current !== null ? ` at version ${current}` : ""}); nothing was applied`, {
        reason: ConflictReason.memory_moved,
        memoryId: ref.memoryId,
        expectedVersion: ref.version,
        currentVersion: current,
        status,
      });
    }
  }
}

type Step = { memoryId: string; command: MemoryCommand; isNew?: boolean; approveOf?: number; tolerate?: ConflictReason[] };

/** Runs memory commands in order under derived event ids; an approve step approves what step `approveOf` proposed. */
async function writeSteps(deps: ReviewDeps, ctx: CommandContext, proposalId: string, label: "apply" | "revert", steps: Step[]): Promise<WrittenEvent[]> {
  const written: WrittenEvent[] = [];
  const versions: (number | null)[] = [];
  for (const [i, step] of steps.entries()) {
    let command = step.command;
    if (step.approveOf !== undefined) command = { type: "approve", version: versions[step.approveOf] ?? undefined };
    try {
      const executed = await deps.handler.execute(memoryDecider, step.memoryId, command, ctx, {
        isNew: step.isNew ?? false,
        eventId: derivedEventId(proposalId, label, String(i)),
      });
      versions[i] = (executed.event.data as { version?: number }).version ?? null;
      written.push({ memoryId: step.memoryId, eventId: executed.event.id, seq: executed.seq, type: executed.event.type });
    } catch (err) {
      // A compensation someone already made by hand (the memory is already in force, already superseded): nothing to write.
      const reason = err instanceof MemledgerError ? (err.details.reason as ConflictReason | undefined) : undefined;
      if (reason && step.tolerate?.includes(reason)) {
        versions[i] = null;
        continue;
      }
      throw err;
    }
  }
  return written;
}

function applySteps(proposal: ProposalState): Step[] {
  const change = proposal.change!;
  const reason = reasonLine(`consolidation run ${proposal.runId} (${proposal.phase}): ${proposal.reason}`);
  const created = newMemoryIdOf(proposal.id!);
  const propose = (scope: string, content: Extract<ProposedChange, { content: unknown }>["content"]): Step => ({
    memoryId: created,
    command: { type: "propose", revision: false, scope, ...content },
    isNew: true,
  });
  switch (change.action) {
    case "supersede":
      return [{ memoryId: change.memory.memoryId, command: { type: "supersede", by: null, reason } }];
    case "merge":
      return [
        propose(change.scope, change.content),
        { memoryId: created, command: { type: "approve" }, approveOf: 0 },
        ...change.sources.map((s): Step => ({ memoryId: s.memoryId, command: { type: "supersede", by: created, reason } })),
      ];
    case "revise":
      return [
        { memoryId: change.memory.memoryId, command: { type: "propose", revision: true, ...change.content } },
        { memoryId: change.memory.memoryId, command: { type: "approve" }, approveOf: 0 },
      ];
    case "create":
      return [propose(change.scope, change.content), { memoryId: created, command: { type: "approve" }, approveOf: 0 }];
    case "promote":
      return [
        propose(change.scope, change.content),
        { memoryId: created, command: { type: "approve" }, approveOf: 0 },
        { memoryId: change.candidate.memoryId, command: { type: "supersede", by: created, reason } },
      ];
    case "flag":
      return [];
  }
}

function revertSteps(proposal: ProposalState, why: string): Step[] {
  const change = proposal.change!;
  const reason = reasonLine(`revert of consolidation run ${proposal.runId}: ${why}`);
  const created = newMemoryIdOf(proposal.id!);
  const reinstate = (memoryId: string): Step => ({ memoryId, command: { type: "reinstate", reason }, tolerate: [ConflictReason.not_superseded] });
  const supersede = (memoryId: string): Step => ({ memoryId, command: { type: "supersede", by: null, reason }, tolerate: [ConflictReason.superseded] });
  switch (change.action) {
    case "supersede":
      return [reinstate(change.memory.memoryId)];
    case "merge":
      return [supersede(created), ...change.sources.map((s) => reinstate(s.memoryId))];
    case "revise":
      return [{ memoryId: change.memory.memoryId, command: { type: "rollback", toVersion: change.memory.version }, tolerate: [ConflictReason.already_active] }];
    case "create":
      return [supersede(created)];
    case "promote":
      return [supersede(created), reinstate(change.candidate.memoryId)];
    case "flag":
      return [];
  }
}

/** Writes an accepted proposal's memory events and `proposal.applied` (a retry replays what was written). */
async function finishApply(deps: ReviewDeps, app: string, proposal: ProposalState): Promise<ProposalState> {
  const decision = proposal.decision!;
  // The applied events are the accepter's, caused by the accept, correlated with the run.
  const ctx: CommandContext = { app, actor: decision.actor, causationId: decision.eventId, correlationId: proposal.runId! };
  const events = await writeSteps(deps, ctx, proposal.id!, "apply", applySteps(proposal));
  const applied = await deps.handler.execute(proposalDecider, proposal.id!, { type: "applied", events }, ctx, { eventId: derivedEventId(proposal.id!, "applied") });
  return applied.state;
}

export interface DecideInput {
  app: string;
  runId: string;
  /** Absent or empty: every proposal of the run still to decide. */
  proposalIds?: readonly string[];
  actor: Actor;
  reason?: string | null;
}

/**
 * Accepts proposals of a completed run and applies them. Each proposal is its own outcome: one whose
 * memory moved is refused (nothing written for it) while the others apply.
 */
export async function acceptProposals(deps: ReviewDeps, input: DecideInput): Promise<ReviewResult> {
  requireDreamReviewer(deps.policy, input.actor, `accept proposals of run ${input.runId}`);
  const run = await loadRun(deps, input.app, input.runId);
  requireReviewable(run.state);
  const all = await proposalsOf(deps, input.app, input.runId, run.startedSeq);
  const chosen = select(
    input.proposalIds?.length ? all : all.filter((p) => p.status === "pending" || p.status === "accepted"),
    input.runId,
    input.proposalIds,
  );
  const results: ItemOutcome[] = [];
  for (const item of chosen) {
    if (typeof item === "string") {
      results.push({ proposalId: item, outcome: "refused", status: "unknown", events: [], error: wireError(notFound(`no proposal ${item} in run ${input.runId}`, { proposalId: item })) });
      continue;
    }
    const proposalId = item.id!;
    try {
      let state = (await deps.handler.load(proposalDecider, input.app, proposalId)).state;
      if (state.status === "pending") {
        await requireUnmoved(deps, input.app, proposalId, state.change!);
        const ctx: CommandContext = { app: input.app, actor: input.actor, correlationId: input.runId };
        state = (
          await deps.handler.execute(proposalDecider, proposalId, { type: "accept", reason: input.reason ?? null }, ctx, { eventId: derivedEventId(proposalId, "accepted") })
        ).state;
      } else if (state.status !== "accepted") {
        throw conflict(`proposal ${proposalId} is already ${state.status}`, { reason: ConflictReason.already_decided, status: state.status });
      }
      // Accepted (now, or by an earlier call that stopped before applying): apply, or finish applying.
      state = await finishApply(deps, input.app, state);
      results.push({ proposalId, outcome: "applied", status: state.status, events: state.written });
    } catch (err) {
      if (!(err instanceof MemledgerError) || err.code === "internal" || err.code === "unavailable") throw err;
      results.push({ proposalId, outcome: "refused", status: item.status, events: [], error: wireError(err) });
    }
  }
  return { runId: input.runId, app: input.app, results };
}

/** Rejects proposals of a completed run (a reason is required); nothing is written to memories. */
export async function rejectProposals(deps: ReviewDeps, input: DecideInput & { reason: string }): Promise<ReviewResult> {
  requireDreamReviewer(deps.policy, input.actor, `reject proposals of run ${input.runId}`);
  if (!input.reason?.trim()) throw invalid("a rejection needs a reason");
  const run = await loadRun(deps, input.app, input.runId);
  requireReviewable(run.state);
  const all = await proposalsOf(deps, input.app, input.runId, run.startedSeq);
  const chosen = select(input.proposalIds?.length ? all : all.filter((p) => p.status === "pending"), input.runId, input.proposalIds);
  const results: ItemOutcome[] = [];
  for (const item of chosen) {
    if (typeof item === "string") {
      results.push({ proposalId: item, outcome: "refused", status: "unknown", events: [], error: wireError(notFound(`no proposal ${item} in run ${input.runId}`, { proposalId: item })) });
      continue;
    }
    try {
      const ctx: CommandContext = { app: input.app, actor: input.actor, correlationId: input.runId };
      const executed = await deps.handler.execute(proposalDecider, item.id!, { type: "reject", reason: input.reason }, ctx, { eventId: derivedEventId(item.id!, "rejected") });
      results.push({ proposalId: item.id!, outcome: "rejected", status: executed.state.status, events: [] });
    } catch (err) {
      if (!(err instanceof MemledgerError) || err.code === "internal" || err.code === "unavailable") throw err;
      results.push({ proposalId: item.id!, outcome: "refused", status: item.status, events: [], error: wireError(err) });
    }
  }
  return { runId: input.runId, app: input.app, results };
}

/**
 * Undoes every applied change of a run by compensating memory events (newest applied first), marks each
 * proposal reverted and the run reverted. An accepted proposal a crash left half-applied is first applied
 * in full, so its compensation is complete. Retried after a crash, it finishes: every event id is derived.
 *
 * A memory someone else changed after the run's changes (its last event is none of the run's own) is not
 * overwritten: that proposal is refused (memory_moved), nothing is written for it, the others are reverted,
 * and the run stays completed (not reverted) until a later revert finds nothing refused.
 */
export async function revertRun(deps: ReviewDeps, input: { app: string; runId: string; actor: Actor; reason: string }): Promise<RevertResult> {
  requireDreamReviewer(deps.policy, input.actor, `revert run ${input.runId}`);
  if (!input.reason?.trim()) throw invalid("a revert needs a reason");
  const run = await loadRun(deps, input.app, input.runId);
  if (!run.state.completed) throw conflict(`run ${input.runId} has not completed: only a completed run is reverted`, { reason: ConflictReason.run_not_completed });
  const replayed = run.state.reverted !== null;
  const all = await proposalsOf(deps, input.app, input.runId, run.startedSeq);
  const ctx: CommandContext = { app: input.app, actor: input.actor, correlationId: input.runId };
  const states: ProposalState[] = [];
  for (const p of all) states.push(p.status === "accepted" ? await finishApply(deps, input.app, p) : p);
  // Every memory event this run's review wrote or may write: what a memory's last event may be without it having moved.
  const ours = new Set<string>();
  for (const p of states) {
    for (const w of [...p.written, ...p.compensated]) ours.add(w.eventId);
    if (p.change) revertSteps(p, input.reason).forEach((_, i) => ours.add(derivedEventId(p.id!, "revert", String(i))));
  }
  // Newest applied first: a later change may rest on an earlier one.
  const seqOf = (p: ProposalState) => Math.max(0, ...p.written.map((w) => w.seq));
  const toRevert = states.filter((p) => p.status === "applied").sort((a, b) => seqOf(b) - seqOf(a));
  const results: ItemOutcome[] = [];
  for (const p of toRevert) {
    const steps = revertSteps(p, input.reason);
    const moved = await movedSince(deps, input.app, [...new Set(steps.map((s) => s.memoryId))], ours);
    if (moved) {
      results.push({
        proposalId: p.id!,
        outcome: "refused",
        status: p.status,
        events: [],
        error: wireError(
          conflict(`proposal ${p.id}: memory ${moved.memoryId} changed after the run applied it (event ${moved.eventId}); revert it by hand, then revert the run again`, {
            reason: ConflictReason.memory_moved,
            memoryId: moved.memoryId,
            seq: moved.seq,
          }),
        ),
      });
      continue;
    }
    const events = await writeSteps(deps, { ...ctx, causationId: p.decision?.eventId }, p.id!, "revert", steps);
    const reverted = await deps.handler.execute(proposalDecider, p.id!, { type: "revert", events }, ctx, { eventId: derivedEventId(p.id!, "reverted") });
    results.push({ proposalId: p.id!, outcome: "reverted", status: reverted.state.status, events });
  }
  for (const p of states.filter((s) => s.status === "reverted")) results.push({ proposalId: p.id!, outcome: "reverted", status: "reverted", events: p.compensated });
  if (results.some((r) => r.outcome === "refused")) return { runId: input.runId, app: input.app, results, replayed };
  const reverted = results.length;
  await deps.handler.execute(runDecider, input.runId, { type: "revert", proposals: reverted, reason: input.reason }, ctx, { eventId: derivedEventId(input.runId, "reverted") });
  return { runId: input.runId, app: input.app, results, replayed };
}

/** The first of these memories whose last event is not one of `ours`, or null. */
async function movedSince(deps: ReviewDeps, app: string, memoryIds: string[], ours: ReadonlySet<string>): Promise<{ memoryId: string; eventId: string; seq: number } | null> {
  for (const memoryId of memoryIds) {
    const loaded = await deps.handler.load(memoryDecider, app, memoryId);
    if (loaded.seq === 0) continue;
    const last = [...loaded.seqOf].find(([, seq]) => seq === loaded.seq)?.[0];
    if (last !== undefined && !ours.has(last)) return { memoryId, eventId: last, seq: loaded.seq };
  }
  return null;
}
