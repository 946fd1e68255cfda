import type { ProjectedEvent } from "../../projections/projection.js";
import { SearchIndex } from "../../projections/search/index.js";
import { evolveMemoryRecord, isMemoryEvent, type IndexedMemory, type MemoryRecord } from "../../projections/search/memory-records.js";
import type { LedgerEvent, MemoryEvent } from "../../schemas/events.js";
import type { PackChange, PackMemory, PreviousSession } from "./pack.js";
import { normalizePath } from "./paths.js";
import { internal } from "../../schemas/errors.js";

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

/** A change as the catalog keeps it: with the memory's scope, so a pack shows only what its reader may read. */
type ScopedChange = PackChange & { scope: string };

const withoutScope = ({ scope: _scope, ...change }: ScopedChange): PackChange => change;

/**
 * The catalog's folded state as plain JSON (`AppCatalog.exportState`), for as-of snapshots
 * (services/audit/snapshots.ts): what `restore` needs to continue folding with the same `apply`. The path
 * trie and the session → agent map are derived from `fragile` and `sessions`, so they are not kept. The own
 * search index is not part of it (a reader that ranks keeps its index elsewhere).
 */
export const CATALOG_STATE_VERSION = 1;
export interface CatalogState {
  version: typeof CATALOG_STATE_VERSION;
  app: string;
  seq: number;
  /** Memory records by memory id, in the catalog's order. */
  records: [memoryId: string, record: MemoryRecord][];
  /** Active fragile memories, in the catalog's order. */
  fragile: PackMemory[];
  /** Sessions by agent, each agent's in the catalog's order. */
  sessions: [agentId: string, sessions: SessionSummary[]][];
  changes: ScopedChange[];
  /** Sequences of the changes no longer kept, as gaps from the previous one (they are ascending; most gaps are small). */
  forgottenGaps: number[];
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
 * Active fragile memories by the segments of their (normalized) paths: a trie, so the memories on an
 * agent's path are found by walking that path (memories on it or on a folder above it) and the subtree
 * under it (memories below it), never by looking at every fragile memory of the app.
 */
class PathTrie {
  private readonly root: TrieNode = newNode();

  add(path: string, memoryId: string): void {
    let node = this.root;
    for (const segment of path.split("/")) {
      let child = node.children.get(segment);
      if (!child) node.children.set(segment, (child = newNode()));
      node = child;
    }
    node.here.set(memoryId, (node.here.get(memoryId) ?? 0) + 1);
  }

  remove(path: string, memoryId: string): void {
    const trail: TrieNode[] = [this.root];
    for (const segment of path.split("/")) {
      const child = trail.at(-1)!.children.get(segment);
      if (!child) return;
      trail.push(child);
    }
    const node = trail.at(-1)!;
    const count = node.here.get(memoryId) ?? 0;
    if (count > 1) node.here.set(memoryId, count - 1);
    else node.here.delete(memoryId);
    // Prune empty branches so a path no memory names any more costs nothing.
    const segments = path.split("/");
    for (let i = trail.length - 1; i > 0; i--) {
      const n = trail[i]!;
      if (n.here.size > 0 || n.children.size > 0) break;
      trail[i - 1]!.children.delete(segments[i - 1]!);
    }
  }

