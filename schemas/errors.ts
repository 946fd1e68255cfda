/**
 * The one registry of error codes. Every error that crosses a process boundary (a command reply,
 * a CLI exit, an SDK rejection) carries one of these codes, so callers branch on data, not on text.
 */
export const ErrorCode = {
  /** The input is malformed: a schema check failed. Nothing was appended. */
  invalid: "invalid",
  /** The state moved on (stale expected sequence) or forbids the transition. Nothing was appended. */
  conflict: "conflict",
  /** The actor may not do this. Nothing was appended. */
  forbidden: "forbidden",
  /** The memory, version or session does not exist. Nothing was appended. */
  not_found: "not_found",
  /** NATS, JetStream or another dependency could not be reached in time. Retry with the same key. */
  unavailable: "unavailable",
  /** A bug or an unexpected failure. Retry with the same key is safe. */
  internal: "internal",
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** The CLI's exit status for each code (documented in docs/commands-and-errors.md). */
export const EXIT_CODE: Record<ErrorCode, number> = {
  invalid: 2,
  conflict: 3,
  forbidden: 4,
  not_found: 5,
  unavailable: 1,
  internal: 1,
};

/**
 * Why a `conflict` happened, in `details.reason`: callers branch on these, never on the message. One
 * registry, like the codes; a conflict without a reason is a stale `expectedSeq` (details.currentSeq).
 */
export const ConflictReason = {
  // memories
  already_active: "already_active",
  already_approved: "already_approved",
  already_rejected: "already_rejected",
  no_pending_version: "no_pending_version",
  no_active_version: "no_active_version",
  not_approved: "not_approved",
  never_approved: "never_approved",
  superseded: "superseded",
  not_superseded: "not_superseded",
  // promotions and the org
  already_promoted: "already_promoted",
  already_org: "already_org",
  // sessions
  already_started: "already_started",
  already_ended: "already_ended",
  // tasks and locks
  already_open: "already_open",
  already_held: "already_held",
  held: "held",
  not_held: "not_held",
  not_holder: "not_holder",
  expired: "expired",
  done: "done",
  name_mismatch: "name_mismatch",
  // consolidation runs and their proposals (commands/run.ts, commands/proposal.ts)
  run_started: "run_started",
  run_not_started: "run_not_started",
  run_completed: "run_completed",
  run_reverted: "run_reverted",
  run_not_completed: "run_not_completed",
  step_done: "step_done",
  step_out_of_order: "step_out_of_order",
  already_proposed: "already_proposed",
  already_decided: "already_decided",
  not_accepted: "not_accepted",
  already_applied: "already_applied",
  not_applied: "not_applied",
  already_reverted: "already_reverted",
  memory_moved: "memory_moved",
  lock_held: "lock_held",
  // idempotency keys
  key_reused: "key_reused",
  // operators
  already_quarantined: "already_quarantined",
  valid_event: "valid_event",
  // instances and leases
  instance_running: "instance_running",
  lease_lost: "lease_lost",
  // read-model targets (a former leader, a rebuild that replaced the generation)
  fenced: "fenced",
  checkpoint_moved: "checkpoint_moved",
  generation_replaced: "generation_replaced",
} as const;

export type ConflictReason = (typeof ConflictReason)[keyof typeof ConflictReason];

/**
 * Every failure memledger reports: a code from the registry, a message for people, details for programs,
 * and, like the NATS client's errors, the `cause` it wraps (a JetStream API error, an I/O error), so the
 * operator's log keeps the chain while callers branch on the code.
 */
export class MemledgerError extends Error {
  override readonly name = "MemledgerError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  toJSON(): { code: ErrorCode; message: string; details: Record<string, unknown> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

export const invalid = (message: string, details?: Record<string, unknown>, cause?: unknown) =>
  new MemledgerError(ErrorCode.invalid, message, details, cause === undefined ? undefined : { cause });
export const conflict = (message: string, details?: { reason?: ConflictReason } & Record<string, unknown>, cause?: unknown) =>
  new MemledgerError(ErrorCode.conflict, message, details, cause === undefined ? undefined : { cause });
export const forbidden = (message: string, details?: Record<string, unknown>, cause?: unknown) =>
  new MemledgerError(ErrorCode.forbidden, message, details, cause === undefined ? undefined : { cause });
export const notFound = (message: string, details?: Record<string, unknown>, cause?: unknown) =>
  new MemledgerError(ErrorCode.not_found, message, details, cause === undefined ? undefined : { cause });
export const unavailable = (message: string, details?: Record<string, unknown>, cause?: unknown) =>
  new MemledgerError(ErrorCode.unavailable, message, details, cause === undefined ? undefined : { cause });

export const internal = (message: string, details?: Record<string, unknown>, cause?: unknown) =>
  new MemledgerError(ErrorCode.internal, message, details, cause === undefined ? undefined : { cause });

export const isMemledgerError = (err: unknown): err is MemledgerError => err instanceof MemledgerError;
