import { createTwoFilesPatch } from "diff";
import { memoryDecider, memoryStatus, type MemoryState, type MemoryVersion } from "../../commands/memory.js";
import { pathsOverlap } from "../hydration/paths.js";
import { notFound } from "../../schemas/errors.js";
import type { LedgerEvent } from "../../schemas/events.js";
import type { Actor, GitContext } from "../../schemas/primitives.js";
import type { EventStore, StoredEvent } from "../event-store.js";

/**
 * What auditors read: a memory's history, the difference between two of its versions, and the memories
 * that concern a path. Every answer is folded from the log with the deciders' own evolve (no second
 * implementation of a memory's state), reading the stream directly, so a read-only user can run it.
 */

/** One event of a memory's history, with everything its envelope says about who, where, why and when. */
export interface HistoryEntry {
  seq: number;
  eventId: string;
  type: LedgerEvent["type"];
  time: string;
  /** The version the event is about (proposed, approved, rejected, rolled back to); null for supersede. */
  version: number | null;
  actor: Actor;
  sessionId: string | null;
  git: GitContext | null;
  transcriptRef: string | null;
  /** A rejection's or supersession's reason. */
  reason: string | null;
  causationId: string | null;
  correlationId: string;
  /** What the event did, in a few words (a proposal's title, a rollback's versions, a successor). */
  summary: string;
}

export interface MemoryHistory {
  app: string;
  memoryId: string;
  /** The memory as the log has it now (or at `asOfSeq`). */
  state: MemoryState;
  /** Stream sequence of its last event (at or below `asOfSeq`). */
  seq: number;
  entries: HistoryEntry[];
}

export interface AsOf {
  /** Only events at or below this stream sequence. */
  seq?: number | undefined;
  /** Only events at or before this time (ISO 8601); the log's own times, which grow with the sequence. */
  time?: string | undefined;
}

const versionOf = (event: LedgerEvent): number | null => {
  const data = event.data as { version?: number; toVersion?: number };
  return data.version ?? data.toVersion ?? null;
};

function summaryOf(event: LedgerEvent): string {
  switch (event.type) {
    case "memory.proposed":
      return `v${event.data.version} proposed: ${event.data.title}`;
    case "memory.approved":
      return `v${event.data.version} approved`;
    case "memory.rejected":
      return `v${event.data.version} rejected`;
    case "memory.superseded":
      return event.data.by ? `superseded by ${event.data.by}` : "superseded";
    case "memory.rolled_back":
      return `rolled back from v${event.data.fromVersion} to v${event.data.toVersion}`;
    case "memory.reinstated":
      return "reinstated";
    default:
      return event.type;
  }
}

const reasonOf = (event: LedgerEvent): string | null => (event.data as { reason?: string }).reason ?? null;

/** True when the event is inside the as-of bound (no bound: always). */
export function withinAsOf(stored: Pick<StoredEvent, "seq" | "event">, asOf: AsOf = {}): boolean {
  if (asOf.seq !== undefined && stored.seq > asOf.seq) return false;
  if (asOf.time !== undefined && Date.parse(stored.event.time) > Date.parse(asOf.time)) return false;
  return true;
}

/** Every event of one memory (up to the as-of bound), folded by the memory decider. */
export async function memoryHistory(store: EventStore, app: string, memoryId: string, asOf: AsOf = {}): Promise<MemoryHistory> {
  const stream = store.names.appStream(app);
  const subject = store.names.aggregate(app, "memory", memoryId);
  let state = memoryDecider.initialState();
  let seq = 0;
  const entries: HistoryEntry[] = [];
  for await (const stored of store.readSubject(stream, subject)) {
    if (!withinAsOf(stored, asOf)) break;
    const { event } = stored;
    state = memoryDecider.evolve(state, event as Parameters<typeof memoryDecider.evolve>[1]);
    seq = stored.seq;
    entries.push({
      seq: stored.seq,
      eventId: event.id,
      type: event.type,
      time: event.time,
      version: versionOf(event),
      actor: event.actor,
      sessionId: event.sessionId,
      git: event.git,
      transcriptRef: event.transcriptRef,
      reason: reasonOf(event),
      causationId: event.causationId,
      correlationId: event.correlationId,
      summary: summaryOf(event),
    });
  }
  if (state.id === null) {
    const when = asOf.seq !== undefined ? ` at sequence ${asOf.seq}` : asOf.time !== undefined ? ` at ${asOf.time}` : "";
    throw notFound(`no memory ${memoryId} in app ${app}${when}`, { memoryId, app });
  }
  return { app, memoryId, state, seq, entries };
}

/** A memory's state as `show` reports it, at the as-of bound. */
export function memoryStatusOf(history: MemoryHistory): string {
  return memoryStatus(history.state);
}

/** The text a version is compared by: title, tags and paths as header lines, then the body. */
export function versionText(version: MemoryVersion): string {
  return [`title: ${version.title}`, `kind: ${version.kind}`, `importance: ${version.importance}`, `tags: ${version.tags.join(", ")}`, `paths: ${version.paths.join(", ")}`, "", version.body, ""].join("\n");
}

/** A unified diff of two versions of one memory (title, kind, importance, tags, paths and body). */
export function diffVersions(history: MemoryHistory, from: number, to: number): { from: number; to: number; patch: string; changed: boolean } {
  const pick = (n: number): MemoryVersion => {
    const found = history.state.versions.find((v) => v.version === n);
    if (!found) {
      throw notFound(`memory ${history.memoryId} has no version ${n}; it has ${history.state.versions.map((v) => v.version).join(", ") || "none"}`, {
        memoryId: history.memoryId,
        version: n,
      });
    }
    return found;
  };
  const a = versionText(pick(from));
  const b = versionText(pick(to));
  const patch = createTwoFilesPatch(`${history.memoryId}@v${from}`, `${history.memoryId}@v${to}`, a, b, "", "", { context: 3 });
  return { from, to, patch, changed: a !== b };
}

/** One version of a memory that named a path. */
export interface BlameEntry {
  memoryId: string;
  version: number;
  title: string;
  scope: string;
  /** The version's paths that concern the asked path. */
  paths: string[];
  actor: Actor;
  sessionId: string | null;
  time: string;
  seq: number;
}

/**
 * The memories that concern a file or directory: every proposed version whose paths overlap `path` (whole
 * segments, either side the prefix: the hydration pack's rule), newest first.
 */
export async function blame(store: EventStore, app: string, path: string, asOf: AsOf = {}): Promise<BlameEntry[]> {
  const out: BlameEntry[] = [];
  const stream = store.names.appStream(app);
  if ((await store.lastSeq(stream).catch(() => 0)) === 0) return out;
  await store.replay(stream, {}, (batch) => {
    for (const stored of batch) {
      const { event } = stored;
      if (event.type !== "memory.proposed" || !withinAsOf(stored, asOf)) continue;
      const paths = event.data.paths.filter((p) => pathsOverlap(p, path));
      if (paths.length === 0) continue;
      out.push({
        memoryId: event.aggregateId,
        version: event.data.version,
        title: event.data.title,
        scope: event.scope,
        paths,
        actor: event.actor,
        sessionId: event.sessionId,
        time: event.time,
        seq: stored.seq,
      });
    }
  });
  return out.reverse();
}
