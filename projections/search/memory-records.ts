import { activeVersionOf, foldMemoryFields, initialMemoryState, memoryStatus, type MemoryState } from "../../commands/memory.js";
import type { LedgerEvent, MemoryEvent } from "../../schemas/events.js";
import type { MemoryKind } from "../../schemas/primitives.js";

/**
 * The pure half of the search projection: what each memory looks like to retrieval, and how one event
 * changes it. No Orama, no files; the index (search-index.ts) applies the changes computed here.
 *
 * A memory is folded with the command side's own fold (`foldMemoryFields`: the decider's evolve unfrozen, without its applied-event memo), so "active", "approved" and
 * "superseded" mean exactly what they mean when commands are decided. What the projection keeps between
 * events is that state made compact:
 *   - rejected versions are dropped: they can never be approved or rolled back to;
 *   - a superseded memory keeps its versions too: a consolidation revert may reinstate it
 *     (`memory.reinstated`), and it is then indexed again at its active version;
 *   - `applied` (event ids, for command retries) is dropped: the projection deduplicates by stream
 *     sequence instead, since its events arrive in stream order.
 * What stays are pending versions (an approval must be able to index one) and approved versions (a
 * rollback must be able to index one), with their audit fields, which are small.
 */
export type MemoryRecord = MemoryState;

/** The view of one active memory that retrieval channels index and results are built from. */
export interface IndexedMemory {
  memoryId: string;
  version: number;
  app: string;
  scope: string;
  kind: MemoryKind;
  status: "active";
  title: string;
  body: string;
  tags: string[];
  paths: string[];
  importance: number;
}

/** What a channel must do after one event: replace a memory's document, remove it, or nothing. */
export type IndexChange = { type: "upsert"; memory: IndexedMemory } | { type: "remove"; memoryId: string } | null;

export const isMemoryEvent = (event: LedgerEvent): event is MemoryEvent => event.type.startsWith("memory.");

export function compactMemoryState(state: MemoryState): MemoryRecord {
  const versions = state.versions.filter((v) => v.status !== "rejected");
  if (versions.length === state.versions.length && Object.keys(state.applied).length === 0) return state;
  return { ...state, versions, applied: {} };
}

/** The indexed view of a memory, or null when it has nothing that retrieval may return. */
export function indexedViewOf(record: MemoryRecord): IndexedMemory | null {
  if (memoryStatus(record) !== "active") return null;
  const active = activeVersionOf(record);
  if (!active || record.id === null || record.app === null || record.scope === null) return null;
  return {
    memoryId: record.id,
    version: active.version,
    app: record.app,
    scope: record.scope,
    kind: active.kind,
    status: "active",
    title: active.title,
    body: active.body,
    tags: active.tags,
    paths: active.paths,
    importance: active.importance,
  };
}

/**
 * Folds one memory event into its record and says what the index must do. Versions are immutable once
 * proposed, so the indexed document changes exactly when the active version number (or activeness) does.
 */
export function evolveMemoryRecord(
  record: MemoryRecord | undefined,
  event: MemoryEvent,
): { record: MemoryRecord; change: IndexChange } {
  const before = record ?? initialMemoryState();
  const after = compactMemoryState(foldMemoryFields(before, event));
  const wasIndexed = indexedViewOf(before);
  const nowIndexed = indexedViewOf(after);
  let change: IndexChange = null;
  if (nowIndexed && nowIndexed.version !== wasIndexed?.version) change = { type: "upsert", memory: nowIndexed };
  else if (!nowIndexed && wasIndexed) change = { type: "remove", memoryId: wasIndexed.memoryId };
  return { record: after, change };
}