  /** Ids of memories with a path equal to `path`, above it, or below it (whole segments). */
  overlapping(path: string, into: Set<string>): void {
    let node: TrieNode | undefined = this.root;
    for (const segment of path.split("/")) {
      node = node.children.get(segment);
      if (!node) return;
      // A memory on a folder above the agent's path (or on the path itself).
      for (const id of node.here.keys()) into.add(id);
    }
    // Memories on paths below the agent's path.
    const stack = [...node.children.values()];
    while (stack.length) {
      const n = stack.pop()!;
      for (const id of n.here.keys()) into.add(id);
      for (const c of n.children.values()) stack.push(c);
    }
  }
}

interface TrieNode {
  children: Map<string, TrieNode>;
  /** Memory id → how many of its paths normalize to this node's path. */
  here: Map<string, number>;
}
const newNode = (): TrieNode => ({ children: new Map(), here: new Map() });

/** A memory's normalized paths that can overlap anything ("" never does). */
const normalizedPaths = (paths: readonly string[]): string[] => paths.map(normalizePath).filter((p) => p !== "");

/**
 * What hydration needs to know about one app, folded from its stream in order and caught up before
 * each pack: the memory records (folded like the search projection's, for the titles changes name and
 * the views of fragile memories; bodies kept only for fragile versions), active fragile memories indexed by path, sessions by agent, and the
 * recent memory changes in stream order. Each is kept up to date as events are folded, so a pack costs
 * what it reads, not the size of the app.
 *
 * Ranking is the live search projection's index when the process has one; only without it does the
 * catalog keep a search index of its own (`index`), folded along with the rest. It lives in the command
 * service process; folding is idempotent by stream sequence, like the projections'.
 */
export class AppCatalog {
  private readonly records = new Map<string, MemoryRecord>();
  private ownIndex: SearchIndex | undefined;
  private readonly fragile = new Map<string, PackMemory>();
  private readonly fragileByPath = new PathTrie();
  private readonly sessionsByAgent = new Map<string, Map<string, SessionSummary>>();
  private readonly sessionAgent = new Map<string, string>();
  /** Ascending by seq (events are folded in stream order). */
  private changes: ScopedChange[] = [];
  /** Sequences of changes no longer kept, ascending, to say how many were not listed. */
  private forgotten: number[] = [];
  private seq = 0;

  /** `ownIndex: true`: keep a search index from the start (a process without a live search projection). */
  constructor(
    readonly app: string,
    options: { ownIndex?: boolean } = {},
  ) {
    if (options.ownIndex) this.ownIndex = new SearchIndex(app, "hydration");
  }

  get appliedSeq(): number {
    return this.seq;
  }

  /** The catalog's own search index, when it keeps one (it then ranks). */
  get index(): SearchIndex | undefined {
    return this.ownIndex;
  }

  /**
   * Takes a search index to fold along from now on: one folded from the same stream, at or beyond the
   * catalog's sequence (events it already has are skipped, by sequence, as everywhere).
   */
  adoptIndex(index: SearchIndex): void {
    if (index.appliedSeq < this.seq) throw internal(`hydration index for ${this.app} at seq ${index.appliedSeq} is behind the catalog (${this.seq})`);
    this.ownIndex = index;
  }

  /** Drops the own search index (a live one took over). */
  dropIndex(): void {
    this.ownIndex = undefined;
  }

  /** The folded state (without the own search index), JSON-serialisable; `restore` continues from it. */
  exportState(): CatalogState {
    let previous = 0;
    const gap = (seq: number) => {
      const d = seq - previous;
      previous = seq;
      return d;
    };
    return {
      version: CATALOG_STATE_VERSION,
      app: this.app,
      seq: this.seq,
      records: [...this.records.entries()],
      fragile: [...this.fragile.values()],
      sessions: [...this.sessionsByAgent.entries()].map(([agentId, mine]) => [agentId, [...mine.values()]]),
      changes: this.changes.slice(),
      forgottenGaps: this.forgotten.map(gap),
    };
  }

