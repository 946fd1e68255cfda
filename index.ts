/**
 * memledger's public API: what a program needs to talk to the ledger (the client), understand its
 * answers (errors, schemas, the deciders' states and outcomes), fold its events, write a projection
 * against the contract, and run the whole server. The machinery behind it is `memledger/internal`;
 * Given/When/Then specifications are `memledger/testing`. package.json's `exports` enforces the split.
 */

// Errors: one registry of codes, one error class.
export { ErrorCode, EXIT_CODE, MemledgerError, isMemledgerError } from "./schemas/errors.js";

// Schemas: runtime checks and their types.
export { LIMITS, Scope, Actor, ActorKind, MemoryKind } from "./schemas/primitives.js";
export { LedgerEvent, MemoryEvent, SessionEvent, CURRENT_SCHEMA_VERSION } from "./schemas/events.js";
export type { LedgerEventType, EventMetadata, DomainEventOf } from "./schemas/events.js";
export { REQUESTS, VERBS } from "./schemas/commands.js";
export type { Verb, RequestOf, Reply, AppendOutcome, ClaimOutcome, PromoteOutcome, SessionOutcome } from "./schemas/commands.js";
export { Policy, authorize } from "./schemas/policy.js";

// Events: naming and decoding of what is stored.
export { naming, DEFAULT_PREFIX } from "./events/subjects.js";
export type { Naming } from "./events/subjects.js";
export { upcast, parseStoredEvent, encodeEvent, decodeEvent } from "./events/upcast.js";

// Deciders: pure decide/evolve per aggregate, with their states and views.
export { fold } from "./commands/decider.js";
export type { Decider } from "./commands/decider.js";
export { memoryDecider, memoryStatus, activeVersionOf } from "./commands/memory.js";
export type { MemoryCommand, MemoryState, MemoryVersion, MemoryStatus } from "./commands/memory.js";
export { sessionDecider } from "./commands/session.js";
export type { SessionCommand, SessionState } from "./commands/session.js";
export { claimDecider, claimView } from "./commands/claim.js";
export type { ClaimState, ClaimView } from "./commands/claim.js";
export { promotionDecider, promotionView } from "./commands/promotion.js";
export type { PromotionView } from "./commands/promotion.js";
export { runDecider } from "./commands/run.js";
export type { RunCommand, RunState, RunStatus } from "./commands/run.js";
export { proposalDecider } from "./commands/proposal.js";
export type { ProposalCommand, ProposalState, ProposalStatus } from "./commands/proposal.js";
export type { Phase, PhaseContext, ProposalDraft, DreamView, DreamSettings, TranscriptAnalyser, SessionTranscript } from "./services/dream/phase.js";

// The client (SDK).
export { MemoryClient, parseActor } from "./services/client.js";
export type { LogEntry, SessionView } from "./services/client.js";
export type { MemoryView } from "./services/command-service.js";
export type { ContextPack } from "./services/hydration/index.js";
export type { Embedder } from "./projections/embedder.js";

// The projection contract: what a read model implements to be run, checkpointed and rebuilt.
export type { ProjectionDefinition, ProjectionTarget, ProjectedEvent, Checkpoint, ProjectionScope } from "./projections/projection.js";

// The whole server process (`memledger up`).
export { startMemledger } from "./services/runtime.js";
export type { Memledger, MemledgerOptions } from "./services/runtime.js";
