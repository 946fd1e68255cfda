import type { DomainEventOf, PhaseName, RunEvent, RunTrigger } from "../schemas/events.js";
import { ConflictReason, conflict, notFound } from "../schemas/errors.js";
import type { AppliedEvent, Decider } from "./decider.js";

/**
 * One consolidation run (issue 13): started (gates passed, lock held), one step per phase in the order the
 * run named them, completed; later perhaps reverted (every applied proposal compensated). The run's
 * proposals live on their own subjects (commands/proposal.ts); this aggregate only orders the steps, so a
 * resumed runner knows which phase comes next and cannot complete one twice.
 */
type RunStartedData = Extract<RunEvent, { type: "run.started" }>["data"];
type RunCompletedData = Extract<RunEvent, { type: "run.completed" }>["data"];

export type RunCommand =
  | ({ type: "start" } & RunStartedData)
  | { type: "complete_step"; phase: PhaseName; proposals: number; report: string | null }
  | ({ type: "complete" } & RunCompletedData)
  | { type: "revert"; proposals: number; reason: string };

export interface RunState {
  id: string | null;
  app: string | null;
  trigger: RunTrigger | null;
  phases: PhaseName[];
  asOfSeq: number;
  holder: string | null;
  /** When `run.started` was written: the phases' "now" (the same on a resume). */
  startedAt: string | null;
  /** The id of `run.started`: the causation of every proposal of the run. */
  startedEventId: string | null;
  gates: RunStartedData["gates"] | null;
  settings: RunStartedData["settings"];
  steps: { phase: PhaseName; proposals: number; report: string | null; at: string }[];
  completed: { at: string; proposals: RunCompletedData["proposals"]; index: RunCompletedData["index"] } | null;
  reverted: { at: string; proposals: number; reason: string; by: string } | null;
  applied: Record<string, AppliedEvent>;
}

export const initialRunState = (): RunState => ({
  id: null,
  app: null,
  trigger: null,
  phases: [],
  asOfSeq: 0,
  holder: null,
  startedAt: null,
  startedEventId: null,
  gates: null,
  settings: {},
  steps: [],
  completed: null,
  reverted: null,
  applied: {},
});

export type RunStatus = "unknown" | "running" | "completed" | "reverted";

export function runStatus(state: RunState): RunStatus {
  if (state.id === null) return "unknown";
  if (state.reverted) return "reverted";
  if (state.completed) return "completed";
  return "running";
}

/** The phase a (resumed) run must do next, or null when every step is done. */
export function nextPhase(state: RunState): PhaseName | null {
  return state.phases[state.steps.length] ?? null;
}

function requireRunning(state: RunState): void {
  if (state.id === null) throw notFound("no such run", { reason: ConflictReason.run_not_started });
  if (state.reverted) throw conflict(`run ${state.id} was reverted`, { reason: ConflictReason.run_reverted });
  if (state.completed) throw conflict(`run ${state.id} is already completed`, { reason: ConflictReason.run_completed });
}

function decideRun(command: RunCommand, state: RunState): DomainEventOf<RunEvent> {
  switch (command.type) {
    case "start": {
      if (state.id !== null) throw conflict(`run ${state.id} has already started`, { reason: ConflictReason.run_started });
      const { type: _type, ...data } = command;
      if (new Set(data.phases).size !== data.phases.length) throw conflict("a run names each phase once", { reason: ConflictReason.step_out_of_order, phases: data.phases });
      return { type: "run.started", data };
    }
    case "complete_step": {
      requireRunning(state);
      if (state.steps.some((s) => s.phase === command.phase)) {
        throw conflict(`phase ${command.phase} of run ${state.id} is already completed`, { reason: ConflictReason.step_done, phase: command.phase });
      }
      const next = nextPhase(state);
      if (next !== command.phase) {
        throw conflict(`run ${state.id} must complete ${next ?? "nothing more"} next, not ${command.phase}`, {
          reason: ConflictReason.step_out_of_order,
          phase: command.phase,
          next,
        });
      }
      return { type: "run.step_completed", data: { phase: command.phase, proposals: command.proposals, report: command.report } };
    }
    case "complete": {
      requireRunning(state);
      const next = nextPhase(state);
      if (next !== null) throw conflict(`run ${state.id} has not completed phase ${next}`, { reason: ConflictReason.step_out_of_order, next });
      return { type: "run.completed", data: { proposals: command.proposals, index: command.index } };
    }
    case "revert": {
      if (state.id === null) throw notFound("no such run", { reason: ConflictReason.run_not_started });
      if (state.reverted) throw conflict(`run ${state.id} was already reverted`, { reason: ConflictReason.run_reverted });
      if (!state.completed) throw conflict(`run ${state.id} has not completed: only a completed run is reverted`, { reason: ConflictReason.run_not_completed });
      return { type: "run.reverted", data: { proposals: command.proposals, reason: command.reason } };
    }
  }
}

function evolveRun(state: RunState, event: RunEvent): RunState {
  if (state.applied[event.id]) return state;
  const base = {
    ...state,
    id: state.id ?? event.aggregateId,
    app: state.app ?? event.app,
    applied: { ...state.applied, [event.id]: { type: event.type, version: null } },
  };
  switch (event.type) {
    case "run.started":
      return {
        ...base,
        trigger: event.data.trigger,
        phases: event.data.phases,
        asOfSeq: event.data.asOfSeq,
        holder: event.data.holder,
        startedAt: event.time,
        startedEventId: event.id,
        gates: event.data.gates,
        settings: event.data.settings,
      };
    case "run.step_completed":
      return { ...base, steps: [...state.steps, { phase: event.data.phase, proposals: event.data.proposals, report: event.data.report, at: event.time }] };
    case "run.completed":
      return { ...base, completed: { at: event.time, proposals: event.data.proposals, index: event.data.index } };
    case "run.reverted":
      return { ...base, reverted: { at: event.time, proposals: event.data.proposals, reason: event.data.reason, by: `${event.actor.kind}:${event.actor.id}` } };
  }
}

/**
 * A session-end review is about one session's candidates, which only its agent reads (docs/candidates.md):
 * its events live in that session's scope, so `log` and `dream show` filter them as they filter the candidates.
 */
const runScope = (trigger: RunState["trigger"]): string => (trigger?.kind === "session_end" ? `session:${trigger.sessionId}` : "app");

export const runDecider: Decider<RunCommand, RunEvent, RunState> = {
  aggregate: "run",
  initialState: initialRunState,
  decide: decideRun,
  evolve: evolveRun,
  scopeOf: (command, state) => runScope(command.type === "start" ? command.trigger : state.trigger),
  outcomeOf: (state, eventId) => state.applied[eventId],
};
