/**
 * One spelling per lock. A lock names a module or a file path, and its aggregate id is a hash of that
 * name (commands/claim.ts claimIdOf), so `src/payments/webhook.ts`, `./src/payments/webhook.ts` and
 * `src//payments/webhook.ts` would be three locks, held by three agents at once, for one file. Every lock
 * name is brought to its normal form before it names an aggregate (schemas/commands.ts), the way git
 * spells paths: relative to the repository root, `/` between segments, nothing redundant.
 *
 * Normal form, lexically (the file system is never asked; a symlink stays a different path):
 *   - the text is Unicode NFC (a name typed on macOS, often NFD, and elsewhere is one name), and
 *     whitespace around the name and around each segment is dropped;
 *   - `\` is a separator, as it is in a Windows spelling of the same path (git paths never contain one);
 *   - empty segments (`a//b`, a leading `./`, a trailing `/`) and `.` segments go; `x/..` goes;
 *   - the repository root itself is `.`.
 * Refused, because they name no path inside the repository or name it ambiguously: a path that climbs
 * out of it (`../x`, `a/../../x`), and an absolute one (`/x`, `C:/x`, `~/x`): the same file spelled from
 * two clones or home directories would again be two locks.
 *
 * A name already in normal form is returned unchanged, so every lock name stored before normalisation
 * that was already normal keeps its aggregate id; a stored name that was not (`./a`) is a lock of the
 * past whose lease lapses on its own.
 */

export type LockNameResult = { ok: true; name: string } | { ok: false; reason: string };

/** A first segment that anchors the path outside the repository: a drive (`C:`) or a home (`~`). */
const ANCHOR = /^(?:[A-Za-z]:|~)$/;

/** The normal form of a lock name, or why it has none. Idempotent: a normal name is returned as it is. */
export function normaliseLockName(name: string): LockNameResult {
  const text = name.normalize("NFC").replace(/\\/g, "/").trim();
  const absolute = { ok: false, reason: "is absolute: name the path relative to the repository root (src/payments/webhook.ts)" } as const;
  if (text.startsWith("/")) return absolute;
  const segments: string[] = [];
  for (const raw of text.split("/")) {
    // Surrounding whitespace in a segment is dropped too, so the result never starts or ends with any.
    const segment = raw.trim();
    if (segment === "" || segment === ".") continue;
    if (segment === "..") {
      if (segments.length === 0) return { ok: false, reason: "climbs out of the repository ('..' above its root)" };
      segments.pop();
      continue;
    }
    // Whatever comes first in the result (also after `a/../`) must not anchor it outside the repository.
    if (segments.length === 0 && ANCHOR.test(segment)) return absolute;
    segments.push(segment);
  }
  return { ok: true, name: segments.length === 0 ? "." : segments.join("/") };
}
