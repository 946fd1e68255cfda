import { z } from "zod";
import {
  Actor,
  AppName,
  FilePath,
  GitContext,
  Id,
  Importance,
  LIMITS,
  Markdown,
  MemoryKind,
  Scope,
  Tag,
  Version,
  nonEmptyLine,
  oneLine,
} from "./primitives.js";

/**
 * Fields every event carries, whatever its family: who did it (actor, session, transcript, branch),
 * why (causation, correlation), when, and to what (aggregate, app, scope). Auditors read these.
 */
const envelope = {
  id: z.string().min(1).max(64),
  aggregateId: Id,
  app: AppName,
  scope: Scope,
  actor: Actor,
  sessionId: Id.nullable(),
  transcriptRef: oneLine(LIMITS.refLength).nullable(),
  git: GitContext.nullable(),
  /** The event or command that caused this one (null for a command sent by a person or agent directly). */
  causationId: z.string().max(128).nullable(),
  /** Groups everything that follows from one intent; defaults to the first event's id. */
  correlationId: z.string().min(1).max(128),
  time: z.iso.datetime(),
};

const event = <T extends string, V extends number, D extends z.ZodType>(type: T, schemaVersion: V, data: D) =>
  z.strictObject({ ...envelope, type: z.literal(type), schemaVersion: z.literal(schemaVersion), data });

// ---- memory lifecycle -------------------------------------------------------------------------

export const MemoryProposedData = z.strictObject({
  version: Version,
  title: nonEmptyLine(LIMITS.titleLength),
  body: Markdown,
  kind: MemoryKind,
  tags: z.array(Tag).max(LIMITS.tags),
  paths: z.array(FilePath).max(LIMITS.paths),
  importance: Importance,
});

export const MemoryProposed = event("memory.proposed", 2, MemoryProposedData);
export const MemoryApproved = event("memory.approved", 1, z.strictObject({ version: Version }));
export const MemoryRejected = event(
  "memory.rejected",
  1,
  z.strictObject({ version: Version, reason: nonEmptyLine(LIMITS.reasonLength) }),
);
export const MemorySuperseded = event(
  "memory.superseded",
  1,
  z.strictObject({ by: Id.nullable(), reason: nonEmptyLine(LIMITS.reasonLength) }),
);
export const MemoryRolledBack = event(
  "memory.rolled_back",
  1,
  z.strictObject({ fromVersion: Version, toVersion: Version }),
);

export const MemoryEvent = z.discriminatedUnion("type", [
  MemoryProposed,
  MemoryApproved,
  MemoryRejected,
  MemorySuperseded,
  MemoryRolledBack,
]);
export type MemoryEvent = z.infer<typeof MemoryEvent>;

// ---- agent sessions ---------------------------------------------------------------------------

export const SessionStarted = event(
  "session.started",
  1,
  z.strictObject({
    agentId: Id,
    task: oneLine(LIMITS.taskLength),
    branch: oneLine(LIMITS.branchLength).nullable(),
    worktree: oneLine(LIMITS.refLength).nullable(),
  }),
);
export const SessionEnded = event(
  "session.ended",
  1,
  z.strictObject({ summary: oneLine(LIMITS.reasonLength).nullable() }),
);

export const SessionEvent = z.discriminatedUnion("type", [SessionStarted, SessionEnded]);
export type SessionEvent = z.infer<typeof SessionEvent>;

// ---- claims and locks (live coordination) -----------------------------------------------------

/** What a claim aggregate coordinates: a task (named by an id) or a lock (on a module or file path). */
export const ClaimKind = z.enum(["task", "lock"]);
export type ClaimKind = z.infer<typeof ClaimKind>;
/** A task's name is its id: subject-safe, and short enough for the `task-` aggregate id prefix. */
export const TaskName = Id.max(LIMITS.idLength - "task-".length, `at most ${LIMITS.idLength - "task-".length} characters`);
/** A lock names a module or file path: any one line; its aggregate id is derived from a hash of it. */
export const LockName = nonEmptyLine(LIMITS.pathLength);
/** 1 is the most urgent, 5 the least. */
export const Priority = z.number().int().min(1).max(5);
/** Lease length: at least a second, at most a day. */
export const LeaseMs = z.number().int().min(1_000).max(24 * 60 * 60 * 1000);

export const ClaimTaskOpened = event(
  "claim.task_opened",
  1,
  z.strictObject({ name: TaskName, title: oneLine(LIMITS.titleLength).nullable(), priority: Priority }),
);
export const ClaimClaimed = event(
  "claim.claimed",
  1,
  z.strictObject({
    kind: ClaimKind,
    name: LockName,
    holder: Id,
    leaseMs: LeaseMs,
    expiresAt: z.iso.datetime(),
    /** The holder whose lease had lapsed when this claim took the task or lock over; null otherwise. */
    takeoverOf: z.strictObject({ holder: Id, expiresAt: z.iso.datetime() }).nullable(),
    /** Set only when this claim is a task's first event (the task is opened by being claimed). */
    priority: Priority.nullable(),
  }),
);
export const ClaimRenewed = event(
  "claim.renewed",
  1,
  z.strictObject({ holder: Id, leaseMs: LeaseMs, expiresAt: z.iso.datetime() }),
);
export const ClaimReleased = event(
  "claim.released",
  1,
  /** done: the task is finished (never claimable again); always false for a lock. */
  z.strictObject({ holder: Id, done: z.boolean() }),
);

export const ClaimEvent = z.discriminatedUnion("type", [ClaimTaskOpened, ClaimClaimed, ClaimRenewed, ClaimReleased]);
export type ClaimEvent = z.infer<typeof ClaimEvent>;

// ---- every event ------------------------------------------------------------------------------

export const LedgerEvent = z.discriminatedUnion("type", [...MemoryEvent.options, ...SessionEvent.options, ...ClaimEvent.options]);
export type LedgerEvent = z.infer<typeof LedgerEvent>;
export type LedgerEventType = LedgerEvent["type"];

/** The envelope fields without type, version and data: what the command handler supplies. */
export type EventMetadata = Omit<LedgerEvent, "type" | "schemaVersion" | "data">;

/** What a decider emits: a type and its data. The handler wraps it in an envelope. */
export type DomainEventOf<E extends LedgerEvent> = E extends LedgerEvent ? Pick<E, "type" | "data"> : never;

/** The schema version written today for each event type. */
export const CURRENT_SCHEMA_VERSION = Object.fromEntries(
  LedgerEvent.options.map((o) => [o.shape.type.value, o.shape.schemaVersion.value]),
) as Record<LedgerEventType, number>;
