import type { ProjectedEvent } from "../../projections/projection.js";
import { SearchIndex } from "../../projections/search/index.js";
import type { IndexedMemory } from "../../projections/search/index.js";
import type { LedgerEvent, MemoryEvent } from "../../schemas/events.js";
import type { PackChange, PackMemory, PreviousSession } from "./pack.js";

/** One agent session as its events left it. */
interface SessionSummary {
  sessionId: string;
  agentId: string;
  task: string | null;
  /** Sequence and time of its last event (started, or ended). */
  seq: number;
  time: string;
  ended: boolean;
}

/** Memory changes kept for "since your last session"; older ones are only counted. */
export const KEPT_CHANGES = 20_000;

export const packMemoryOf = (view: IndexedMemory): PackMemory => ({
  memoryId: view.memoryId,
  version: view.version,
  title: view.title,
  kind: view.kind,
  scope: view.scope,
  paths: view.paths,
  tags: view.tags,
  body: view.body,
  importance: view.importance,
});

/**
 * What hydration needs to know about one app, folded from its stream in order and caught up before
 * each pack: memories (a search index of its own, which also ranks when the process has no live search
 * projection), sessions by agent, and the recent memory changes. It lives in the command service
 * process; folding is idempotent by stream sequence, like the projections'.
 */
export class AppCatalog {
  readonly memories: SearchIndex;
  private readonly sessions = new Map<string, SessionSummary>();
  private changes: PackChange[] = [];
  /** Sequences of changes no longer kept, ascending, to say how many were not listed. */
  private forgotten: number[] = [];
  private seq = 0;

  constructor(readonly app: string) {
    this.memories = new SearchIndex(app, "hydration");
  }

  get appliedSeq(): number {
    return this.seq;
  }

  apply(events: readonly ProjectedEvent[]): void {
    for (const stored of events) {
      if (stored.seq <= this.seq) continue;
      const { event } = stored;
      if (event.type.startsWith("memory.")) this.noteChange(stored.seq, event as MemoryEvent);
      else if (event.type === "session.started" || event.type === "session.ended") this.noteSession(stored.seq, event);
      this.memories.apply([stored]);
      this.seq = stored.seq;
    }
  }

  /** Active memories of kind fragile (the pack keeps those on the agent's paths). */
  fragileMemories(): PackMemory[] {
    return this.memories
      .activeMemories()
      .filter((m) => m.kind === "fragile")
      .map(packMemoryOf);
  }

  memory(memoryId: string): PackMemory | null {
    const view = this.memories.view(memoryId);
    return view ? packMemoryOf(view) : null;
  }

  /**
   * The agent's previous session: the latest of its sessions other than the current one. Without a
   * current session id, the agent's latest session counts as current while it is still open (it has
   * just started it); a crashed session left open then makes the pack show a little more, never less.
   */
  previousSession(agentId: string, currentSessionId: string | undefined): PreviousSession | null {
    const mine = [...this.sessions.values()].filter((s) => s.agentId === agentId).sort((a, b) => a.seq - b.seq);
    let candidates = mine.filter((s) => s.sessionId !== currentSessionId);
    const latest = candidates.at(-1);
    if (currentSessionId === undefined && latest && !latest.ended) candidates = candidates.slice(0, -1);
    const previous = candidates.at(-1);
    return previous ? { sessionId: previous.sessionId, seq: previous.seq, time: previous.time, ended: previous.ended, task: previous.task } : null;
  }

  /** Memory changes after `seq`, oldest first, at most `limit` (the newest); the rest are counted. */
  changesAfter(seq: number, limit: number): { events: PackChange[]; omittedOlder: number } {
    const after = this.changes.filter((c) => c.seq > seq);
    const kept = after.slice(Math.max(0, after.length - limit));
    const forgottenAfter = this.forgotten.length - upperBound(this.forgotten, seq);
    return { events: kept, omittedOlder: after.length - kept.length + forgottenAfter };
  }

  private noteSession(seq: number, event: Extract<LedgerEvent, { type: "session.started" | "session.ended" }>): void {
    if (event.type === "session.started") {
      this.sessions.set(event.aggregateId, { sessionId: event.aggregateId, agentId: event.data.agentId, task: event.data.task || null, seq, time: event.time, ended: false });
      return;
    }
    const session = this.sessions.get(event.aggregateId);
    if (session) this.sessions.set(event.aggregateId, { ...session, seq, time: event.time, ended: true });
  }

  private noteChange(seq: number, event: MemoryEvent): void {
    // The title as of this event: a proposal names it; other events act on a version already folded.
    const before = this.memories.record(event.aggregateId);
    const titleOf = (version: number | null) =>
      before?.versions.find((v) => v.version === version)?.title ?? before?.versions.find((v) => v.version === before.activeVersion)?.title ?? before?.versions.at(-1)?.title ?? null;
    const base = { seq, time: event.time, type: event.type, memoryId: event.aggregateId, actor: `${event.actor.kind}:${event.actor.id}` };
    let change: PackChange;
    switch (event.type) {
      case "memory.proposed":
        change = { ...base, title: event.data.title, version: event.data.version, detail: null };
        break;
      case "memory.approved":
        change = { ...base, title: titleOf(event.data.version), version: event.data.version, detail: null };
        break;
      case "memory.rejected":
        change = { ...base, title: titleOf(event.data.version), version: event.data.version, detail: event.data.reason };
        break;
      case "memory.superseded":
        change = { ...base, title: titleOf(null), version: null, detail: `${event.data.by ? `replaced by ${event.data.by}; ` : ""}${event.data.reason}` };
        break;
      case "memory.rolled_back":
        change = { ...base, title: titleOf(event.data.toVersion), version: event.data.toVersion, detail: `from v${event.data.fromVersion}` };
        break;
      default:
        // Memory event types added later still show up, without details.
        change = { ...base, title: titleOf(null), version: null, detail: null };
    }
    this.changes.push(change);
    if (this.changes.length > KEPT_CHANGES * 1.25) {
      const drop = this.changes.length - KEPT_CHANGES;
      this.forgotten.push(...this.changes.slice(0, drop).map((c) => c.seq));
      this.changes = this.changes.slice(drop);
    }
  }
}

/** Index of the first element greater than `value` in an ascending array. */
function upperBound(sorted: readonly number[], value: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! <= value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
