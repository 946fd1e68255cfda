import { sessionDecider, type SessionState } from "../../commands/session.js";
import { forbidden } from "../../schemas/errors.js";
import { MAX_RECEIPTS_PER_EVENT, type ExposedMemory, type ExposureReceipt } from "../../schemas/events.js";
import type { Actor } from "../../schemas/primitives.js";
import type { CommandContext, CommandHandler } from "../command-handler.js";
import type { EventStore } from "../event-store.js";
import { withinAsOf, type AsOf } from "./history.js";

/**
 * Exposure (issue 12 item 5): what each session was shown, so that when a memory turns out wrong the
 * agents that acted on it are known.
 *
 * Writing: the command service hands every `hydrate` and `search` reply that named a session to an
 * {@link ExposureRecorder} after the reply is sent. The recorder queues receipts per (app, session,
 * actor) and appends them as one `session.exposed` event per flush, through the command handler (the one
 * write path: chained, concurrency-checked against session_end racing it), every `flushMs` or once
 * `maxBatch` receipts wait. Nothing of this is awaited by the reply; a failure goes to `onError`.
 * A request without a session records nothing: a receipt belongs to a session's subject, and an agent
 * without one has no subject to write to (the SDK's hook, the CLI's --session / MEMLEDGER_SESSION and the
 * MCP tools' `sessionId` send one).
 *
 * Reading: {@link exposureOf} replays the app's stream (like `blame`) and lists every receipt that named
 * the memory (and version), with the session's agent from its session.started event.
 */

export interface ExposureRecorderOptions {
  /** How long a receipt may wait for others to share its event (default 25 ms). */
  flushMs?: number;
  /** Receipts that flush a queue at once (default and at most MAX_RECEIPTS_PER_EVENT). */
  maxBatch?: number;
  onError: (err: unknown, where: string) => void;
}

interface Queue {
  ctx: CommandContext;
  sessionId: string;
  receipts: ExposureReceipt[];
  timer: NodeJS.Timeout | undefined;
  /** The previous flush of this queue: flushes of one session run one after the other, in order. */
  flushing: Promise<void>;
}

/**
 * An agent records what it was shown on its own sessions only: naming another agent's session would
 * write receipts into that agent's record (a false "it saw this"). Humans and services (an orchestrator
 * hydrating for the agent it starts) may name any session; the receipt's actor says who asked.
 */
const receiptsAllowed = (actor: Actor) => (state: SessionState): void => {
  if (actor.kind === "agent" && state.agentId !== null && state.agentId !== actor.id) {
    throw forbidden(`agent ${actor.id} cannot record what it was shown on session ${state.id} of agent ${state.agentId}`, { sessionId: state.id });
  }
};

export class ExposureRecorder {
  private readonly queues = new Map<string, Queue>();
  private readonly flushMs: number;
  private readonly maxBatch: number;
  private readonly pending = new Set<Promise<void>>();

  constructor(
    private readonly handler: CommandHandler,
    private readonly options: ExposureRecorderOptions,
  ) {
    this.flushMs = options.flushMs ?? 25;
    this.maxBatch = Math.min(options.maxBatch ?? MAX_RECEIPTS_PER_EVENT, MAX_RECEIPTS_PER_EVENT);
  }

  /** Queues one receipt (never throws, never waits). */
  record(app: string, actor: Actor, sessionId: string, receipt: ExposureReceipt): void {
    const key = `${app}\u0000${sessionId}\u0000${actor.kind}:${actor.id}`;
    let queue = this.queues.get(key);
    if (!queue) {
      queue = { ctx: { app, actor, sessionId }, sessionId, receipts: [], timer: undefined, flushing: Promise.resolve() };
      this.queues.set(key, queue);
    }
    queue.receipts.push(receipt);
    if (queue.receipts.length >= this.maxBatch) this.flush(key, queue);
    else queue.timer ??= setTimeout(() => this.flush(key, queue), this.flushMs);
  }

