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
export const conflict = (message: string, details?: Record<string, unknown>, cause?: unknown) =>
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
