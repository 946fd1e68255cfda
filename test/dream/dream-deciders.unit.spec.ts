import { describe, expect, it } from "vitest";
import { fold } from "../../commands/decider.js";
import { memoryDecider, memoryStatus } from "../../commands/memory.js";
import { nextPhase, runDecider, runStatus, type RunCommand } from "../../commands/run.js";
import { proposalDecider, type ProposalCommand } from "../../commands/proposal.js";
import type { DomainEventOf, MemoryEvent, ProposalEvent, RunEvent } from "../../schemas/events.js";
import { envelopes, specFor } from "../support/decider-spec.js";

const run = specFor(runDecider, { aggregateId: "run-1" });
const proposal = specFor(proposalDecider, { aggregateId: "prop-1" });
const memory = specFor(memoryDecider, { aggregateId: "mem-1" });

const startData = {
  trigger: { kind: "dream", forced: false } as const,
  phases: ["prune", "merge"] as ("prune" | "merge")[],
  asOfSeq: 10,
  gates: { lastRunId: null, lastRunAt: null, sessionsSince: 5, forced: false },
  holder: "instance-1",
  settings: { minSessionsSinceLastRun: 5 },
};
const started: DomainEventOf<RunEvent> = { type: "run.started", data: startData };
const step = (phase: "prune" | "merge", proposals = 1): DomainEventOf<RunEvent> => ({ type: "run.step_completed", data: { phase, proposals, report: null } });
const completed: DomainEventOf<RunEvent> = { type: "run.completed", data: { proposals: { prune: 1, merge: 1 }, index: null } };
const completeStep = (phase: "prune" | "merge"): RunCommand => ({ type: "complete_step", phase, proposals: 1, report: null });

describe("run decider", () => {
  it("starts a run once", () => {
    run.given([]).when({ type: "start", ...startData }).then([started]);
    expect(run.given([started]).when({ type: "start", ...startData }).thenThrows("conflict").details.reason).toBe("run_started");
  });

  it("completes steps in the order the run named them, each once", () => {
    run.given([started]).when(completeStep("prune")).then([step("prune")]);
    expect(run.given([started]).when(completeStep("merge")).thenThrows("conflict").details.reason).toBe("step_out_of_order");
    expect(run.given([started, step("prune")]).when(completeStep("prune")).thenThrows("conflict").details.reason).toBe("step_done");
    run.given([started, step("prune")]).when(completeStep("merge")).then([step("merge")]);
    run.given([]).when(completeStep("prune")).thenThrows("not_found");
  });

  it("completes only once every step is done, and then takes no more steps", () => {
    expect(run.given([started, step("prune")]).when({ type: "complete", proposals: {}, index: null }).thenThrows("conflict").details.reason).toBe("step_out_of_order");
    run.given([started, step("prune"), step("merge")]).when({ type: "complete", proposals: { prune: 1, merge: 1 }, index: null }).then([completed]);
    expect(run.given([started, step("prune"), step("merge"), completed]).when(completeStep("merge")).thenThrows("conflict").details.reason).toBe("run_completed");
    expect(run.given([started, step("prune"), step("merge"), completed]).when({ type: "complete", proposals: {}, index: null }).thenThrows("conflict").details.reason).toBe("run_completed");
  });

  it("reverts a completed run once, never a running one", () => {
    const reverted: DomainEventOf<RunEvent> = { type: "run.reverted", data: { proposals: 2, reason: "too eager" } };
    expect(run.given([started]).when({ type: "revert", proposals: 0, reason: "x" }).thenThrows("conflict").details.reason).toBe("run_not_completed");
    run.given([started, step("prune"), step("merge"), completed]).when({ type: "revert", proposals: 2, reason: "too eager" }).then([reverted]);
    expect(run.given([started, step("prune"), step("merge"), completed, reverted]).when({ type: "revert", proposals: 2, reason: "again" }).thenThrows("conflict").details.reason).toBe("run_reverted");
  });

  it("folds the next phase to resume at, the start time and the status", () => {
    const history = envelopes<RunEvent>([started, step("prune")], { aggregateId: "run-1" });
    const state = fold(runDecider, history);
    expect(nextPhase(state)).toBe("merge");
    expect(state.startedAt).toBe(history[0]!.time);
    expect(state.startedEventId).toBe(history[0]!.id);
    expect(runStatus(state)).toBe("running");
    expect(runStatus(fold(runDecider, envelopes<RunEvent>([started, step("prune"), step("merge"), completed])))).toBe("completed");
  });
});