  /**
   * A catalog at the state `exportState` gave (of this app), folding on from its sequence. Throws on a
   * state of another version or app, or one not shaped as exported: the caller then folds from the log.
   */
  static restore(state: CatalogState, app: string, options: { ownIndex?: boolean } = {}): AppCatalog {
    if (state?.version !== CATALOG_STATE_VERSION) throw internal(`catalog state of version ${String(state?.version)}, not ${CATALOG_STATE_VERSION}`);
    if (state.app !== app) throw internal(`catalog state of app ${String(state.app)}, not ${app}`);
    const arrays = [state.records, state.fragile, state.sessions, state.changes, state.forgottenGaps];
    if (!Number.isSafeInteger(state.seq) || state.seq < 0 || !arrays.every(Array.isArray)) throw internal("catalog state is malformed");
    const catalog = new AppCatalog(app, options);
    if (catalog.ownIndex && state.seq > 0) throw internal("a restored catalog cannot start an own search index past sequence 0; adopt one");
    for (const [memoryId, record] of state.records) {
      if (typeof memoryId !== "string" || !Array.isArray(record?.versions)) throw internal("catalog state: a malformed record");
      catalog.records.set(memoryId, record);
    }
    for (const view of state.fragile) {
      if (typeof view?.memoryId !== "string" || !Array.isArray(view.paths)) throw internal("catalog state: a malformed fragile memory");
      catalog.fragile.set(view.memoryId, view);
      for (const path of normalizedPaths(view.paths)) catalog.fragileByPath.add(path, view.memoryId);
    }
    for (const [agentId, sessions] of state.sessions) {
      if (typeof agentId !== "string" || !Array.isArray(sessions)) throw internal("catalog state: malformed sessions");
      const mine = new Map<string, SessionSummary>();
      for (const session of sessions) {
        if (typeof session?.sessionId !== "string" || typeof session.seq !== "number") throw internal("catalog state: a malformed session");
        mine.set(session.sessionId, session);
        catalog.sessionAgent.set(session.sessionId, agentId);
      }
      catalog.sessionsByAgent.set(agentId, mine);
    }
    catalog.changes = state.changes.slice();
    let seq = 0;
    catalog.forgotten = state.forgottenGaps.map((gap) => (seq += gap));
    catalog.seq = state.seq;
    return catalog;
  }

  apply(events: readonly ProjectedEvent[]): void {
    for (const stored of events) {
      if (stored.seq <= this.seq) continue;
      const { event } = stored;
      if (isMemoryEvent(event)) this.foldMemory(stored.seq, event);
      else if (event.type === "session.started" || event.type === "session.ended") this.noteSession(stored.seq, event);
      this.ownIndex?.apply([stored]);
      this.seq = stored.seq;
    }
  }

  /** Active memories of kind fragile, every one of them (the pack keeps those on the agent's paths). */
  fragileMemories(): PackMemory[] {
    return [...this.fragile.values()];
  }

  /**
   * Active fragile memories with a path overlapping one of `paths` (whole segments, either side the
   * prefix, as `pathsOverlap` says), in memory id order. The pack filters fragile candidates by that same
   * overlap, so giving it these instead of all of them changes nothing but the work.
   */
  fragileOnPaths(paths: readonly string[]): PackMemory[] {
    const ids = new Set<string>();
    for (const path of normalizedPaths(paths)) this.fragileByPath.overlapping(path, ids);
    return [...ids].sort().map((id) => this.fragile.get(id)!);
  }

  /**
   * The agent's previous session: the latest of its sessions other than the current one. Without a
   * current session id, the agent's latest session counts as current while it is still open (it has
   * just started it); a crashed session left open then makes the pack show a little more, never less.
   */
  previousSession(agentId: string, currentSessionId: string | undefined): PreviousSession | null {
    const mine = [...(this.sessionsByAgent.get(agentId)?.values() ?? [])].sort((a, b) => a.seq - b.seq);
    let candidates = mine.filter((s) => s.sessionId !== currentSessionId);
    const latest = candidates.at(-1);
    if (currentSessionId === undefined && latest && !latest.ended) candidates = candidates.slice(0, -1);
    const previous = candidates.at(-1);
    return previous ? { sessionId: previous.sessionId, seq: previous.seq, time: previous.time, ended: previous.ended, task: previous.task } : null;
  }

  /**
   * Memory changes after `seq`, oldest first, at most `limit` (the newest); the rest are counted.
   * `visible`: only changes of memories in scopes it accepts (another agent's scratchpad is not listed,
   * not even by title); the count of older changes no longer kept cannot tell scopes apart.
   */
  changesAfter(seq: number, limit: number, visible?: (scope: string) => boolean): { events: PackChange[]; omittedOlder: number } {
    const first = upperBound(this.changes, seq, (c) => c.seq);
    const forgottenAfter = this.forgotten.length - upperBound(this.forgotten, seq, (s) => s);
    if (!visible) {
      const kept = this.changes.slice(Math.max(first, this.changes.length - limit));
      return { events: kept.map(withoutScope), omittedOlder: this.changes.length - first - kept.length + forgottenAfter };
    }
    const after = this.changes.slice(first).filter((c) => visible(c.scope));
    const kept = after.slice(Math.max(0, after.length - limit));
    return { events: kept.map(withoutScope), omittedOlder: after.length - kept.length + forgottenAfter };
  }

