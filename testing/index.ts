/**
 * memledger/testing: Given/When/Then specifications for the code that extends memledger, after emmett's
 * DeciderSpecification. Framework-agnostic (node:assert), so they run under vitest, node:test or mocha.
 */
export { specFor, envelopes, rawEnvelope, DEFAULT_METADATA } from "./decider-spec.js";
export type { DeciderSpec, GivenClause, WhenClause, Decided, FakeMetadata } from "./decider-spec.js";
export { projectionSpecFor, asProjected } from "./projection-spec.js";
export type { ProjectionSpecOptions, ProjectionGiven, ProjectionWhen } from "./projection-spec.js";
