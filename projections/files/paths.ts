import { createHash } from "node:crypto";
import path from "node:path";
import { internal } from "../../schemas/errors.js";

/**
 * Turning ledger data (app names, scopes, memory ids) into file-system names.
 *
 * Schemas already make ids token-safe, but this layer is the last line of defence: events reach it from
 * a log that older or buggy writers may have filled, so every segment is sanitised here again and every
 * final path is checked to be inside its base directory before anything is written.
 */

/** Characters a segment may keep as they are: the ledger's own token alphabet. */
const TOKEN = /^[A-Za-z0-9_-]+$/;
const NOT_TOKEN = /[^A-Za-z0-9_-]/g;
/** Longest readable part kept from a sanitised name; the hash suffix keeps truncated names distinct. */
export const MAX_SEGMENT_CHARS = 64;

const shortHash = (text: string) => createHash("sha256").update(text, "utf8").digest("hex").slice(0, 12);

/**
 * One path segment from untrusted text. A valid token (what the schemas allow) maps to itself, so
 * ordinary files are named by their ids. Anything else (dots, slashes, NUL, fullwidth look-alikes, RTL
 * overrides, over-long names) is NFKC-normalised, reduced to the token alphabet and suffixed with
 * `.<hash of the original>`: '.' never occurs in a token, so a sanitised name can never collide with a
 * valid one, and two different hostile names stay apart. The result never starts with '.', never
 * contains a separator and is at most 77 characters long.
 */
export function safeSegment(raw: string): string {
  if (raw.length <= MAX_SEGMENT_CHARS && TOKEN.test(raw)) return raw;
  const readable = raw.normalize("NFKC").replace(NOT_TOKEN, "_").slice(0, MAX_SEGMENT_CHARS);
  return `${readable || "_"}.${shortHash(raw)}`;
}

/**
 * Folder segments for a scope: `app`, `org`, `agent/<id>`, `team/<name>`. A scope the schema would
 * refuse still gets a folder of its own, under `other/`, rather than an error that would block the
 * projection forever on one bad event.
 */
export function scopeSegments(scope: string): string[] {
  if (scope === "app" || scope === "org") return [scope];
  const match = /^(agent|team):(.+)$/s.exec(scope);
  if (match) return [match[1]!, safeSegment(match[2]!)];
  return ["other", safeSegment(scope)];
}

/** The memory file's path relative to the app directory, with '/' separators (also its link in MEMORY.md). */
export const memoryFilePath = (scope: string, memoryId: string): string =>
  [...scopeSegments(scope), `${safeSegment(memoryId)}.md`].join("/");

/** The persisted state of one memory, relative to the generation directory. */
export const memoryStatePath = (memoryId: string): string => `${STATE_DIR}/${safeSegment(memoryId)}.json`;

export const STATE_DIR = ".state";
export const CHECKPOINT_FILE = ".checkpoint.json";
export const INDEX_FILE = "MEMORY.md";

/**
 * Resolves a relative path under `base` and proves the result is strictly inside it. Sanitised segments
 * already make escaping impossible; this check is what keeps it impossible if a future change breaks that.
 */
export function resolveInside(base: string, relative: string): string {
  const resolvedBase = path.resolve(base);
  const resolved = path.resolve(resolvedBase, relative);
  const rel = path.relative(resolvedBase, resolved);
  if (rel === "" || path.isAbsolute(rel) || rel.split(path.sep)[0] === ".." || relative.includes("\0")) {
    throw internal(`refusing to write outside the projection directory: ${JSON.stringify(relative)}`);
  }
  return resolved;
}
