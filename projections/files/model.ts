import { foldMemoryFields, memoryDecider, memoryStatus, activeVersionOf, type MemoryState, type MemoryStatus, type MemoryVersion } from "../../commands/memory.js";
import { isMemoryEvent, type LedgerEvent, type MemoryEvent } from "../../schemas/events.js";
import type { Actor, MemoryKind } from "../../schemas/primitives.js";
import type { ProjectedEvent } from "../projection.js";
import { memoryFilePath } from "./paths.js";

/**
 * The pure model of the file projection: what one memory's record holds and how one event changes it.
 * No I/O here; the target (target.ts) loads, folds and writes these records.
 */

/** Who did something, from where and when: copied from an event envelope. */
export interface Provenance {
  actor: Actor;
  session: string | null;
  branch: string | null;
  time: string;
}

/** Envelope facts MemoryState does not keep but the file shows: where each version was proposed and decided. */
export interface VersionProvenance {
  proposal: Provenance | null;
  decision: Provenance | null;
}

/** Everything needed to continue after a restart and to re-render the memory's file byte for byte. */
export interface MemoryRecord {
  /** Stream sequence of the last event folded into this record. */
  seq: number;
  /** The full fold of the memory's events (pending versions included), by the decider's own fold without its applied-event memo (foldMemoryFields). */
  state: MemoryState;
  /** Keyed by version number (as a string: JSON object keys). */
  provenance: Record<string, VersionProvenance>;
}


export { isMemoryEvent };

export const emptyRecord = (): MemoryRecord => ({ seq: 0, state: memoryDecider.initialState(), provenance: {} });

const provenanceOf = (event: MemoryEvent): Provenance => ({
  actor: event.actor,
  session: event.sessionId,
  branch: event.git?.branch ?? null,
  time: event.time,
});

/**
 * Folds one event into a memory's record. Idempotent by sequence: an event at or below the record's
 * sequence is ignored (the stream delivers in order; the command side never appends an event id twice,
 * so the decider's applied-event memo is not kept here: see foldMemoryFields). Returns the same object
 * when nothing changed.
 */
export function applyEvent(record: MemoryRecord, projected: ProjectedEvent): MemoryRecord {
  const { event, seq } = projected;
  if (!isMemoryEvent(event) || seq <= record.seq) return record;
  const state = foldMemoryFields(record.state, event);
  let provenance = record.provenance;
  const touch = (version: number, part: keyof VersionProvenance) => {
    if (!state.versions.some((v) => v.version === version)) return;
    const key = String(version);
    const current = provenance[key] ?? { proposal: null, decision: null };
    // Copied then extended: a spread with a computed key runs on V8's slow path (see memoryStateAfter).
    const next: VersionProvenance = part === "proposal" ? { proposal: provenanceOf(event), decision: current.decision } : { proposal: current.proposal, decision: provenanceOf(event) };
    provenance = Object.assign({}, provenance);
    provenance[key] = next;
  };
  if (event.type === "memory.proposed") touch(event.data.version, "proposal");
  if (event.type === "memory.approved" || event.type === "memory.rejected") touch(event.data.version, "decision");
  return { seq, state, provenance };
}

/**
 * The version a memory's file shows: the active one; with none yet, the latest pending proposal; with
 * neither (every version rejected), the latest version.
 */
export function shownVersion(state: MemoryState): MemoryVersion | undefined {
  return activeVersionOf(state) ?? state.versions.findLast((v) => v.status === "proposed") ?? state.versions.at(-1);
}

/** What MEMORY.md needs of one memory, kept in memory for all of them so the index never re-reads files. */
export interface IndexEntry {
  id: string;
  /** Link target, relative to the app directory. */
  file: string;
  title: string;
  kind: MemoryKind;
  importance: number;
  status: MemoryStatus;
  scope: string;
  seq: number;
}

/** Memories the index lists: in force or awaiting review; rejected and superseded ones stay out. */
export const isListed = (entry: IndexEntry): boolean => entry.status === "active" || entry.status === "proposed";

export function indexEntryOf(record: MemoryRecord): IndexEntry | undefined {
  const { state } = record;
  const shown = shownVersion(state);
  if (state.id === null || !shown) return undefined;
  const scope = state.scope ?? "app";
  return {
    id: state.id,
    file: memoryFilePath(scope, state.id),
    title: shown.title,
    kind: shown.kind,
    importance: shown.importance,
    status: memoryStatus(state),
    scope,
    seq: record.seq,
  };
}
