import { applyEvent, emptyRecord, isMemoryEvent as isFilesMemoryEvent, type MemoryRecord as FilesRecord } from "../../projections/files/model.js";
import { SearchIndex } from "../../projections/search/index.js";
import { MemledgerError } from "../../schemas/errors.js";
import type { EventStore, StoredEvent } from "../event-store.js";
import { withinAsOf, type AsOf } from "./history.js";

/**
 * The memory records of one app (or the org) as they stood at a moment, folded from the log with the
 * projections' own pure folds: the files projection's `applyEvent` (what MEMORY.md is rendered from) and
 * the search projection's `SearchIndex.apply` (what retrieval ranks). There is no other implementation of
 * either state here: this module only decides which events to fold, and where folding starts (a verified
 * snapshot, snapshots.ts, or the stream's first event).
 */
export interface FoldedState {
  app: string;
  stream: string;
  /** The last event folded (0: none); every event at or below it and inside the bound was folded. */
  seq: number;
  /** Id and chain hash of that event: what a snapshot of this state is checked against. */
  eventId: string | null;
  eventHash: string | null;
  /** The latest event time folded (a snapshot serves a time bound only at or after it). */
  maxTime: string | null;
  /**
   * The files projection's records, by memory id, in the order each memory first appeared; null when the
   * read does not render MEMORY.md (search alone).
   */
  files: Map<string, FilesRecord> | null;
  /**
   * The search projection's index (BM25; a vector channel is attached by the reader when asked for), or
   * null when the read does not rank (MEMORY.md alone): building it is most of a fold's cost.
   */
  search: SearchIndex | null;
}

/** Generation name of every as-of search index: it is never written to the search projection's directory. */
export const AS_OF_GENERATION = "as-of";

/** Which models a read needs folded. */
export interface Models {
  files: boolean;
  search: boolean;
}

export function emptyFoldedState(app: string, stream: string, models: Models): FoldedState {
  return { app, stream, seq: 0, eventId: null, eventHash: null, maxTime: null, files: models.files ? new Map() : null, search: models.search ? new SearchIndex(app, AS_OF_GENERATION) : null };
}

/** Folds one event (in stream order, inside the bound) into both models. */
export function foldEvent(state: FoldedState, stored: StoredEvent): void {
  const { event } = stored;
  if (stored.seq <= state.seq) return;
  if (state.files && isFilesMemoryEvent(event)) {
    const id = event.aggregateId;
    state.files.set(id, applyEvent(state.files.get(id) ?? emptyRecord(), stored));
  }
  state.search?.apply([stored]);
  state.seq = stored.seq;
  state.eventId = event.id;
  state.eventHash = event.hash ?? null;
  if (state.maxTime === null || Date.parse(event.time) > Date.parse(state.maxTime)) state.maxTime = event.time;
}

const STOP = Symbol("past the as-of bound");

/**
 * Hands every event of the stream from `fromSeq` on to `each`, in order, until the first one outside
 * the bound (the log up to the first event after a time, as everywhere in audit). A stream that does not
 * exist yet has no events. The replay reads in batches: at most one batch past the bound is fetched.
 */
export async function readBounded(store: EventStore, stream: string, fromSeq: number, asOf: AsOf, each: (stored: StoredEvent) => void | Promise<void>): Promise<void> {
  try {
    if ((await store.lastSeq(stream)) < fromSeq) return;
    await store.replay(stream, { fromSeq }, async (batch) => {
      for (const stored of batch) {
        if (!withinAsOf(stored, asOf)) throw STOP;
        await each(stored);
      }
    });
  } catch (err) {
    if (err === STOP) return;
    if (err instanceof MemledgerError && err.code === "not_found") return;
    throw err;
  }
}
