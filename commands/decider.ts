import type { DomainEventOf, LedgerEvent } from "../schemas/events.js";
import type { Scope } from "../schemas/primitives.js";
import type { AggregateKind } from "../events/subjects.js";

/**
 * A pure aggregate: `decide` turns a command and the current state into the event to append (or throws a
 * MemledgerError: nothing is appended), `evolve` folds a stored event into the state. No I/O, no clock,
 * no randomness: the handler supplies ids and times in the event envelope.
 *
 * `decide` returns exactly one event. NATS 2.9.10 has no atomic multi-message publish, so a decision
 * that needed two events could be half-written; every decision here is folded into one event.
 */
export interface Decider<Command, Event extends LedgerEvent, State> {
  readonly aggregate: AggregateKind;
  initialState(): State;
  decide(command: Command, state: State): DomainEventOf<Event>;
  evolve(state: State, event: Event): State;
  /** The scope the next event is written under. */
  scopeOf(command: Command, state: State): Scope;
  /** What an already-applied event produced, so a retried command replies as the first one did. */
  outcomeOf(state: State, eventId: string): AppliedEvent | undefined;
}

/** Remembered per aggregate for every event, so retries of keyed commands are answered from state forever. */
export interface AppliedEvent {
  type: LedgerEvent["type"];
  version: number | null;
}

/** Folds a history into state: the same fold serves loading, rebuilding and specs. */
export const fold = <Event extends LedgerEvent, State>(
  decider: Pick<Decider<unknown, Event, State>, "evolve" | "initialState">,
  events: Iterable<Event>,
  from: State = decider.initialState(),
): State => {
  let state = from;
  for (const event of events) state = decider.evolve(state, event);
  return state;
};
