/**
 * memledger/internal: the machinery behind the public API — stores, handlers, runners, projections'
 * targets, indexes, embedders, the curator and the hydrator. For operators' tools, benchmarks and
 * extensions that need to reach inside; it may change between minor versions, unlike the root entry.
 */

// The event store and the write path.
export { EventStore } from "./services/event-store.js";
export type { StoredEvent } from "./services/event-store.js";
export { CommandHandler } from "./services/command-handler.js";
export { CommandService } from "./services/command-service.js";
export { connectNats, checkServer, serverFeatures } from "./services/nats.js";

// Projection runners and the three read models.
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
export type { VectorIndex } from "./projections/vectors/vector-index.js";
export { Hydrator, assemblePack } from "./services/hydration/index.js";

// Org knowledge and permissions.
export { Curator, decidePromotion } from "./services/curator/index.js";
export { loadPolicy } from "./services/auth/load.js";

// The runtime's parts, for processes that run a subset of `memledger up`.
export { defaultComponents } from "./services/runtime.js";
export type { Component } from "./services/runtime.js";
