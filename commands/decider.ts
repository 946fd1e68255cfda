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

/**
 * Deep-freezes plain objects and arrays, stopping at anything already frozen (the parts shared with the
 * previous state), as immer's auto-freeze did. Deciders freeze the state they hand to command code, so
 * a handler that mutated it by mistake fails loudly; projections fold with the unfrozen folds instead,
 * because freezing every record of a rebuild was a tenth of its CPU and nothing there mutates state.
 */
export function deepFreeze<T>(value: T): T {
  if (value === null || typeof value !== "object" || Object.isFrozen(value)) return value;
  const proto = Object.getPrototypeOf(value);
  if (!Array.isArray(value) && proto !== Object.prototype && proto !== null) return value;
  Object.freeze(value);
  for (const key in value) deepFreeze(value[key]);
  return value;
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
