import { ErrorCode, MemledgerError, internal, isMemledgerError } from "../schemas/errors.js";

/**
 * An error as it crosses from a worker thread to the thread that drives it: plain data (a structured
 * clone keeps neither the class nor the code of a MemledgerError), made into a MemledgerError again on
 * the other side with the same code, message and details, and the remote stack as its cause.
 */
export interface RemoteError {
  code: ErrorCode | null;
  message: string;
  details: Record<string, unknown>;
  stack: string | undefined;
}

export const toRemoteError = (error: unknown): RemoteError =>
  isMemledgerError(error)
    ? { code: error.code, message: error.message, details: error.details, stack: error.stack }
    : { code: null, message: error instanceof Error ? error.message : String(error), details: {}, stack: error instanceof Error ? error.stack : undefined };

/** The error again, its message after `prefix` when one is given; an unknown code is `internal`. */
export function fromRemoteError(error: RemoteError, prefix = ""): MemledgerError {
  const message = `${prefix}${error.message}`;
  const cause = error.stack ?? error.message;
  return error.code !== null && Object.values(ErrorCode).includes(error.code)
    ? new MemledgerError(error.code, message, error.details, { cause })
    : internal(message, error.details, cause);
}
