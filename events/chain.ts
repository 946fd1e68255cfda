import { createHash } from "node:crypto";

/**
 * Tamper evidence. Every event written since chains were introduced carries `hash`, the SHA-256 of its
 * own canonical JSON (every field but `hash` itself), and `prevHash`, the `hash` of the event before it
 * on the same subject (null for an aggregate's first event, or when that event predates chains). Editing,
 * removing, inserting or reordering an event breaks a link that `memledger verify` finds by replaying the
 * stream (services/audit/verify.ts). The hash is over the bytes' JSON as stored, before any upcast.
 */

/** JSON with object keys sorted and undefined fields left out: one spelling per value. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (Array.isArray(value)) return `[${value.map((item) => (item === undefined ? "null" : canonicalJson(item))).join(",")}]`;
  const fields = Object.keys(value)
    .filter((key) => (value as Record<string, unknown>)[key] !== undefined)
    .sort()
    .map((key) => `${JSON.stringify(key)}:${canonicalJson((value as Record<string, unknown>)[key])}`);
  return `{${fields.join(",")}}`;
}

export const HASH_PATTERN = /^sha256:[0-9a-f]{64}$/;

/** `sha256:<hex>` of the event's canonical JSON without its `hash` field. */
export function contentHash(event: object): string {
  const { hash: _hash, ...content } = event as Record<string, unknown>;
  return `sha256:${createHash("sha256").update(canonicalJson(content)).digest("hex")}`;
}

/** The event with its link to `prevHash` and its own hash (any chain fields it carried are replaced). */
export function chained<E extends object>(event: E, prevHash: string | null): E & { prevHash: string | null; hash: string } {
  const { hash: _hash, prevHash: _prev, ...content } = event as Record<string, unknown>;
  const linked = { ...content, prevHash };
  return { ...linked, hash: contentHash(linked) } as E & { prevHash: string | null; hash: string };
}
