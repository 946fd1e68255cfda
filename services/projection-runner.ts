import { AckPolicy, DeliverPolicy, JetStreamApiError, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { nanos } from "@nats-io/transport-node";
import { getHeapStatistics } from "node:v8";
import { decodeEvent } from "../events/upcast.js";
import type { ProjectedEvent, ProjectionDefinition, ProjectionScope, ProjectionTarget } from "../projections/projection.js";
import type { EventStore } from "./event-store.js";

/** What an operator sees for one projection of one stream (`memledger status`). */
export interface ProjectionStatus {
  projection: string;
  app: string;
  stream: string;
  checkpoint: number;
  /** What readers see (at or ahead of the checkpoint for targets that persist lazily). */
  position: number;
  generation: string;
  /** Stream last sequence minus position, when last measured. */
  lag: number;
  /** The event the projection is stuck on, if any: it retries it and never checkpoints past it. */
  blocked: { seq: number; error: string; attempts: number; since: string } | null;
  lastError: { seq: number | null; error: string; at: string } | null;
  updatedAt: string;
}

export const statusBucket = (prefix: string) => `${prefix}_projections`;
const statusKey = (name: string, stream: string) => `${name}.${stream}`;

export async function openStatusBucket(store: EventStore): Promise<KV> {
  return new Kvm(store.nc).create(statusBucket(store.names.prefix), { history: 1 });
}

export async function readStatuses(store: EventStore): Promise<ProjectionStatus[]> {
  const kv = await openStatusBucket(store);
  const out: ProjectionStatus[] = [];
  for await (const key of await kv.keys()) {
    const entry = await kv.get(key);
    if (entry?.value.length) out.push(entry.json<ProjectionStatus>());
  }
  return out.sort((a, b) => a.projection.localeCompare(b.projection) || a.stream.localeCompare(b.stream));
}

export interface RunnerOptions {
  /** Events fetched and committed together: larger batches, fewer commits. */
  batchSize?: number;
  /** How often the status entry is refreshed while events flow. */
  statusEveryMs?: number;
  onError?: (err: unknown, context: { projection: string; stream: string; seq: number | null }) => void;
  /** Test hook: called after each committed batch; throwing from it simulates a crash before the ack. */
  afterCommit?: (seq: number) => void | Promise<void>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function toProjected(msg: { seq: number; subject: string; data: Uint8Array }): ProjectedEvent {
  return { seq: msg.seq, subject: msg.subject, event: decodeEvent(msg.data) };
}

/**
 * Feeds one stream into one projection target through a durable pull consumer with explicit acks.
 *
 * The target's checkpoint is the truth about progress, not the consumer's ack floor: on every (re)start
 * the consumer is recreated to deliver from checkpoint + 1, so a read model restored from an older
 * snapshot, or wiped, replays exactly what it lacks. Messages are acked only after `commit` resolved.
 */
export class ProjectionRunner {
  private target: ProjectionTarget | undefined;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private statusKv: KV | undefined;
  private status: ProjectionStatus;
  private lastStatusWrite = 0;
  private committed = 0;
  private messages: ConsumerMessages | undefined;
  private statusTimer: NodeJS.Timeout | undefined;
  private readonly options: Required<Omit<RunnerOptions, "afterCommit">> & Pick<RunnerOptions, "afterCommit">;

  constructor(
    readonly store: EventStore,
    readonly definition: ProjectionDefinition,
    readonly scope: ProjectionScope,
    options: RunnerOptions = {},
  ) {
    this.options = {
      batchSize: options.batchSize ?? 1000,
      statusEveryMs: options.statusEveryMs ?? 1000,
      onError: options.onError ?? (() => undefined),
      afterCommit: options.afterCommit,
    };
    this.status = {
      projection: definition.name,
      app: scope.app,
      stream: scope.stream,
      checkpoint: 0,
      position: 0,
      generation: "",
      lag: 0,
      blocked: null,
      lastError: null,
      updatedAt: new Date().toISOString(),
    };
  }

  get durableName(): string {
    return `projection-${this.definition.name}`;
  }

  /** The last sequence durably in the read model: a restart resumes after it. */
  get checkpoint(): number {
    return this.target?.checkpoint.seq ?? 0;
  }

  /**
   * The last sequence readers can see. Usually the checkpoint; ahead of it for targets that persist
   * lazily (the search index snapshots every few thousand events and replays the rest after a restart).
   */
  get position(): number {
    return Math.max(this.committed, this.checkpoint);
  }

  async start(): Promise<void> {
    this.statusKv = await openStatusBucket(this.store).catch(() => undefined);
    await this.open();
    // Keeps lag current while no events flow (the consume loop only wakes for messages).
    this.statusTimer = setInterval(() => void this.writeStatus(false), this.options.statusEveryMs);
    this.statusTimer.unref();
    this.loop = this.run().catch((err) => this.options.onError(err, this.errorContext(null)));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.statusTimer);
    this.messages?.stop();
    await this.loop;
    await this.target?.close();
    this.target = undefined;
  }

  /** Resolves once the checkpoint has reached `seq` (or the runner stopped). */
  async waitFor(seq: number, timeoutMs = 30_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.stopped && this.position < seq) {
      if (Date.now() > deadline) return false;
      await sleep(20);
    }
    return this.position >= seq;
  }

  private errorContext(seq: number | null) {
    return { projection: this.definition.name, stream: this.scope.stream, seq };
  }

  private async open(): Promise<void> {
    await this.target?.close();
    this.target = await this.definition.openLive(this.scope);
    this.committed = this.target.checkpoint.seq;
    await this.resetConsumer(this.target.checkpoint.seq);
    this.status.checkpoint = this.target.checkpoint.seq;
    this.status.generation = this.target.checkpoint.generation;
    await this.writeStatus(true);
  }

  private async resetConsumer(checkpoint: number): Promise<void> {
    const { jsm } = this.store;
    try {
      await jsm.consumers.delete(this.scope.stream, this.durableName);
    } catch (err) {
      if (!(err instanceof JetStreamApiError)) throw err; // not found is the normal first start
    }
    await jsm.consumers.add(this.scope.stream, {
      durable_name: this.durableName,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: checkpoint + 1,
      ack_wait: nanos(60_000),
      max_ack_pending: Math.max(this.options.batchSize * 2, 1000),
    });
  }

  private async run(): Promise<void> {
    let attempts = 0;
    let batchLimit = this.options.batchSize;
    while (!this.stopped) {
      let pending: JsMsg[] = [];
      let batch: JsMsg[] = [];
      try {
        const consumer = await this.store.js.consumers.get(this.scope.stream, this.durableName);
        const messages = await consumer.consume({ max_messages: this.options.batchSize });
        this.messages = messages;
        if (this.stopped) break;
        for await (const m of messages) {
          pending.push(m);
          // Batch what is already waiting, but never hold an event back when nothing more is queued.
          if (pending.length < batchLimit && m.info.pending > 0) continue;
          batch = pending;
          pending = [];
          // A rebuild promoted a new generation: the consumer was recreated from the new checkpoint, so
          // these messages belong to a consumer that no longer exists. Start consuming again.
          if (!(await this.applyBatch(batch))) break;
          for (const b of batch) b.ack();
          batch = [];
          attempts = 0;
          batchLimit = this.options.batchSize;
          if (this.status.blocked) {
            this.status.blocked = null;
            await this.writeStatus(true);
          }
          if (this.stopped) break;
        }
      } catch (err) {
        if (this.stopped) break;
        // Never checkpoint past an event that was not applied. Narrow the batch down to the failing
        // event, report it as blocking, and retry it with backoff: loud, never silent, never skipped.
        attempts++;
        const seq = batch[0]?.seq ?? null;
        this.recordError(seq, err);
        if (seq !== null && (batchLimit === 1 || batch.length === 1)) {
          this.status.blocked = { seq, error: errorText(err), attempts, since: this.status.blocked?.since ?? new Date().toISOString() };
        }
        batchLimit = 1;
        for (const m of [...batch, ...pending]) m.nak();
        await this.writeStatus(true);
        await sleep(Math.min(30_000, 100 * 2 ** Math.min(attempts, 9)));
        if (!this.stopped) await this.open().catch((e) => this.recordError(null, e));
      } finally {
        this.messages?.stop();
        this.messages = undefined;
      }
    }
    await this.writeStatus(true);
  }

  /** Applies and commits one batch; false when the target was replaced underneath and nothing was committed. */
  private async applyBatch(messages: JsMsg[]): Promise<boolean> {
    const target = this.target!;
    const events = messages.filter((m) => m.seq > this.committed).map(toProjected);
    const last = messages[messages.length - 1]!.seq;
    if (events.length > 0) await target.apply(events);
    if (!(await this.checkGeneration())) return false;
    if (last > this.committed) await target.commit(last);
    this.committed = Math.max(this.committed, last);
    await this.options.afterCommit?.(last);
    this.status.checkpoint = target.checkpoint.seq;
    await this.writeStatus(false);
    return true;
  }

  /** A rebuild elsewhere promoted a new generation: drop ours and continue from the new checkpoint. */
  private async checkGeneration(): Promise<boolean> {
    const target = this.target;
    if (!target) return false;
    const current = await target.currentGeneration();
    if (current === target.checkpoint.generation) return true;
    await this.open();
    return false;
  }

  private recordError(seq: number | null, err: unknown): void {
    this.status.lastError = { seq, error: errorText(err), at: new Date().toISOString() };
    this.options.onError(err, this.errorContext(seq));
  }

  private async writeStatus(force: boolean): Promise<void> {
    const now = Date.now();
    if (!force && now - this.lastStatusWrite < this.options.statusEveryMs) return;
    this.lastStatusWrite = now;
    try {
      const last = await this.store.lastSeq(this.scope.stream);
      this.status.checkpoint = this.checkpoint;
      this.status.generation = this.target?.checkpoint.generation ?? this.status.generation;
      this.status.position = this.position;
      this.status.lag = Math.max(0, last - this.position);
      this.status.updatedAt = new Date().toISOString();
      await this.statusKv?.put(statusKey(this.definition.name, this.scope.stream), JSON.stringify(this.status));
    } catch {
      // Status is advisory; the projection itself must not stop because it could not be reported.
    }
  }
}

