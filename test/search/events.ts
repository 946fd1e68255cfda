import { LedgerEvent } from "../../schemas/events.js";
import { rawEnvelope, type FakeMetadata } from "../../testing/index.js";
import type { ProjectedEvent } from "../../projections/projection.js";
import type { MemoryKind } from "../../schemas/primitives.js";

/**
 * A tiny stream of ledger events for search tests: every event is checked against the real schema,
 * and gets the next stream sequence, as JetStream would assign it.
 */
export interface ContentInput {
  title: string;
  body: string;
  kind?: MemoryKind;
  tags?: string[];
  paths?: string[];
  scope?: string;
  /** The git branch the proposal names (none by default). */
  branch?: string;
}

export class EventLog {
  readonly events: ProjectedEvent[] = [];
  private nextVersion = new Map<string, number>();
  private scopes = new Map<string, string>();

  constructor(readonly app = "app1") {}

  get lastSeq(): number {
    return this.events.at(-1)?.seq ?? 0;
  }

  /** Events after `seq`, as a runner resuming from a checkpoint would deliver them. */
  after(seq: number): ProjectedEvent[] {
    return this.events.filter((e) => e.seq > seq);
  }

  propose(memoryId: string, content: ContentInput): number {
    const version = (this.nextVersion.get(memoryId) ?? 0) + 1;
    this.nextVersion.set(memoryId, version);
    if (content.scope) this.scopes.set(memoryId, content.scope);
    this.append(memoryId, "memory.proposed", 3, {
      version,
      title: content.title,
      body: content.body,
      kind: content.kind ?? "note",
      tags: content.tags ?? [],
      paths: content.paths ?? [],
      importance: 3,
    }, content.branch === undefined ? undefined : { branch: content.branch });
    return version;
  }

  approve(memoryId: string, version: number): void {
    this.append(memoryId, "memory.approved", 1, { version });
  }

  /** Propose and approve: an active memory in two events. */
  write(memoryId: string, content: ContentInput): number {
    const version = this.propose(memoryId, content);
    this.approve(memoryId, version);
    return version;
  }

  reject(memoryId: string, version: number): void {
    this.append(memoryId, "memory.rejected", 1, { version, reason: "not useful" });
  }

  supersede(memoryId: string, by: string | null = null): void {
    this.append(memoryId, "memory.superseded", 1, { by, reason: "replaced" });
  }

  reinstate(memoryId: string): void {
    this.append(memoryId, "memory.reinstated", 1, { reason: "reverted" });
  }

  rollback(memoryId: string, fromVersion: number, toVersion: number): void {
    this.append(memoryId, "memory.rolled_back", 1, { fromVersion, toVersion });
  }

  sessionStarted(sessionId: string): void {
    this.push(`${this.app}.session.${sessionId}`, this.envelope(sessionId, "app", { type: "session.started", data: { agentId: "agent-a", task: "work", branch: null, worktree: null } }));
  }

  private append(memoryId: string, type: string, schemaVersion: number, data: unknown, git?: { branch: string }): void {
    this.push(`${this.app}.memory.${memoryId}`, { ...this.envelope(memoryId, this.scopes.get(memoryId) ?? "app", { type, data }, git), schemaVersion });
  }

  /** Through the one envelope builder (memledger/testing), with this log's ids and times. */
  private envelope(aggregateId: string, scope: string, domainEvent: { type: string; data: unknown }, git?: { branch: string }) {
    const seq = this.lastSeq + 1;
    return rawEnvelope(domainEvent, { id: `e${seq}`, correlationId: `e${seq}`, aggregateId, app: this.app, scope, sessionId: null, ...(git ? { git } : {}), time: new Date(Date.UTC(2026, 0, 1, 0, 0, seq)).toISOString() } as FakeMetadata, seq);
  }

  private push(subject: string, raw: unknown): void {
    this.events.push({ seq: this.lastSeq + 1, subject, event: LedgerEvent.parse(raw) });
  }
}
