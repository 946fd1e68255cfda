import assert from "node:assert/strict";
import type { Decider } from "../commands/decider.js";
import { fold } from "../commands/decider.js";
import {
  CURRENT_SCHEMA_VERSION,
  LedgerEvent,
  type DomainEventOf,
  type EventMetadata,
} from "../schemas/events.js";
import { isMemledgerError, type ErrorCode, type MemledgerError } from "../schemas/errors.js";

/**
 * Given/When/Then for pure deciders, after the shape of emmett's DeciderSpecification:
 *
 *   specFor(memoryDecider).given([proposed]).when({ type: "approve" }).then([approved])
 *   specFor(memoryDecider).given([]).when({ type: "approve" }).thenThrows("not_found")
 *
 * Histories are written as domain events ({ type, data }); the spec wraps each in a complete envelope that
 * passes the event schema, because `evolve` folds what the log holds, never bare domain events.
 *
 * Assertions use node:assert (an AssertionError with a diff), so the spec runs under any test runner.
 */

/** The fake clock starts here and every event in a history is one minute after the one before it. */
const EPOCH = Date.parse("2025-01-01T00:00:00.000Z");
const MINUTE = 60_000;

export const DEFAULT_METADATA = {
  aggregateId: "agg-1",
  app: "app1",
  scope: "app",
  actor: { kind: "agent", id: "agent-a" },
  sessionId: null,
  transcriptRef: null,
  git: null,
  causationId: null,
} as const satisfies Partial<EventMetadata>;

export type FakeMetadata = Partial<EventMetadata>;

/**
 * Wraps domain events in envelopes: ids `evt-1`, `evt-2`, … and times one minute apart, unless `metadata`
 * says otherwise. Each envelope is parsed by the real schema, so a spec cannot fold an event the log would refuse.
 */
export function envelopes<E extends LedgerEvent>(events: readonly DomainEventOf<E>[], metadata: FakeMetadata = {}, firstIndex = 1): E[] {
  return events.map((domainEvent, offset) => LedgerEvent.parse(rawEnvelope(domainEvent, metadata, firstIndex + offset)) as E);
}

/**
 * The one envelope builder: what `envelopes` parses, unchecked, for tests that must feed what a buggy or
 * hostile writer might have stored. Id `evt-<index>` and a time `index` minutes after the epoch unless
 * `metadata` names them; the schema version is today's for the type (1 for a type the log does not know).
 */
export function rawEnvelope(domainEvent: { type: string; data: unknown }, metadata: FakeMetadata = {}, index = 1): Record<string, unknown> {
  const { id: fixedId, ...overrides } = metadata;
  const id = fixedId ?? `evt-${index}`;
  return {
    ...DEFAULT_METADATA,
    correlationId: id,
    time: new Date(EPOCH + index * MINUTE).toISOString(),
    ...overrides,
    id,
    type: domainEvent.type,
    schemaVersion: CURRENT_SCHEMA_VERSION[domainEvent.type as LedgerEvent["type"]] ?? 1,
    data: domainEvent.data,
  };
}

export interface Decided<E extends LedgerEvent, S> {
  /** The decided event in the envelope the spec gave it (the one after the given history). */
  event: E;
  /** The state once that event is folded in, for assertions about what the transition did. */
  state: S;
  /** The state the command was decided against. */
  before: S;
}

export interface WhenClause<E extends LedgerEvent, S> {
  /**
   * Asserts that decide emits exactly these domain events. Also asserts that decide is deterministic
   * (a second call decides the same), that it left the state untouched, and that the decided event,
   * once enveloped, passes the event schema (the command handler would refuse it otherwise).
   */
  then(expected: readonly DomainEventOf<E>[]): Decided<E, S>;
  /**
   * Asserts that decide refuses with a MemledgerError of this code (and a message matching the pattern),
   * and that the refusal left the state exactly as it was: a refused command has nothing to append.
   */
  thenThrows(code: ErrorCode, messagePattern?: RegExp | string): MemledgerError;
}

export interface GivenClause<C, E extends LedgerEvent, S> {
  when(command: C): WhenClause<E, S>;
  /** The state the given history folds into. */
  readonly state: S;
  /** The given history, enveloped as the log would hold it. */
  readonly history: readonly E[];
}

export interface DeciderSpec<C, E extends LedgerEvent, S> {
  given(events: readonly DomainEventOf<E>[], metadata?: FakeMetadata): GivenClause<C, E, S>;
}

export function specFor<C, E extends LedgerEvent, S>(
  decider: Decider<C, E, S>,
  defaults: FakeMetadata = {},
): DeciderSpec<C, E, S> {
  return {
    given(events, metadata = {}) {
      const givenMetadata = { ...defaults, ...metadata };
      const history = envelopes<E>(events, givenMetadata);
      const state = fold(decider, history);
      return {
        state,
        history,
        when(command) {
          // A deep copy taken before deciding: comparing against it afterwards catches any mutation,
          // including of states that immer did not freeze (initialState() is a plain object).
          const snapshot = structuredClone(state);
          const decide = () => decider.decide(command, state);
          return {
            then(expected) {
              const decided = decide();
              assert.deepStrictEqual([decided], expected, "decided events");
              assert.deepStrictEqual(decide(), decided, "a second decision on the same state");
              assert.deepStrictEqual(state, snapshot, "state after deciding");
              // Enveloped as the command handler does it: the decider names the scope of what it decided.
              const { id: _fixedId, ...nextMetadata } = givenMetadata;
              const scope = decider.scopeOf(command, state);
              const [event] = envelopes<E>([decided], { ...nextMetadata, scope }, history.length + 1);
              return { event: event as E, state: decider.evolve(state, event as E), before: state };
            },
            thenThrows(code, messagePattern) {
              let thrown: unknown;
              let decided: DomainEventOf<E> | undefined;
              try {
                decided = decide();
              } catch (err) {
                thrown = err;
              }
              assert.equal(decided, undefined, `decide should have refused, but decided ${JSON.stringify(decided)}`);
              assert.ok(isMemledgerError(thrown), `expected a MemledgerError, got ${String(thrown)}`);
              const error = thrown as MemledgerError;
              assert.equal(error.code, code, `error code (message: ${error.message})`);
              if (messagePattern !== undefined) assert.match(error.message, typeof messagePattern === "string" ? new RegExp(escapeRegExp(messagePattern)) : messagePattern);
              assert.deepStrictEqual(state, snapshot, "state after a refused command");
              return error;
            },
          };
        },
      };
    },
  };
}

const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
