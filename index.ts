/**
 * memledger's public API. Everything a program needs to talk to the ledger, fold its events or run its
 * services is exported here; anything not exported is an implementation detail.
 */

// Errors: one registry of codes, one error class.
export { ErrorCode, EXIT_CODE, MemledgerError, isMemledgerError } from "./schemas/errors.js";

// Schemas: runtime checks and their types.
export { LIMITS, Scope, Actor, ActorKind, MemoryKind } from "./schemas/primitives.js";
export { LedgerEvent, MemoryEvent, SessionEvent, CURRENT_SCHEMA_VERSION } from "./schemas/events.js";
export type { LedgerEventType, EventMetadata, DomainEventOf } from "./schemas/events.js";
export { REQUESTS, VERBS } from "./schemas/commands.js";
export type { Verb, RequestOf, Reply, AppendOutcome, SessionOutcome } from "./schemas/commands.js";

// Events: naming and decoding of what is stored.
export { naming, DEFAULT_PREFIX } from "./events/subjects.js";
export type { Naming } from "./events/subjects.js";
export { upcast, parseStoredEvent, encodeEvent, decodeEvent } from "./events/upcast.js";

// Deciders: pure decide/evolve per aggregate.
export { fold } from "./commands/decider.js";
export type { Decider } from "./commands/decider.js";
export { memoryDecider, memoryStatus, activeVersionOf } from "./commands/memory.js";
export type { MemoryCommand, MemoryState, MemoryVersion, MemoryStatus } from "./commands/memory.js";
export { sessionDecider } from "./commands/session.js";
export type { SessionCommand, SessionState } from "./commands/session.js";

// Services: the edges that talk to NATS.
export { connectNats, checkServer, serverFeatures } from "./services/nats.js";
export { EventStore } from "./services/event-store.js";
export type { StoredEvent } from "./services/event-store.js";
export { CommandHandler } from "./services/command-handler.js";
export { CommandService } from "./services/command-service.js";
export type { MemoryView } from "./services/command-service.js";
export { MemoryClient, parseActor } from "./services/client.js";
export type { LogEntry, SessionView } from "./services/client.js";

// Projections: the read-model contract, the runner and the three read models.
export type { ProjectionDefinition, ProjectionTarget, ProjectedEvent, Checkpoint, ProjectionScope } from "./projections/projection.js";
export { ProjectionRunner, rebuildProjection, rebuildProjections, readStatuses } from "./services/projection-runner.js";
export type { ProjectionStatus, RebuildProgress } from "./services/projection-runner.js";
export { ProjectionSupervisor } from "./services/projection-supervisor.js";
export { filesProjection, readMemoryIndex, treeHash } from "./projections/files/index.js";
export { claimsProjection, claimsReader, liveClaims, openTasks } from "./projections/claims/index.js";
export type { LiveClaim, OpenTask } from "./projections/claims/index.js";
export { searchProjection, openSearchIndex, SearchIndex, searchMemories } from "./projections/search/index.js";
export { openReadModels, readModelConfig } from "./services/read-models.js";
export type { ReadModelConfig, ReadModels } from "./services/read-models.js";

// Retrieval: hybrid search, embeddings, vector indexes, hydration.
export { retrieve, fuseRrf, RETRIEVAL_MODES } from "./projections/search/index.js";
export type { RetrievalMode, RetrieveOptions, RetrievedMemory } from "./projections/search/index.js";
export { embedderFromEnv, embedderFromConfig, CachedEmbedder, UseLiteEmbedder, OpenAiCompatibleEmbedder } from "./services/embeddings/index.js";
export type { Embedder } from "./services/embeddings/index.js";
export type { VectorIndex } from "./projections/vectors/vector-index.js";
export { Hydrator, assemblePack } from "./services/hydration/index.js";
export type { ContextPack } from "./services/hydration/index.js";

// Org knowledge and permissions.
export { Curator, decidePromotion } from "./services/curator/index.js";
export { Policy, authorize } from "./schemas/policy.js";
export { loadPolicy } from "./services/auth/load.js";

// The whole server process (`memledger up`).
export { startMemledger, defaultComponents } from "./services/runtime.js";
export type { Component, Memledger } from "./services/runtime.js";
