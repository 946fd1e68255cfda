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
  Sequence,
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
  /**
   * Commands sent with an idempotency key only: a hash of what the command asked for, so the same key
   * with a different request is refused (`conflict`, details.key) instead of answered as a retry.
   * Absent on unkeyed commands and on events written before it existed (no upcast needed: optional).
   */
  commandHash: z.string().min(1).max(64).optional(),
  /**
   * Tamper evidence (events/chain.ts): the hash of the previous event on this subject (null for the first,
   * or when that one predates chains) and this event's own content hash. Set by the event store as it
   * appends; absent on events written before chains existed ("unchained"; no upcast needed: optional).
   */
  prevHash: z.string().regex(/^sha256:[0-9a-f]{64}$/, "sha256:<64 lowercase hex digits>").nullable().optional(),
  hash: z.string().regex(/^sha256:[0-9a-f]{64}$/, "sha256:<64 lowercase hex digits>").optional(),
};

const event = <T extends string, V extends number, D extends z.ZodType>(type: T, schemaVersion: V, data: D) =>
  z.strictObject({ ...envelope, type: z.literal(type), schemaVersion: z.literal(schemaVersion), data });

// ---- memory lifecycle -------------------------------------------------------------------------

/**
 * Where an org memory's version came from: the app memory version the curator promoted (its stream,
 * sequence and event, who wrote it and in which session) and the promotion request that asked for it.
 * Only the curator writes it; agents' proposals cannot carry it (the propose command has no such field).
 */
export const OrgProvenance = z.strictObject({
  promotionId: Id,
  source: z.strictObject({
    app: AppName,
    stream: z.string().min(1).max(255),
    memoryId: Id,
    version: Version,
    /** Stream sequence and id of the `memory.proposed` event that wrote the promoted version. */
    seq: Sequence,
    eventId: z.string().min(1).max(64),
    actor: Actor,
    sessionId: Id.nullable(),
  }),
  request: z.strictObject({
    seq: Sequence,
    eventId: z.string().min(1).max(64),
    actor: Actor,
    sessionId: Id.nullable(),
  }),
});
export type OrgProvenance = z.infer<typeof OrgProvenance>;

export const MemoryProposedData = z.strictObject({
  version: Version,
  title: nonEmptyLine(LIMITS.titleLength),
  body: Markdown,
  kind: MemoryKind,
  tags: z.array(Tag).max(LIMITS.tags),
  paths: z.array(FilePath).max(LIMITS.paths),
  importance: Importance,
  /**
   * v3: set on org memories the curator wrote from a promotion; absent on everything proposed directly.
   * Optional rather than nullable-with-default so every existing writer of v2 data stays valid as is.
   */
  provenance: OrgProvenance.optional(),
});

/** What a memory version says: everything a proposal carries but its number and provenance. */
export type MemoryContent = Omit<z.infer<typeof MemoryProposedData>, "version" | "provenance">;

export const MemoryProposed = event("memory.proposed", 3, MemoryProposedData);
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
/**
 * Undoes a supersede: the memory is in force again at its active version. The compensating event of a
 * consolidation revert (a pruned or merged-away memory comes back); never a deletion of the supersede,
 * which stays in the log. A new type (v1).
 */
export const MemoryReinstated = event("memory.reinstated", 1, z.strictObject({ reason: nonEmptyLine(LIMITS.reasonLength) }));

export const MemoryEvent = z.discriminatedUnion("type", [
  MemoryProposed,
  MemoryApproved,
  MemoryRejected,
  MemorySuperseded,
  MemoryRolledBack,
  MemoryReinstated,
]);
export type MemoryEvent = z.infer<typeof MemoryEvent>;
/** The memory lifecycle's event types, from the union itself (promotion events are typed `memory.*` but kept apart). */
export const MEMORY_EVENT_TYPES: ReadonlySet<string> = new Set(MemoryEvent.options.map((o) => o.shape.type.value));
export const isMemoryEvent = (event: { type: string }): event is MemoryEvent => MEMORY_EVENT_TYPES.has(event.type);

// ---- promotion to org knowledge ---------------------------------------------------------------
// Typed `memory.*` because they are about one app memory (aggregateId is that memory's id), but kept out
// of MemoryEvent: the memory lifecycle does not change when a memory is promoted. The request lives on the
// memory's subject (optimistic concurrency with its lifecycle); the curator's decision on the promotion's
// own subject (events/subjects.ts `promotion`), written once with expected sequence 0.

/** Why the curator decided as it did: a stable code (`secret:<rule>`, `app_specific`, …) and a sentence. */
export const PromotionReason = z.strictObject({
  code: z.string().min(1).max(128),
  message: nonEmptyLine(LIMITS.reasonLength),
});
export type PromotionReason = z.infer<typeof PromotionReason>;