export interface RebuildProgress {
  projection: string;
  stream: string;
  seq: number;
  /** Stream last sequence when the rebuild started (it may grow while we replay). */
  target: number;
  eventsPerSecond: number;
  etaSeconds: number | null;
}

export interface RebuildOptions {
  batchSize?: number;
  /**
   * Commit the fresh targets every this many events, bounding what they buffer. Default: only at the
   * end (and whenever the heap passes `commitAtHeapFraction`). A fresh target folds events in memory
   * and writes each aggregate's final state once at commit, so every extra commit rewrites what changed
   * since the previous one: commits should be as rare as memory allows.
   */
  commitEvery?: number;
  /** Commit early when the V8 heap holds more than this fraction of its limit (default 0.6). */
  commitAtHeapFraction?: number;
  /** Full schema check of every event (`memledger rebuild --verify`); default: structural (see decodeEventStructural). */
  verify?: boolean;
  onProgress?: (progress: RebuildProgress) => void;
}

/**
 * Replays a stream from sequence 1 into a fresh target that readers do not see, keeps replaying until
 * it has caught up with writes that arrived meanwhile, then promotes it. A live runner on the old
 * generation notices the switch and continues from the new checkpoint, so nothing is missed.
 */
export async function rebuildProjection(
  store: EventStore,
  definition: ProjectionDefinition,
  scope: ProjectionScope,
  options: RebuildOptions = {},
): Promise<{ seq: number; events: number; seconds: number }> {
  return rebuildProjections(store, [definition], scope, options);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

const MIN_EVENTS_PER_HEAP_COMMIT = 50_000;

/**
 * Rebuilds several projections of one stream in a single replay: every batch goes to each fresh target
 * (their applies and commits run side by side, so one target's I/O overlaps another's CPU), then each
 * target is promoted. Same promises as {@link rebuildProjection} per target; reading the log once
 * instead of once per projection.
 */
export async function rebuildProjections(
  store: EventStore,
  definitions: readonly ProjectionDefinition[],
  scope: ProjectionScope,
  options: RebuildOptions = {},
): Promise<{ seq: number; events: number; seconds: number }> {
  const batchSize = options.batchSize ?? 2000;
  const commitEvery = options.commitEvery ?? Number.POSITIVE_INFINITY;
  const heapLimit = getHeapStatistics().heap_size_limit * (options.commitAtHeapFraction ?? 0.6);
  const started = performance.now();
  const name = definitions.map((d) => d.name).join("+");
  const fresh: ProjectionTarget[] = [];
  try {
    for (const definition of definitions) fresh.push(await definition.openFresh(scope));
    const initialTarget = await store.lastSeq(scope.stream);
    let applied = 0;
    let lastSeq = 0;
    let sinceCommit = 0;
    let lastProgress = 0;
    const report = (force: boolean) => {
      const now = performance.now();
      if (!options.onProgress || (!force && now - lastProgress < 250)) return;
      lastProgress = now;
      const seconds = (now - started) / 1000;
      const rate = seconds > 0 ? applied / seconds : 0;
      const remaining = Math.max(0, initialTarget - lastSeq);
      options.onProgress({
        projection: name,
        stream: scope.stream,
        seq: lastSeq,
        target: initialTarget,
        eventsPerSecond: Math.round(rate),
        etaSeconds: rate > 0 ? remaining / rate : null,
      });
    };
    lastSeq = await store.replay(scope.stream, { batchSize, verify: options.verify ?? false }, async (events) => {
      await Promise.all(fresh.map((target) => target.apply(events)));
      applied += events.length;
      sinceCommit += events.length;
      lastSeq = events[events.length - 1]!.seq;
      // Checked per batch. What a commit cannot free (the search index lives in memory) must not turn
      // every later batch into a commit: at least MIN_EVENTS_PER_HEAP_COMMIT events between them.
      if (sinceCommit >= commitEvery || (sinceCommit >= MIN_EVENTS_PER_HEAP_COMMIT && process.memoryUsage().heapUsed > heapLimit)) {
        await Promise.all(fresh.map((target) => target.commit(lastSeq)));
        sinceCommit = 0;
      }
      report(false);
    });
    await Promise.all(fresh.map((target) => target.commit(lastSeq)));
    report(true);
    for (const [i, definition] of definitions.entries()) await definition.promote(scope, fresh[i]!);
    return { seq: lastSeq, events: applied, seconds: (performance.now() - started) / 1000 };
  } finally {
    await Promise.all(fresh.map((target) => target.close()));
  }
}