const made: DomainEventOf<ProposalEvent> = {
  type: "proposal.made",
  data: {
    runId: "run-1",
    phase: "prune",
    key: "mem-1",
    change: { action: "supersede", memory: { memoryId: "mem-1", version: 1 } },
    evidence: { sessions: [], transcripts: [], memories: [{ memoryId: "mem-1", version: 1 }], counts: {}, prevalence: null, scores: {}, summary: "unused" },
    reason: "never retrieved",
  },
};
const make: ProposalCommand = { type: "make", ...(made.data as Omit<Extract<ProposalCommand, { type: "make" }>, "type">) };
const accepted: DomainEventOf<ProposalEvent> = { type: "proposal.accepted", data: { runId: "run-1", reason: "ok" } };
const written = [{ memoryId: "mem-1", eventId: "e-1", seq: 20, type: "memory.superseded" }];
const applied: DomainEventOf<ProposalEvent> = { type: "proposal.applied", data: { runId: "run-1", events: written } };
const rejected: DomainEventOf<ProposalEvent> = { type: "proposal.rejected", data: { runId: "run-1", reason: "still used" } };
const reverted: DomainEventOf<ProposalEvent> = { type: "proposal.reverted", data: { runId: "run-1", events: written } };

describe("proposal decider", () => {
  it("is made only on an empty subject", () => {
    proposal.given([]).when(make).then([made]);
    expect(proposal.given([made]).when(make).thenThrows("conflict").details.reason).toBe("already_proposed");
  });

  it("is accepted then applied, or rejected; each decision once", () => {
    proposal.given([made]).when({ type: "accept", reason: "ok" }).then([accepted]);
    proposal.given([made, accepted]).when({ type: "applied", events: written }).then([applied]);
    proposal.given([made]).when({ type: "reject", reason: "still used" }).then([rejected]);
    expect(proposal.given([made, accepted]).when({ type: "accept", reason: null }).thenThrows("conflict").details.reason).toBe("already_decided");
    expect(proposal.given([made, rejected]).when({ type: "accept", reason: null }).thenThrows("conflict").details.reason).toBe("already_decided");
    expect(proposal.given([made, accepted]).when({ type: "reject", reason: "late" }).thenThrows("conflict").details.reason).toBe("already_decided");
    expect(proposal.given([made]).when({ type: "applied", events: [] }).thenThrows("conflict").details.reason).toBe("not_accepted");
    expect(proposal.given([made, accepted, applied]).when({ type: "applied", events: [] }).thenThrows("conflict").details.reason).toBe("already_applied");
    proposal.given([]).when({ type: "accept", reason: null }).thenThrows("not_found");
  });

  it("is reverted only once applied, and only once", () => {
    proposal.given([made, accepted, applied]).when({ type: "revert", events: written }).then([reverted]);
    expect(proposal.given([made, accepted]).when({ type: "revert", events: [] }).thenThrows("conflict").details.reason).toBe("not_applied");
    expect(proposal.given([made, rejected]).when({ type: "revert", events: [] }).thenThrows("conflict").details.reason).toBe("not_applied");
    expect(proposal.given([made, accepted, applied, reverted]).when({ type: "revert", events: [] }).thenThrows("conflict").details.reason).toBe("already_reverted");
  });

  it("keeps the decision's event id (the causation of what the accept applies) and the written events", () => {
    const history = envelopes<ProposalEvent>([made, accepted, applied], { aggregateId: "prop-1" });
    const state = fold(proposalDecider, history);
    expect(state.status).toBe("applied");
    expect(state.decision?.eventId).toBe(history[1]!.id);
    expect(state.written).toEqual(written);
  });
});

const proposed: DomainEventOf<MemoryEvent> = {
  type: "memory.proposed",
  data: { version: 1, title: "Use pnpm", body: "We use pnpm.", kind: "convention", tags: [], paths: [], importance: 3 },
};
const approved: DomainEventOf<MemoryEvent> = { type: "memory.approved", data: { version: 1 } };
const superseded: DomainEventOf<MemoryEvent> = { type: "memory.superseded", data: { by: null, reason: "pruned" } };
const reinstated: DomainEventOf<MemoryEvent> = { type: "memory.reinstated", data: { reason: "reverted" } };

describe("memory reinstate", () => {
  it("reinstates only a superseded memory, which is then active at its version again", () => {
    const decided = memory.given([proposed, approved, superseded]).when({ type: "reinstate", reason: "reverted" }).then([reinstated]);
    expect(decided.state.superseded).toBeNull();
    expect(memoryStatus(decided.state)).toBe("active");
    expect(decided.state.activeVersion).toBe(1);
    expect(memory.given([proposed, approved]).when({ type: "reinstate", reason: "x" }).thenThrows("conflict").details.reason).toBe("not_superseded");
    memory.given([]).when({ type: "reinstate", reason: "x" }).thenThrows("not_found");
  });

  it("a reinstated memory can be superseded again", () => {
    memory.given([proposed, approved, superseded, reinstated]).when({ type: "supersede", by: null, reason: "again" }).then([{ type: "memory.superseded", data: { by: null, reason: "again" } }]);
  });
});
