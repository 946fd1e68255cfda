import { z } from "zod";
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

/**
 * What an agent sends on `<prefix>.cmd.<app>.<actorKind>.<actorId>.<verb>`. The actor is never part of
 * the payload: it is the subject the broker accepted. Unknown fields are refused so a typo
 * (`expected_seq`) fails loudly instead of silently dropping a concurrency check.
 */
const context = {
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

export const ProposeRequest = z.strictObject({
  ...context,
  /** Given: a revision of that memory (its next version). Absent: a new memory. */
  memoryId: Id.optional(),
  title: nonEmptyLine(LIMITS.titleLength),
  body: Markdown,
  scope: Scope.default("app"),
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
});

export const ShowRequest = z.strictObject({ memoryId: Id });
export const SessionShowRequest = z.strictObject({ sessionId: Id });
export const LogRequest = z.strictObject({
  memoryId: Id.optional(),
  sinceSeq: Sequence.optional(),
  limit: z.number().int().min(1).max(10_000).default(100),
});

/** Every verb the command service answers, and the schema of its payload. */
export const REQUESTS = {
  propose: ProposeRequest,
  approve: ApproveRequest,
  reject: RejectRequest,
  supersede: SupersedeRequest,
  rollback: RollbackRequest,
  session_start: SessionStartRequest,
  session_end: SessionEndRequest,
  show: ShowRequest,
  session_show: SessionShowRequest,
  log: LogRequest,
} as const;

export type Verb = keyof typeof REQUESTS;
export const VERBS = Object.keys(REQUESTS) as Verb[];
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

export interface SessionOutcome {
  sessionId: string;
  seq: number;
  eventId: string;
  type: string;
  replayed: boolean;
}
