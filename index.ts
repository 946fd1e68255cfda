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