  private flush(key: string, queue: Queue): void {
    if (queue.timer) clearTimeout(queue.timer);
    queue.timer = undefined;
    const receipts = queue.receipts.splice(0, this.maxBatch);
    if (queue.receipts.length > 0) queue.timer = setTimeout(() => this.flush(key, queue), 0);
    else if (this.queues.get(key) === queue) this.queues.delete(key);
    if (receipts.length === 0) return;
    const task = queue.flushing
      .then(() => this.handler.execute(sessionDecider, queue.sessionId, { type: "expose", receipts }, queue.ctx, { authorize: receiptsAllowed(queue.ctx.actor) }))
      .then(
        () => undefined,
        (err) => this.options.onError(err, `exposure receipts of session ${queue.sessionId}`),
      );
    queue.flushing = task;
    this.pending.add(task);
    void task.finally(() => this.pending.delete(task));
  }

  /** Appends everything queued and waits for it (a stopping service, a test). */
  async drain(): Promise<void> {
    for (const [key, queue] of [...this.queues]) this.flush(key, queue);
    while (this.pending.size > 0 || this.queues.size > 0) {
      for (const [key, queue] of [...this.queues]) this.flush(key, queue);
      await Promise.allSettled([...this.pending]);
    }
  }
}

/** One receipt that named the memory: who was shown which version, where, when. */
export interface ExposureEntry {
  memoryId: string;
  version: number;
  rank: number;
  channel: string;
  origin: "app" | "org";
  verb: "hydrate" | "search";
  /** When the reply was sent. */
  time: string;
  tokens: number;
  sessionId: string;
  /** The agent whose session it is (from session.started; null if the log lacks it). */
  sessionAgent: string | null;
  /** Who sent the request that was answered. */
  actor: Actor;
  /** Stream sequence of the receipt's event. */
  seq: number;
}

/**
 * Every receipt in the app's sessions that named `memoryId` (only `version` when given), oldest first,
 * read from the log up to the as-of bound.
 */
export async function exposureOf(store: EventStore, app: string, memoryId: string, options: { version?: number; asOf?: AsOf } = {}): Promise<ExposureEntry[]> {
  const stream = store.names.appStream(app);
  const out: ExposureEntry[] = [];
  if ((await store.lastSeq(stream).catch(() => 0)) === 0) return out;
  const agentOf = new Map<string, string>();
  await store.replay(stream, {}, (batch) => {
    for (const stored of batch) {
      const { event } = stored;
      if (!withinAsOf(stored, options.asOf)) continue;
      if (event.type === "session.started") agentOf.set(event.aggregateId, event.data.agentId);
      if (event.type !== "session.exposed") continue;
      for (const receipt of event.data.receipts) {
        for (const m of receipt.memories) {
          if (!matches(m, memoryId, options.version)) continue;
          out.push({
            ...m,
            verb: receipt.verb,
            time: receipt.time,
            tokens: receipt.tokens,
            sessionId: event.aggregateId,
            sessionAgent: agentOf.get(event.aggregateId) ?? null,
            actor: event.actor,
            seq: stored.seq,
          });
        }
      }
    }
  });
  return out;
}

const matches = (m: ExposedMemory, memoryId: string, version: number | undefined): boolean => m.memoryId === memoryId && (version === undefined || m.version === version);

/** The distinct sessions of a list of exposures, with their agents, first and last time and versions seen. */
export function exposedSessions(entries: ExposureEntry[]): { sessionId: string; sessionAgent: string | null; actors: string[]; versions: number[]; first: string; last: string; receipts: number }[] {
  const bySession = new Map<string, ExposureEntry[]>();
  for (const e of entries) bySession.set(e.sessionId, [...(bySession.get(e.sessionId) ?? []), e]);
  return [...bySession.entries()].map(([sessionId, list]) => ({
    sessionId,
    sessionAgent: list[0]!.sessionAgent,
    actors: [...new Set(list.map((e) => `${e.actor.kind}:${e.actor.id}`))],
    versions: [...new Set(list.map((e) => e.version))].sort((a, b) => a - b),
    first: list[0]!.time,
    last: list.at(-1)!.time,
    receipts: list.length,
  }));
}
