import { applyEvent, emptyRecord, isMemoryEvent as isFilesMemoryEvent, type MemoryRecord as FilesRecord } from "../../projections/files/model.js";
import { SearchIndex } from "../../projections/search/index.js";
import { foldClaim, isClaimEvent } from "../../projections/claims/model.js";
import { initialClaimState, type ClaimState } from "../../commands/claim.js";
import { AppCatalog, type CatalogState } from "../hydration/catalog.js";
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

/**
 * What hydrate folds besides the memory records: hydration's own catalog (previous session, changes since,
 * fragile memories by path) and the claims (the claims projection's fold), and the time of the last event
 * folded (a lease is judged at it). Kept in its own snapshot part, so a hydrate as of a moment folds only
 * the events after a snapshot; without that part (an older snapshot), it is folded from the stream's first event.
 */
export interface HydrationFold {
  catalog: AppCatalog;
  claims: Map<string, ClaimState>;
  lastTime: string | null;
}

/** The hydration fold as JSON (a snapshot part). */
export interface HydrationFoldState {
  catalog: CatalogState;
  claims: [claimId: string, state: ClaimState][];
  lastTime: string | null;
}

export const emptyHydrationFold = (app: string): HydrationFold => ({ catalog: new AppCatalog(app), claims: new Map(), lastTime: null });

/** Folds one event into the hydration fold (idempotent by sequence, as the catalog is). */
export function foldHydrationEvent(fold: HydrationFold, stored: StoredEvent): void {
  if (stored.seq <= fold.catalog.appliedSeq) return;
  fold.catalog.apply([stored]);
  const { event } = stored;
  if (isClaimEvent(event)) fold.claims.set(event.aggregateId, foldClaim(fold.claims.get(event.aggregateId) ?? initialClaimState(), event));
  fold.lastTime = event.time;
}

export const exportHydrationFold = (fold: HydrationFold): HydrationFoldState => ({ catalog: fold.catalog.exportState(), claims: [...fold.claims.entries()], lastTime: fold.lastTime });

/** The fold from its JSON; throws on anything not shaped as exported (the caller folds from the log instead). */
export function restoreHydrationFold(state: HydrationFoldState, app: string, seq: number): HydrationFold {
  const catalog = AppCatalog.restore(state?.catalog, app);
  if (catalog.appliedSeq !== seq) throw new Error(`its catalog is at ${catalog.appliedSeq}, not ${seq}`);
  if (!Array.isArray(state.claims) || !state.claims.every((e) => Array.isArray(e) && typeof e[0] === "string" && typeof e[1] === "object" && e[1] !== null)) throw new Error("its claims are malformed");
  if (state.lastTime !== null && typeof state.lastTime !== "string") throw new Error("its last time is malformed");
  return { catalog, claims: new Map(state.claims), lastTime: state.lastTime };
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