export const MemoryPromotionRequested = event(
  "memory.promotion_requested",
  1,
  z.strictObject({
    /** Deterministic from app, memory id and version (commands/promotion.ts): one promotion per version. */
    promotionId: Id,
    /** The active, approved version being promoted. */
    version: Version,
    reason: oneLine(LIMITS.reasonLength).nullable(),
  }),
);
export const MemoryPromotionAccepted = event(
  "memory.promotion_accepted",
  1,
  z.strictObject({
    promotionId: Id,
    version: Version,
    /** "created": a new org memory; "merged": a new version of an existing, near-duplicate org memory. */
    outcome: z.enum(["created", "merged"]),
    orgMemoryId: Id,
    orgVersion: Version,
    /** True when the curator's policy approved the org version at once. */
    approved: z.boolean(),
    /** Flags a reviewer should look at (e.g. the near-duplicate it was merged into); empty when none. */
    reasons: z.array(PromotionReason).max(64),
  }),
);
export const MemoryPromotionRejected = event(
  "memory.promotion_rejected",
  1,
  z.strictObject({ promotionId: Id, version: Version, reasons: z.array(PromotionReason).min(1).max(64) }),
);

export const PromotionEvent = z.discriminatedUnion("type", [MemoryPromotionRequested, MemoryPromotionAccepted, MemoryPromotionRejected]);
export type PromotionEvent = z.infer<typeof PromotionEvent>;
export type MemoryPromotionRequested = z.infer<typeof MemoryPromotionRequested>;
export type MemoryPromotionAccepted = z.infer<typeof MemoryPromotionAccepted>;
export type MemoryPromotionRejected = z.infer<typeof MemoryPromotionRejected>;

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
/**
 * A session's transcript, kept in the NATS object store (services/transcripts.ts) under its own SHA-256:
 * the event carries the reference, never the bytes (a transcript is far over the 1 MB message limit).
 */
export const TranscriptRef = z.strictObject({
  /** `sha256:<64 hex>` of the transcript's bytes. */
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/, "sha256:<64 lowercase hex digits>"),
  bytes: z.number().int().min(0),
  /** The object's name in the transcripts bucket (today: the digest's hex). */
  name: z.string().min(1).max(255),
});
export type TranscriptRef = z.infer<typeof TranscriptRef>;

export const SessionEnded = event(
  "session.ended",
  2,
  z.strictObject({
    summary: oneLine(LIMITS.reasonLength).nullable(),
    /** v2: the stored transcript, when the session ended with one. Optional so v1 data stays valid as is. */
    transcript: TranscriptRef.optional(),
  }),
);

/**
 * Exposure (issue 12 item 5): what a session was shown. One receipt per `hydrate` or `search` the command
 * service answered with this session id: the memories it returned (id, version, rank, the channel or pack
 * section that put it there, the index it came from) and the reply's token count, never the text. Written
 * after the reply, several receipts to an event (services/audit/exposure.ts). A new type (v1): every
 * existing fold ignores it (the session decider folds it as a no-op), so adding it changed no read model.
 */
export const ExposedMemory = z.strictObject({
  memoryId: Id,
  version: Version,
  /** 1-based position in the search results, or in its pack section. */
  rank: z.number().int().min(1).max(10_000),
  /** `bm25`, `vector`, `bm25+vector` for a search hit; the pack section (`relevant`, `fragile`) for hydrate. */
  channel: nonEmptyLine(64),
  /** The memory's own index: the app's, or the org's (its id then lives in the org stream). */
  origin: z.enum(["app", "org"]),
});
export type ExposedMemory = z.infer<typeof ExposedMemory>;
export const ExposureReceipt = z.strictObject({
  verb: z.enum(["hydrate", "search"]),
  /** When the reply was sent (the event's own time is when the batch was appended). */
  time: z.iso.datetime(),
  /** Tokens of what was returned (hydrate: the pack's markdown; search: the hits' titles and bodies). */
  tokens: z.number().int().min(0),
  memories: z.array(ExposedMemory).max(500),
});
export type ExposureReceipt = z.infer<typeof ExposureReceipt>;
/** 32 receipts of 100 hits each stay far under the 1 MB message limit (about 350 KB). */
export const MAX_RECEIPTS_PER_EVENT = 32;
export const SessionExposed = event("session.exposed", 1, z.strictObject({ receipts: z.array(ExposureReceipt).min(1).max(MAX_RECEIPTS_PER_EVENT) }));

export const SessionEvent = z.discriminatedUnion("type", [SessionStarted, SessionEnded, SessionExposed]);
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

// ---- operator actions on the log itself -------------------------------------------------------

