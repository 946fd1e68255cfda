import assert from "node:assert/strict";
import { naming, type AggregateKind } from "../events/subjects.js";
import type { ProjectedEvent, ProjectionDefinition, ProjectionScope } from "../projections/projection.js";
import type { LedgerEvent } from "../schemas/events.js";

/**
 * Given/When/Then for projections, the read-model counterpart of the decider spec:
 *
 *   const spec = projectionSpecFor({ definition: filesProjection({ root }), scope, read: () => readTree(root) });
 *   await spec.given([proposed]).when([approved]).then(expectedTree);
 *
 * It drives the projection's real targets (files, Redis, an index), because what a projection promises is
 * about what its target keeps: `then` checks the model after the given and the when events were applied
 * and committed by a live target, and the two promises every projection makes beyond that:
 * - at-least-once delivery: the when events delivered again leave the same model;
 * - rebuild equivalence: a fresh target fed every event from sequence 1 and promoted reads the same.
 */
export interface ProjectionSpecOptions<M> {
  definition: ProjectionDefinition;
  scope: ProjectionScope;
  /** The model as readers see it (after commit); compared with node:assert's deepStrictEqual. */
  read(scope: ProjectionScope): Promise<M>;
}

export interface ProjectionWhen<M> {
  then(expected: M): Promise<void>;
  /** For models compared by a predicate rather than equality (e.g. scores). */
  thenMatches(check: (model: M) => void | Promise<void>): Promise<void>;
}

export interface ProjectionGiven<M> {
  when(events: readonly LedgerEvent[]): ProjectionWhen<M>;
}

const KINDS: Record<string, AggregateKind> = { memory: "memory", session: "session", claim: "claim" };

/** Events as the runner hands them over: stream sequences from 1, each on its aggregate's subject. */
export function asProjected(scope: ProjectionScope, events: readonly LedgerEvent[], firstSeq = 1): ProjectedEvent[] {
  const names = naming(scope.prefix);
  return events.map((event, i) => {
    const kind = KINDS[event.type.split(".")[0] ?? ""];
    if (!kind) throw new TypeError(`the projection spec cannot place a ${event.type} event on a subject`);
    return { seq: firstSeq + i, subject: names.aggregate(scope.app, kind, event.aggregateId), event };
  });
}

export function projectionSpecFor<M>(options: ProjectionSpecOptions<M>) {
  const { definition, scope, read } = options;
  return {
    given(given: readonly LedgerEvent[]): ProjectionGiven<M> {
      return {
        when(when: readonly LedgerEvent[]): ProjectionWhen<M> {
          const givenProjected = asProjected(scope, given);
          const whenProjected = asProjected(scope, when, given.length + 1);
          const last = given.length + when.length;
          const verify = async (check: (model: M, what: string) => void | Promise<void>) => {
            const live = await definition.openLive(scope);
            try {
              if (givenProjected.length > 0) {
                await live.apply(givenProjected);
                await live.commit(given.length);
              }
              await live.apply(whenProjected);
              await live.commit(last);
              await check(await read(scope), "the live model after the given and the when events");
              // At-least-once: a redelivery of what was already committed changes nothing.
              await live.apply(whenProjected);
              await live.commit(last);
              await check(await read(scope), "the live model after the when events were delivered again");
            } finally {
              await live.close();
            }
            const fresh = await definition.openFresh(scope);
            try {
              await fresh.apply([...givenProjected, ...whenProjected]);
              await fresh.commit(last);
              await definition.promote(scope, fresh);
            } finally {
              await fresh.close();
            }
            await check(await read(scope), "the model rebuilt from sequence 1");
          };
          return {
            then: (expected) => verify((model, what) => assert.deepStrictEqual(model, expected, what)),
            thenMatches: (check) => verify((model) => check(model)),
          };
        },
      };
    },
  };
}