  private noteSession(seq: number, event: Extract<LedgerEvent, { type: "session.started" | "session.ended" }>): void {
    if (event.type === "session.started") {
      // A session id names one session; should it start again (under another agent), it moves.
      const formerAgent = this.sessionAgent.get(event.aggregateId);
      if (formerAgent !== undefined) this.sessionsByAgent.get(formerAgent)?.delete(event.aggregateId);
      const agentId = event.data.agentId;
      let mine = this.sessionsByAgent.get(agentId);
      if (!mine) this.sessionsByAgent.set(agentId, (mine = new Map()));
      mine.set(event.aggregateId, { sessionId: event.aggregateId, agentId, task: event.data.task || null, seq, time: event.time, ended: false });
      this.sessionAgent.set(event.aggregateId, agentId);
      return;
    }
    const agentId = this.sessionAgent.get(event.aggregateId);
    const mine = agentId === undefined ? undefined : this.sessionsByAgent.get(agentId);
    const session = mine?.get(event.aggregateId);
    if (mine && session) mine.set(event.aggregateId, { ...session, seq, time: event.time, ended: true });
  }

  private foldMemory(seq: number, event: MemoryEvent): void {
    const before = this.records.get(event.aggregateId);
    this.noteChange(seq, event, before);
    const { record, change } = evolveMemoryRecord(before, event);
    this.records.set(event.aggregateId, withoutOtherBodies(record));
    if (!change) return;
    const memoryId = change.type === "upsert" ? change.memory.memoryId : change.memoryId;
    const wasFragile = this.fragile.get(memoryId);
    if (wasFragile) {
      for (const path of normalizedPaths(wasFragile.paths)) this.fragileByPath.remove(path, memoryId);
      this.fragile.delete(memoryId);
    }
    if (change.type === "upsert" && change.memory.kind === "fragile") {
      const view = packMemoryOf(change.memory);
      this.fragile.set(memoryId, view);
      for (const path of normalizedPaths(view.paths)) this.fragileByPath.add(path, memoryId);
    }
  }

  private noteChange(seq: number, event: MemoryEvent, before: MemoryRecord | undefined): void {
    // The title as of this event: a proposal names it; other events act on a version already folded.
    const titleOf = (version: number | null) =>
      before?.versions.find((v) => v.version === version)?.title ?? before?.versions.find((v) => v.version === before.activeVersion)?.title ?? before?.versions.at(-1)?.title ?? null;
    const base = { seq, time: event.time, type: event.type, memoryId: event.aggregateId, actor: `${event.actor.kind}:${event.actor.id}`, scope: event.scope };
    let change: ScopedChange;
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
      case "memory.reinstated":
        change = { ...base, title: titleOf(null), version: null, detail: `reinstated: ${event.data.reason}` };
        break;
      default:
        // Memory event types added later still show up, without details.
        change = { ...base, title: titleOf(null), version: null, detail: null };
    }
    this.changes.push(change);
    if (this.changes.length > KEPT_CHANGES * 1.25) {
      const drop = this.changes.length - KEPT_CHANGES;
      for (let i = 0; i < drop; i++) this.forgotten.push(this.changes[i]!.seq);
      this.changes = this.changes.slice(drop);
    }
  }
}

/**
 * The record without the bodies of versions that are not fragile: the catalog shows titles of those
 * (in changes) and whole views only of fragile memories, and bodies are most of what a record weighs.
 * A version's kind never changes, so a body dropped here is never needed later.
 */
function withoutOtherBodies(record: MemoryRecord): MemoryRecord {
  if (!record.versions.some((v) => v.kind !== "fragile" && v.body !== "")) return record;
  return { ...record, versions: record.versions.map((v) => (v.kind !== "fragile" && v.body !== "" ? { ...v, body: "" } : v)) };
}

/** Index of the first element whose key is greater than `value` in an array ascending by key. */
function upperBound<T>(sorted: readonly T[], value: number, key: (item: T) => number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (key(sorted[mid]!) <= value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