/**
 * An operator set aside the message at stream sequence `seq`: it is not a valid event (junk that reached
 * the stream), so every reader skips that sequence from now on, in live runners and in rebuilds alike,
 * instead of blocking on it. History is not edited: the message stays where it is, and this event (its
 * actor and reason) is the audit record. Written once per sequence, on `<prefix>.app.<app>.quarantine.<seq>`
 * (events/subjects.ts) with expected sequence 0; aggregateId is the sequence as a string. A new event type
 * (v1): readers that fold by type ignore it, so adding it changed no existing fold.
 */
export const LedgerQuarantined = event(
  "ledger.quarantined",
  1,
  z.strictObject({
    seq: z.number().int().min(1),
    /** The subject the set-aside message was stored on. */
    subject: z.string().min(1).max(512),
    /** `sha256:<hex>` of its bytes and its length: what exactly was skipped, without storing it twice. */
    digest: z.string().regex(/^sha256:[0-9a-f]{64}$/, "sha256:<64 lowercase hex digits>"),
    bytes: z.number().int().min(0),
    /** Why it could not be read, as the strict decoder said (what the projections blocked on). */
    error: oneLine(LIMITS.reasonLength),
    reason: nonEmptyLine(LIMITS.reasonLength),
  }),
);
export type LedgerQuarantined = z.infer<typeof LedgerQuarantined>;

// ---- consolidation ("dreaming", issue 13) ---------------------------------------------------------
// A run lives on `<prefix>.app.<app>.run.<runId>`; each change it proposes on its own subject
// `<prefix>.app.<app>.proposal.<proposalId>` (events/subjects.ts), written first with expected sequence 0
// under an id derived from the run, the phase and the change's key, so a resumed step never proposes the
// same change twice. Nothing a run writes touches a memory: an accepted proposal is applied as ordinary
// memory events whose causationId is the proposal's `proposal.accepted` event, and a revert compensates
// them with ordinary memory events too (rollback, reinstate, supersede).

/** The phases of a run, in the order they run. `candidates` is the session-end review of session:<id> memories. */
export const PhaseName = z.enum(["candidates", "prune", "merge", "refresh", "learn", "reindex"]);
export type PhaseName = z.infer<typeof PhaseName>;

/** What started a run: the scheduled dream (gated, or forced past the time and session gates) or a session's end. */
export const RunTrigger = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("dream"), forced: z.boolean() }),
  z.strictObject({ kind: z.literal("session_end"), sessionId: Id }),
]);
export type RunTrigger = z.infer<typeof RunTrigger>;

/** One version of one memory, as a proposal cites or changes it. */
export const MemoryRef = z.strictObject({ memoryId: Id, version: Version });
export type MemoryRef = z.infer<typeof MemoryRef>;

/** A span of a stored transcript (1-based, inclusive lines of its text): evidence a reviewer can open. */
export const TranscriptSpan = z.strictObject({
  sessionId: Id,
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/, "sha256:<64 lowercase hex digits>"),
  lines: z.tuple([z.number().int().min(1), z.number().int().min(1)]),
});
export type TranscriptSpan = z.infer<typeof TranscriptSpan>;

/** Why a proposal is made: the sessions, transcript spans and memories it rests on, and its numbers. */
export const Evidence = z.strictObject({
  sessions: z.array(Id).max(1000),
  transcripts: z.array(TranscriptSpan).max(200),
  memories: z.array(MemoryRef).max(200),
  /** Whole numbers: sessions, occurrences, retrievals, lines, days… */
  counts: z.record(z.string().min(1).max(64), z.number().int().min(0)),
  /** Share of the analysed sessions where the pattern was seen (learn), or null. */
  prevalence: z.number().min(0).max(1).nullable(),
  /** Other measures: similarity of a merge's sources, a score… */
  scores: z.record(z.string().min(1).max(64), z.number()),
  /** The evidence in one sentence, for a reviewer. */
  summary: oneLine(LIMITS.reasonLength),
});
export type Evidence = z.infer<typeof Evidence>;

/** A memory's content as a proposal writes it (what memory.proposed carries but its version). */
export const ProposedContent = MemoryProposedData.omit({ version: true, provenance: true });

/**
 * What accepting a proposal does, as ordinary memory events:
 * - supersede: the memory is superseded (prune; discard of a session candidate); a revert reinstates it;
 * - merge: a new memory with the merged content is proposed and approved in `scope`, and every source is
 *   superseded by it; a revert supersedes the merged memory and reinstates the sources;
 * - revise: a new version with `content` is proposed and approved (refresh); a revert rolls back to the
 *   version the proposal saw;
 * - create: a new memory is proposed and approved in `scope` (learn); a revert supersedes it;
 * - promote: a session candidate's content becomes a new memory in `scope` (team or app), proposed and
 *   approved, and the candidate is superseded by it; a revert supersedes the new one, reinstates the candidate;
 * - flag: nothing is written to memories (a contradiction for a human to resolve); accepting records it.
 */
