import { rename } from "node:fs/promises";
import { invalid, isMemledgerError, unavailable, type MemledgerError } from "../schemas/errors.js";

/**
 * Read-model state on disk that exists but cannot be used: cut short, damaged, of a format this build
 * does not read. The log is the truth, so such state is never a reason to stop or to loop: the live
 * projection sets it aside (`setAside`) and rebuilds from the log; a reader treats it as absent.
 * I/O failures (permissions, a failing disk) are not this error: they need the operator.
 */
const UNUSABLE = "unusable_state";

/** `what` names the file or directory, e.g. `search snapshot /data/search/app1/g1.snapshot`. */
export function unusableState(what: string, file: string, problem: string): MemledgerError {
  return invalid(`${what} is unusable: ${problem}`, { file, reason: UNUSABLE });
}

export const isUnusableState = (error: unknown): error is MemledgerError => isMemledgerError(error) && error.details.reason === UNUSABLE;

/** The file or directory an unusable-state error is about. */
export const unusableFile = (error: MemledgerError): string => String(error.details.file);

/**
 * Renames `path` to `<path>.unusable-<timestamp>` beside it, for the operator to inspect or delete;
 * returns the new name, or null when `path` was already gone. Nothing is deleted: a build with a bug
 * in its loader must not destroy the evidence.
 */
export async function setAside(path: string, now: Date = new Date()): Promise<string | null> {
  const aside = `${path}.unusable-${now.toISOString().replace(/[:.]/g, "-")}`;
  try {
    await rename(path, aside);
    return aside;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw needsOperator(error, `cannot set aside unusable read-model state ${path}`, "move it away (or fix the directory's permissions) and start again");
  }
}

/**
 * An I/O failure on read-model state (permissions, a full or failing disk) as `unavailable`, naming the
 * file and what to do: a restart does not cure it, so `memledger up` stops at once on it. Other errors
 * (already typed, or without a file) are returned unchanged.
 */
export function needsOperator(error: unknown, what: string, action: string): unknown {
  const errno = error as NodeJS.ErrnoException;
  if (isMemledgerError(error) || typeof errno?.code !== "string") return error;
  const file = errno.path ?? "";
  return unavailable(`${what}${file && !what.includes(file) ? ` (${file})` : ""}: ${errno.code}: ${action}`, { file, code: errno.code });
}
