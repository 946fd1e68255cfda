import type { IndexedMemory } from "./memory-records.js";

/**
 * What retrieval may return. Every field narrows the result; the one definition of what a filter keeps
 * is {@link matchesRetrievalFilter}, applied to the candidates of every channel, so BM25 and vector
 * results obey exactly the same rules. Channels push down what their index can evaluate exactly (app,
 * scope, kind and status as enum fields) only to cut the work.
 */
export interface RetrievalFilter {
  /** Only memories of this app (an org memory's app is "org"). */
  app?: string | undefined;
  /** One scope or any of several (`["app", "team:payments"]`). */
  scope?: string | readonly string[] | undefined;
  kind?: string | readonly string[] | undefined;
  /** Every listed tag must be on the memory (case-insensitive). */
  tags?: readonly string[] | undefined;
  /** At least one of the memory's paths is one of these or lies under one (a listed `src/payments` keeps `src/payments/webhook.ts`). */
  paths?: readonly string[] | undefined;
  /**
   * The indexes hold active versions only: supersede, reject and losing the active version remove a
   * memory from every channel. So "active" is the only status retrieval returns; naming another
   * status is refused rather than silently answered with nothing.
   */
  status?: "active" | undefined;
}

export const tagKey = (tag: string): string => tag.toLowerCase();

export const asList = (value: string | readonly string[] | undefined): readonly string[] | undefined =>
  value === undefined ? undefined : typeof value === "string" ? [value] : value;

/** `path` is `under` itself or a file/directory below it. Trailing slashes on `under` are ignored. */
export function pathIsUnder(path: string, under: string): boolean {
  const base = under.replace(/\/+$/, "");
  if (base === "") return true;
  return path === base || path.startsWith(`${base}/`);
}

export function matchesRetrievalFilter(memory: IndexedMemory, filter: RetrievalFilter): boolean {
  if (filter.app !== undefined && memory.app !== filter.app) return false;
  const scopes = asList(filter.scope);
  if (scopes && !scopes.includes(memory.scope)) return false;
  const kinds = asList(filter.kind);
  if (kinds && !kinds.includes(memory.kind)) return false;
  if (filter.status !== undefined && memory.status !== filter.status) return false;
  if (filter.tags && filter.tags.length > 0) {
    const have = new Set(memory.tags.map(tagKey));
    if (!filter.tags.every((tag) => have.has(tagKey(tag)))) return false;
  }
  if (filter.paths && filter.paths.length > 0) {
    if (!memory.paths.some((path) => filter.paths!.some((under) => pathIsUnder(path, under)))) return false;
  }
  return true;
}

/** Whether a filter needs checking after a channel's search (fields no channel can push down exactly). */
export const needsPostFilter = (filter: RetrievalFilter): boolean =>
  (filter.paths !== undefined && filter.paths.length > 0) || (filter.tags !== undefined && filter.tags.length > 0);
