import { z } from "zod";
import { RetrievalMode } from "./retrieval.js";
import {
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
import { ClaimKind, LeaseMs, LockName, Priority, TaskName, TranscriptRef } from "./events.js";
import { normaliseLockName } from "./lock-name.js";

/**
 * What an agent sends on `<prefix>.cmd.<app>.<actorKind>.<actorId>.<verb>`. The actor is never part of
 * the payload: it is the subject the broker accepted. Unknown fields are refused so a typo
 * (`expected_seq`) fails loudly instead of silently dropping a concurrency check.
 */
const context = {
  /**
   * Ignored: the actor is the subject's, which broker permissions pin to the sender. A payload that
   * claims another identity is accepted and recorded as the subject's actor (the field is dropped).
   */
  actor: z.unknown().transform(() => undefined).optional(),
  /** Sequence of the memory's last event as the sender read it; a stale one is a conflict. */
  expectedSeq: Sequence.optional(),
  /** Idempotency key: the same key on the same memory yields the same result and one event, forever. */
  key: nonEmptyLine(LIMITS.keyLength).optional(),
  sessionId: Id.optional(),
  transcriptRef: oneLine(LIMITS.refLength).optional(),
  git: GitContext.optional(),
  causationId: oneLine(128).optional(),
  correlationId: nonEmptyLine(128).optional(),
};

const uniq = <T>(items: T[]) => [...new Set(items)];

/**
 * For queries answered from read models (projections that follow the log): the stream sequence the
 * sender has seen (the highest `seq` it wrote or read; the SDK tracks it). The answering instance waits,
 * bounded, until its read models applied it, so an agent reads its own writes whichever instance
 * answers; otherwise `unavailable`, naming the lag.
 */
const consistency = { minSeq: Sequence.optional() };

export const ProposeRequest = z.strictObject({
  ...context,
  /** Given: a revision of that memory (its next version). Absent: a new memory. */
  memoryId: Id.optional(),
  title: nonEmptyLine(LIMITS.titleLength),
  body: Markdown,
  /** Default: `app` for a new memory; a revision keeps its memory's scope. */
  scope: Scope.optional(),
  kind: MemoryKind.default("note"),
  tags: z.array(Tag).max(LIMITS.tags).default([]).transform(uniq),
  paths: z.array(FilePath).max(LIMITS.paths).default([]).transform(uniq),
  importance: Importance.default(3),
});

export const ApproveRequest = z.strictObject({ ...context, memoryId: Id, version: Version.optional() });
export const RejectRequest = z.strictObject({
  ...context,
  memoryId: Id,
  version: Version.optional(),
  reason: nonEmptyLine(LIMITS.reasonLength),
});
export const SupersedeRequest = z.strictObject({
  ...context,
  memoryId: Id,
  by: Id.optional(),
  reason: nonEmptyLine(LIMITS.reasonLength),
});
export const RollbackRequest = z.strictObject({ ...context, memoryId: Id, toVersion: Version });
/** Asks the curator to make the memory's active (approved) version org knowledge. */
export const PromoteRequest = z.strictObject({ ...context, memoryId: Id, reason: nonEmptyLine(LIMITS.reasonLength).optional() });

/**
 * An operator sets aside the message at stream sequence `seq` of the app's stream (the org's with app
 * `org`), which is not a valid event and blocks the projections (services/quarantine.ts). Once per
 * sequence; admins only.
 */
export const QuarantineRequest = z.strictObject({ ...context, seq: z.number().int().min(1), reason: nonEmptyLine(LIMITS.reasonLength) });

export const SessionStartRequest = z.strictObject({
  ...context,
  task: oneLine(LIMITS.taskLength).default(""),
  branch: oneLine(LIMITS.branchLength).optional(),
  worktree: oneLine(LIMITS.refLength).optional(),
});
export const SessionEndRequest = z.strictObject({
  ...context,
  sessionId: Id,
  summary: oneLine(LIMITS.reasonLength).optional(),
  /**
   * The session's transcript, already stored in the transcripts object store (services/transcripts.ts:
   * the SDK's endSession({transcriptFile}) stores it first); the service checks the object is there.
   */
  transcript: TranscriptRef.optional(),
});

export const ShowRequest = z.strictObject({ memoryId: Id });
export const SessionShowRequest = z.strictObject({ sessionId: Id });
/** A memory's history (services/audit/history.ts), read from the log; the read policy applies as for `show`. */
export const HistoryRequest = z.strictObject({ memoryId: Id });
export const LogRequest = z.strictObject({
  memoryId: Id.optional(),
  sinceSeq: Sequence.optional(),
  limit: z.number().int().min(1).max(10_000).default(100),
});

// ---- claims and locks -------------------------------------------------------------------------

/** A task is named by an id; a lock by a module or file path (any one line). */
const claimTarget = { kind: ClaimKind.default("task"), name: LockName };
const taskNameIsId = (r: { kind: ClaimKind; name: string }, ctx: z.RefinementCtx) => {
  if (r.kind !== "task") return;
  const parsed = TaskName.safeParse(r.name);
  if (!parsed.success) ctx.addIssue({ code: "custom", path: ["name"], message: `a task name is an id: ${parsed.error.issues[0]?.message}` });
};

/**
 * A lock's name in its one normal spelling (schemas/lock-name.ts) before it names an aggregate, so that
 * `./src/a.ts`, `src//a.ts` and `src/a.ts` are one lock; a path outside the repository is `invalid`.
 */
const normalLockName = <R extends { kind: ClaimKind; name: string }>(r: R, ctx: z.RefinementCtx): R => {
  if (r.kind !== "lock") return r;
  const normal = normaliseLockName(r.name);
  if (normal.ok) return normal.name === r.name ? r : { ...r, name: normal.name };
  ctx.addIssue({ code: "custom", path: ["name"], message: `lock ${JSON.stringify(r.name)} ${normal.reason}` });
  return z.NEVER;
};

export const ClaimRequest = z
  .strictObject({
    ...context,
    ...claimTarget,
    /** Lease length; default 10 minutes, at most 24 hours. */
    ttlMs: LeaseMs.default(10 * 60 * 1000),
    /** Used only when the claim opens the task (it did not exist yet). */
    priority: Priority.default(3),
  })
  .superRefine(taskNameIsId)
  .transform(normalLockName);
export const RenewRequest = z
  .strictObject({ ...context, ...claimTarget, /** Default: the current lease length. */ ttlMs: LeaseMs.optional() })
  .superRefine(taskNameIsId)
  .transform(normalLockName);
export const ReleaseRequest = z
  .strictObject({ ...context, ...claimTarget, /** Tasks only: finished for good. */ done: z.boolean().default(false) })
  .superRefine(taskNameIsId)
  .superRefine((r, ctx) => {
    if (r.done && r.kind !== "task") ctx.addIssue({ code: "custom", path: ["done"], message: "only a task can be done" });
  })
  .transform(normalLockName);
export const OpenTaskRequest = z.strictObject({
  ...context,
  name: TaskName,
  title: oneLine(LIMITS.titleLength).optional(),
  priority: Priority.default(3),
});
export const ClaimShowRequest = z.strictObject({ ...claimTarget }).superRefine(taskNameIsId).transform(normalLockName);
export const ClaimsRequest = z.strictObject({ ...consistency, agent: Id.optional() });
export const TasksRequest = z.strictObject({
  ...consistency,
  limit: z.number().int().min(1).max(10_000).default(100),
  /** Only tasks nobody holds a live lease on. */
  unclaimed: z.boolean().default(false),
});

/**
 * A context pack for an agent starting a session (services/hydration). A read: nothing is appended.
 * `agent` defaults to the subject's actor id (an orchestrator may hydrate for the agent it starts).
 */
export const HydrateRequest = z.strictObject({
  ...consistency,
  agent: Id.optional(),
  task: oneLine(LIMITS.taskLength).default(""),
  branch: oneLine(LIMITS.branchLength).optional(),
  paths: z.array(FilePath).max(LIMITS.paths).default([]).transform(uniq),
  /** Token ceiling for the markdown (o200k_base); the pack never exceeds it. */
  budget: z.number().int().min(1).max(200_000).default(4000),
  /** The agent's current session, so "changes since your last session" looks past it. */
  sessionId: Id.optional(),
});

/**
 * Hybrid (BM25 + vector) search over the app's and the org's active memories, in the answering
 * instance's live search index. A read: nothing is appended.
 */
export const SearchRequest = z.strictObject({
  ...consistency,
  query: nonEmptyLine(LIMITS.taskLength),
  /** Default: hybrid when the index has vectors, bm25 when it has none. */
  mode: RetrievalMode.optional(),
  limit: z.number().int().min(1).max(100).default(10),
  /** Only these scopes (one or several). */
  scope: z.union([Scope, z.array(Scope).min(1).max(LIMITS.tags)]).optional(),
  kind: z.union([MemoryKind, z.array(MemoryKind).min(1)]).optional(),
  /** Every one of these tags. */
  tags: z.array(Tag).max(LIMITS.tags).optional(),
  /** A path of the memory is one of these or lies under one. */
  paths: z.array(FilePath).max(LIMITS.paths).optional(),
  /** The sender's session: what it was shown is recorded there (a `session.exposed` receipt). */
  sessionId: Id.optional(),
});

// ---- consolidation review (services/dream/review.ts; docs/consolidation.md) ---------------------------

/**
 * A run with its proposals, their evidence and status. Needs read access to scope `app`. A reply holds
 * the proposals from `from` (their index, oldest first) on, as many as fit in one NATS message; its
 * `proposalsNext` is where the next page starts (null: this page ends the run). The SDK's dreamShow
 * reads every page.
 */
export const DreamShowRequest = z.strictObject({ runId: Id, from: z.number().int().min(0).default(0) });
/** The app's runs, newest first. */
export const DreamListRequest = z.strictObject({ limit: z.number().int().min(1).max(1000).default(20) });
/**
 * Accept (and apply) some proposals of a completed run, or every undecided one (`proposalIds` empty).
 * No idempotency key: every event it writes has an id derived from the proposal, so a retry replays.
 * Governed by the policy's `dream` verb (default: humans).
 */
export const DreamAcceptRequest = z.strictObject({
  runId: Id,
  proposalIds: z.array(Id).max(1000).default([]),
  reason: oneLine(LIMITS.reasonLength).optional(),
});
export const DreamRejectRequest = z.strictObject({
  runId: Id,
  proposalIds: z.array(Id).max(1000).default([]),
  reason: nonEmptyLine(LIMITS.reasonLength),
});
/** Undo every applied change of a run by compensating memory events. */
export const DreamRevertRequest = z.strictObject({ runId: Id, reason: nonEmptyLine(LIMITS.reasonLength) });

/** Every verb the command service answers, and the schema of its payload. */
export const REQUESTS = {
  propose: ProposeRequest,
  approve: ApproveRequest,
  reject: RejectRequest,
  supersede: SupersedeRequest,
  rollback: RollbackRequest,
  promote: PromoteRequest,
  quarantine: QuarantineRequest,
  session_start: SessionStartRequest,
  session_end: SessionEndRequest,
  show: ShowRequest,
  session_show: SessionShowRequest,
  history: HistoryRequest,
  log: LogRequest,
  open_task: OpenTaskRequest,
  claim: ClaimRequest,
  renew: RenewRequest,
  release: ReleaseRequest,
  claim_show: ClaimShowRequest,
  claims: ClaimsRequest,
  tasks: TasksRequest,
  hydrate: HydrateRequest,
  search: SearchRequest,
  dream_show: DreamShowRequest,
  dream_list: DreamListRequest,
  dream_accept: DreamAcceptRequest,
  dream_reject: DreamRejectRequest,
  dream_revert: DreamRevertRequest,
} as const;

export type Verb = keyof typeof REQUESTS;
export const VERBS = Object.keys(REQUESTS) as Verb[];
/** The fields a verb's payload may carry: the object schema's, under any refinements and transforms (pipes). */
function fieldsOf(verb: Verb): string[] {
  type Inspectable = { shape?: object; _zod?: { def?: { in?: Inspectable } } };
  let schema: Inspectable | undefined = REQUESTS[verb] as unknown as Inspectable;
  while (schema && !schema.shape) schema = schema._zod?.def?.in;
  return Object.keys(schema?.shape ?? {});
}
/** Verbs that append (they take an idempotency `key`): the SDK keys each one, so a retry never duplicates. */
export const WRITE_VERBS: ReadonlySet<Verb> = new Set(VERBS.filter((verb) => fieldsOf(verb).includes("key")));
/**
 * Verbs that may append events: the writes, and the consolidation review verbs, which take no key (each
 * event they append has an id derived from its proposal, so a retry replays). Every other verb reads
 * (search and hydrate record what they showed afterwards, in batches: services/exposure.ts).
 */
export const APPENDING_VERBS: ReadonlySet<Verb> = new Set<Verb>([...WRITE_VERBS, "dream_accept", "dream_reject", "dream_revert"]);
/** Queries answered from read models (they take `minSeq`): the SDK sends the highest sequence it has seen. */
export const READ_MODEL_VERBS: ReadonlySet<Verb> = new Set(VERBS.filter((verb) => fieldsOf(verb).includes("minSeq")));
export type RequestOf<V extends Verb> = z.input<(typeof REQUESTS)[V]>;
export type ParsedRequestOf<V extends Verb> = z.output<(typeof REQUESTS)[V]>;

/** The reply to every request: one JSON envelope. */
export type Reply<T> =
  | { ok: true; result: T }
  | { ok: false; error: { code: string; message: string; details?: Record<string, unknown> } };

export interface AppendOutcome {
  memoryId: string;
  version: number | null;
  seq: number;
  eventId: string;
  type: string;
  /** True when this reply answers a retry of a command that was already applied. */
  replayed: boolean;
}

/** The reply to promote: the request as appended on the memory's subject; the curator decides later. */
export interface PromoteOutcome {
  memoryId: string;
  promotionId: string;
  version: number;
  seq: number;
  eventId: string;
  type: string;
  replayed: boolean;
}

export interface SessionOutcome {
  sessionId: string;
  seq: number;
  eventId: string;
  type: string;
  replayed: boolean;
}

/** The reply to open_task, claim, renew and release: the claim as the appended event left it. */
export interface ClaimOutcome {
  claimId: string;
  kind: ClaimKind;
  name: string;
  /** The holder after the event (null after a release). */
  holder: string | null;
  expiresAt: string | null;
  /** Whose lapsed lease this claim took over, if it did. */
  takeoverOf: { holder: string; expiresAt: string } | null;
  done: boolean;
  seq: number;
  eventId: string;
  type: string;
  replayed: boolean;
}