export const ProposedChange = z.discriminatedUnion("action", [
  z.strictObject({ action: z.literal("supersede"), memory: MemoryRef }),
  z.strictObject({ action: z.literal("merge"), sources: z.array(MemoryRef).min(2).max(50), scope: Scope, content: ProposedContent }),
  z.strictObject({ action: z.literal("revise"), memory: MemoryRef, content: ProposedContent }),
  z.strictObject({ action: z.literal("create"), scope: Scope, content: ProposedContent }),
  z.strictObject({ action: z.literal("promote"), candidate: MemoryRef, scope: Scope, content: ProposedContent }),
  z.strictObject({ action: z.literal("flag"), memories: z.array(MemoryRef).min(1).max(50) }),
]);
export type ProposedChange = z.infer<typeof ProposedChange>;

/** One memory event a proposal's apply or revert wrote (the receipt a revert works from). */
export const WrittenEvent = z.strictObject({
  memoryId: Id,
  eventId: z.string().min(1).max(64),
  seq: Sequence,
  type: z.string().min(1).max(64),
});
export type WrittenEvent = z.infer<typeof WrittenEvent>;

export const RunStarted = event(
  "run.started",
  1,
  z.strictObject({
    trigger: RunTrigger,
    phases: z.array(PhaseName).min(1),
    /** The stream's last sequence when the run started: every phase reads the log as of it (a resumed step proposes the same). */
    asOfSeq: Sequence,
    /** The gates as they stood: the last completed run (null: none), sessions ended since it. */
    gates: z.strictObject({
      lastRunId: Id.nullable(),
      lastRunAt: z.iso.datetime().nullable(),
      sessionsSince: z.number().int().min(0),
      forced: z.boolean(),
    }),
    /** The lock's holder (the runner's instance) while the run lasts. */
    holder: nonEmptyLine(128),
    /** Settings the phases ran with (thresholds, analysers, repo dir): recorded for the auditor. */
    settings: z.record(z.string().min(1).max(64), z.union([z.string().max(1024), z.number(), z.boolean(), z.null()])),
  }),
);
export const RunStepCompleted = event(
  "run.step_completed",
  1,
  z.strictObject({ phase: PhaseName, proposals: z.number().int().min(0), report: oneLine(LIMITS.reasonLength).nullable() }),
);
export const RunCompleted = event(
  "run.completed",
  1,
  z.strictObject({
    proposals: z.partialRecord(PhaseName, z.number().int().min(0)),
    /** MEMORY.md as the files projection keeps it (re-index phase): within 200 lines and 25 KB. */
    index: z.strictObject({ lines: z.number().int().min(0), bytes: z.number().int().min(0), listed: z.number().int().min(0), withinLimits: z.boolean() }).nullable(),
  }),
);
export const RunReverted = event(
  "run.reverted",
  1,
  z.strictObject({ proposals: z.number().int().min(0), reason: nonEmptyLine(LIMITS.reasonLength) }),
);
export const RunEvent = z.discriminatedUnion("type", [RunStarted, RunStepCompleted, RunCompleted, RunReverted]);
export type RunEvent = z.infer<typeof RunEvent>;

export const ProposalMade = event(
  "proposal.made",
  1,
  z.strictObject({
    runId: Id,
    phase: PhaseName,
    /** Stable within the run and phase (e.g. the memory ids concerned): the proposal id is derived from it. */
    key: nonEmptyLine(512),
    change: ProposedChange,
    evidence: Evidence,
    reason: nonEmptyLine(LIMITS.reasonLength),
  }),
);
export const ProposalAccepted = event("proposal.accepted", 1, z.strictObject({ runId: Id, reason: oneLine(LIMITS.reasonLength).nullable() }));
export const ProposalApplied = event("proposal.applied", 1, z.strictObject({ runId: Id, events: z.array(WrittenEvent).max(200) }));
export const ProposalRejected = event("proposal.rejected", 1, z.strictObject({ runId: Id, reason: nonEmptyLine(LIMITS.reasonLength) }));
export const ProposalReverted = event("proposal.reverted", 1, z.strictObject({ runId: Id, events: z.array(WrittenEvent).max(200) }));
export const ProposalEvent = z.discriminatedUnion("type", [ProposalMade, ProposalAccepted, ProposalApplied, ProposalRejected, ProposalReverted]);
export type ProposalEvent = z.infer<typeof ProposalEvent>;

// ---- every event ------------------------------------------------------------------------------

export const LedgerEvent = z.discriminatedUnion("type", [
  ...MemoryEvent.options,
  ...PromotionEvent.options,
  ...SessionEvent.options,
  ...ClaimEvent.options,
  ...RunEvent.options,
  ...ProposalEvent.options,
  LedgerQuarantined,
]);
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
