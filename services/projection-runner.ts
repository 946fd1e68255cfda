import { DeliverPolicy, type JsMsg } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { getHeapStatistics } from "node:v8";
import { naming } from "../events/subjects.js";
import { decodeEvent } from "../events/upcast.js";
import { ConflictReason, conflict, internal } from "../schemas/errors.js";
import type { ProjectedEvent, ProjectionDefinition, ProjectionProgress, ProjectionScope, ProjectionTarget } from "../projections/projection.js";
import type { EventStore } from "./event-store.js";
import { consumeLoop } from "./consume-loop.js";
import { createJetStreamResource } from "./nats.js";
import { ThreadedRebuild, canRebuildInThread, consumedKinds, kindsOf, ofKinds, packShared } from "./rebuild-threads.js";

/** What an operator sees for one projection of one stream (`memledger status`). */
export interface ProjectionStatus {
  projection: string;
  /** The instance whose runner reports (services/instance.ts); absent in entries of older builds. */
  instance?: string;
  /** "local": a read model of this instance alone; "leader": this instance writes a shared store. */
  role?: "local" | "leader";
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
  /** Sequences skipped because an operator quarantined them (`memledger quarantine`), the latest 100. */
  quarantined?: number[];
  lastError: { seq: number | null; error: string; at: string } | null;
  updatedAt: string;
}

export const statusBucket = (prefix: string) => naming(prefix).projectionStatusBucket();
/** One key per instance: two instances running the same projection each report their own progress. */
const statusKey = (instance: string, name: string, stream: string) => `${instance}.${name}.${stream}`;

export async function openStatusBucket(store: EventStore): Promise<KV> {
  const bucket = statusBucket(store.names.prefix);
  return createJetStreamResource(`the projection status bucket ${bucket}`, () => new Kvm(store.nc).create(bucket, { history: 1 }));
}

export async function readStatuses(store: EventStore): Promise<ProjectionStatus[]> {
  const kv = await openStatusBucket(store);
  const out: ProjectionStatus[] = [];
  // The keys the bucket holds now: its stream's subjects, in one request. Not kv.keys(): that follows the
  // bucket with a consumer and ends only on a message with nothing pending after it, and every runner
  // rewrites its entry each statusEveryMs, idle or not; on a loaded machine each delivery could find a
  // newer write pending, and one listing ran 43 s (the hostile reply-subject test's 60 s timeout).
  const { config } = (await kv.status()).streamInfo;
  const filter = config.subjects[0]!; // `$KV.<bucket>.>`
  const info = await store.jsm.streams.info(config.name, { subjects_filter: filter });
  for (const subject of Object.keys(info.state.subjects ?? {})) {
    const entry = await kv.get(subject.slice(filter.length - 1));
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
  /** Who reports the status (services/instance.ts); default "local". */
  instanceId?: string;
  /**
   * Set when the target is a shared store this instance writes as the holder of a leader lease
   * (services/leader-lease.ts): the target is fenced with the lease's token at open, and no batch is
   * committed once the lease is no longer held.
   */
  fence?: RunnerFence;
  /** Told what the runner is doing while it opens its target and catches up (`memledger up` prints it). */
  onProgress?: (progress: ProjectionProgress) => void;
  /**
   * For a definition that catches up by rebuild (ProjectionDefinition.catchUpByRebuild): as it starts, a
   * runner at least this many events behind its stream, and behind by at least a tenth of the stream,
   * rebuilds its read model instead of catching up live (default REBUILD_WHEN_BEHIND; Infinity: never).
   * A rebuild reads the whole log once and writes each item once; a live catch-up commits every batch.
   * The tenth keeps a long log that is only a little behind on the live path, which is then cheaper.
   */
  rebuildWhenBehind?: number;
}

/** RunnerOptions.rebuildWhenBehind's default: from here a rebuild was faster than a live catch-up (files and claims). */
export const REBUILD_WHEN_BEHIND = 5000;

/** The leader lease a runner of a shared read model writes under. */
export interface RunnerFence {
  /** The lease's fencing token: the KV revision at which this instance acquired it (grows with every takeover). */
  readonly token: number;
  /** False once the lease lapsed by this instance's own clock or was taken over. */
  held(): boolean;
}

/**
 * A target in a shared store that refuses writes from a former leader: `fence(token)` records the token
 * as the highest seen (or throws `conflict` when a higher one is recorded already), and every later
 * commit is refused once a higher token was recorded by the next leader.
 */
export interface FencedTarget extends ProjectionTarget {
  fence(token: number): Promise<void>;
}

const isFenced = (target: ProjectionTarget): target is FencedTarget => typeof (target as Partial<FencedTarget>).fence === "function";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function toProjected(msg: { seq: number; subject: string; data: Uint8Array }): ProjectedEvent {
  return { seq: msg.seq, subject: msg.subject, event: decodeEvent(msg.data) };
}

/**
 * Feeds one stream into one projection target through an ordered consumer of its own.
 *
 * The target's checkpoint is the only truth about progress: every (re)start, and every retry after a
 * failed batch, opens a new ordered consumer at checkpoint + 1, so a read model restored from an older
 * snapshot, or wiped, replays exactly what it lacks, and an event that failed is delivered again.
 * Ordered consumers are ephemeral and unnamed: any number of instances follow one stream side by side
 * without touching each other's consumers (a durable name is global to its stream), and the server
 * removes the consumer of an instance that went away.
 */
export class ProjectionRunner {
  private target: ProjectionTarget | undefined;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private statusKv: KV | undefined;
  private status: ProjectionStatus;
  private lastStatusWrite = 0;
  private committed = 0;
  private statusTimer: NodeJS.Timeout | undefined;
  /** Aborted by stop(): ends the current pull and wakes a runner sleeping in its retry backoff. */
  private readonly stopping = new AbortController();
  private readonly options: Required<Omit<RunnerOptions, "afterCommit" | "fence" | "onProgress">> & Pick<RunnerOptions, "afterCommit" | "fence" | "onProgress">;

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
      instanceId: options.instanceId ?? "local",
      fence: options.fence,
      onProgress: options.onProgress,
      rebuildWhenBehind: options.rebuildWhenBehind ?? REBUILD_WHEN_BEHIND,
    };
    this.status = {
      projection: definition.name,
      instance: this.options.instanceId,
      role: this.options.fence ? "leader" : "local",
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
    this.stopping.abort();
    clearInterval(this.statusTimer);
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

  /** (Re)opens the live target; the next consumer starts right after its checkpoint. */
  private async open(): Promise<void> {
    await this.target?.close();
    this.target = undefined;
    const target = await this.definition.openLive(this.scope, { onProgress: (p) => this.report(p.phase, p.message) });
    const fence = this.options.fence;
    if (fence && isFenced(target)) {
      // Before anything is written: a former leader still holding an older token is refused from now on.
      await target.fence(fence.token).catch(async (err) => {
        await target.close();
        throw err;
      });
    }
    this.target = target;
    this.committed = target.checkpoint.seq;
    await this.beginCatchUp();
    this.status.checkpoint = target.checkpoint.seq;
    this.status.generation = target.checkpoint.generation;
    await this.writeStatus(true);
  }

  /** An ordered consumer of this runner alone, delivering from `from` on. */
  private async consumerFrom(from: number) {
    return this.store.js.consumers.get(this.scope.stream, {
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: Math.max(1, from),
      // The server removes the consumer of an instance that died without stopping it (SIGKILL, a lost
      // host) after a minute without pulls, rather than the client's default five.
      inactive_threshold: 60_000,
    });
  }

  private async run(): Promise<void> {
    await this.catchUpByRebuild();
    await consumeLoop({
      consumer: async () => {
        if (!this.target) await this.open();
        return this.consumerFrom(this.committed + 1);
      },
      maxMessages: this.options.batchSize,
      maxBatch: this.options.batchSize,
      // A rebuild promoted a new generation: the target was reopened at the new checkpoint, so consume
      // again from there.
      handle: (batch) => this.applyBatch(batch),
      onSuccess: async () => {
        if (!this.status.blocked) return;
        this.status.blocked = null;
        await this.writeStatus(true);
      },
      onFailure: async (err, batch, attempts, blocking) => {
        // Never checkpoint past an event that was not applied. The loop narrows the batch down to the
        // failing event; report it as blocking and retry it with backoff: loud, never silent, never skipped.
        const seq = batch[0]?.seq ?? null;
        this.recordError(seq, err);
        if (seq !== null && blocking) {
          this.status.blocked = { seq, error: errorText(err), attempts, since: this.status.blocked?.since ?? new Date().toISOString() };
        }
        await this.writeStatus(true);
      },
      backoffMs: (attempts) => Math.min(30_000, 100 * 2 ** Math.min(attempts, 9)),
      // Reopened at its durable checkpoint: the next consumer redelivers the failed event and what followed.
      afterBackoff: () => this.open().catch((e) => this.recordError(null, e)),
      signal: this.stopping.signal,
    });
    await this.writeStatus(true);
  }

  /**
   * Rebuilds the read model when the live target is far behind (RunnerOptions.rebuildWhenBehind); the
   * consume loop then reopens it on the promoted generation and continues from its checkpoint. Readers keep
   * the old generation until the promote. A rebuild that fails is reported and the runner catches up live
   * instead (which stops at a bad event loudly, as it always did); one cut short by stop() promotes nothing.
   */
  private async catchUpByRebuild(): Promise<void> {
    if (!this.definition.catchUpByRebuild || !this.target) return;
    const last = await this.store.lastSeq(this.scope.stream).catch(() => 0);
    const behind = last - this.committed;
    if (behind < this.options.rebuildWhenBehind || behind < last / 10) return;
    if (this.options.fence && !this.options.fence.held()) return;
    this.report("catching-up", `${behind} events behind: rebuilding, faster than catching up one commit at a time`, { done: this.committed, total: last });
    try {
      const rebuilt = await rebuildProjection(this.store, this.definition, this.scope, { signal: this.stopping.signal });
      this.report("catching-up", `rebuilt to seq ${rebuilt.seq} (${rebuilt.events} events in ${rebuilt.seconds.toFixed(1)} s)`, { done: rebuilt.seq, total: last });
    } catch (err) {
      if (this.stopping.signal.aborted) return;
      this.recordError(null, err);
    }
    // The promoted generation (or, after a failure, the old one), from its checkpoint: opened by the
    // consume loop, which retries an open that fails.
    await this.target?.close().catch(() => undefined);
    this.target = undefined;
  }

  /** Applies and commits one batch; false when the target was replaced underneath and nothing was committed. */
  private async applyBatch(messages: JsMsg[]): Promise<boolean> {
    const target = this.target!;
    const events: ProjectedEvent[] = [];
    for (const m of messages) {
      if (m.seq <= this.committed) continue;
      let projected: ProjectedEvent | null;
      try {
        projected = toProjected(m);
      } catch {
        // Not an event: skipped if an operator quarantined it (services/quarantine.ts), else it throws
        // again and the batch blocks on it, loudly, as before.
        projected = await this.store.decodeStored(this.scope.stream, m);
        if (projected === null) this.status.quarantined = [...(this.status.quarantined ?? []), m.seq].slice(-100);
      }
      if (projected) events.push(projected);
    }
    const last = messages[messages.length - 1]!.seq;
    if (events.length > 0) await target.apply(events);
    if (!(await this.checkGeneration())) return false;
    const fence = this.options.fence;
    if (fence && !fence.held()) {
      throw conflict(`${this.definition.name} on ${this.scope.stream}: the leader lease (token ${fence.token}) is no longer held: not committing`, {
        reason: ConflictReason.lease_lost,
      });
    }
    if (last > this.committed) await target.commit(last);
    this.committed = Math.max(this.committed, last);
    this.reportCatchUp();
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

  /** The catch-up after the last open, while it lasts: from the checkpoint to the stream's end then. */
  private catchUp: { from: number; to: number; startedAt: number } | undefined;

  private report(phase: ProjectionProgress["phase"], message: string, counts: { done?: number; total?: number } = {}): void {
    this.options.onProgress?.({ projection: this.definition.name, app: this.scope.app, stream: this.scope.stream, phase, message, ...counts });
  }

  private async beginCatchUp(): Promise<void> {
    this.catchUp = undefined;
    if (!this.options.onProgress) return;
    const last = await this.store.lastSeq(this.scope.stream).catch(() => this.committed);
    if (last <= this.committed) return this.report("caught-up", `up to date at seq ${this.committed}`, { done: this.committed, total: this.committed });
    this.catchUp = { from: this.committed, to: last, startedAt: Date.now() };
    this.report("catching-up", `catching up ${this.committed}/${last}`, { done: this.committed, total: last });
  }

  private reportCatchUp(): void {
    const catchUp = this.catchUp;
    if (!catchUp) return;
    if (this.committed < catchUp.to) return this.report("catching-up", `catching up ${this.committed}/${catchUp.to}`, { done: this.committed, total: catchUp.to });
    this.catchUp = undefined;
    const seconds = ((Date.now() - catchUp.startedAt) / 1000).toFixed(1);
    this.report("caught-up", `caught up to seq ${this.committed} (${this.committed - catchUp.from} events in ${seconds} s)`, { done: this.committed, total: this.committed });
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
      await this.statusKv?.put(statusKey(this.options.instanceId, this.definition.name, this.scope.stream), JSON.stringify(this.status));
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
  /** Stops the replay between two batches: the rebuild then throws and promotes nothing. */
  signal?: AbortSignal;
  /** Full schema check of every event (`memledger rebuild --verify`); default: structural (see decodeEventStructural). */
  verify?: boolean;
  /**
   * Rebuild portable projections (files; claims given a Redis URL; search described as plain data, see
   * services/search-definition.ts) on worker threads of their own, for a stream of at least
   * `threadsFromEvents` events (services/rebuild-threads.ts). Default true; false keeps every target on
   * this thread.
   */
  threads?: boolean;
  /**
   * Workers only for a stream of at least this many events as the rebuild starts (default
   * THREADS_FROM_EVENTS, where they start to pay on a 2-core machine; tests pass 0).
   */
  threadsFromEvents?: number;
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
 * instead of once per projection. On a long stream (THREADS_FROM_EVENTS), portable projections are
 * rebuilt on worker threads, fed the raw events they consume (services/rebuild-threads.ts); the others,
 * and every one on a shorter stream, here, each batch decoded once for all of them and only the events
 * some of them consume.
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
  const verify = options.verify ?? false;
  const started = performance.now();
  const name = definitions.map((d) => d.name).join("+");
  // In definition order, each either here or on its thread.
  const fresh: ({ here: ProjectionTarget } | { thread: ThreadedRebuild })[] = [];
  const commitAll = (seq: number) => Promise.all(fresh.map((f) => ("here" in f ? f.here.commit(seq) : f.thread.commit(seq))));
  try {
    // The stream's length as the rebuild starts decides which portable projections get a thread.
    const initialTarget = await store.lastSeq(scope.stream);
    const threaded = (definition: ProjectionDefinition) => options.threads !== false && canRebuildInThread(definition, initialTarget, options.threadsFromEvents);
    const local = definitions.filter((d) => !threaded(d));
    const wanted = consumedKinds(local);
    // Opened side by side: a worker spends a few hundred milliseconds loading its modules before it
    // opens its target, and one after the other those waits added up before the first event was read.
    // Every opening is awaited (allSettled) so that what did open is closed below when another failed.
    const opened = await Promise.allSettled(
      definitions.map(async (definition) => (threaded(definition) ? { thread: await ThreadedRebuild.start(definition, scope, { verify }) } : { here: await definition.openFresh(scope) })),
    );
    for (const result of opened) if (result.status === "fulfilled") fresh.push(result.value);
    const failed = opened.find((result) => result.status === "rejected");
    if (failed) throw failed.reason;
    const here = fresh.flatMap((f) => ("here" in f ? [f.here] : []));
    const threads = fresh.flatMap((f) => ("thread" in f ? [f.thread] : []));
    const threadedKinds = consumedKinds(threads.map((thread) => thread.definition));
    let applied = 0;
    let lastSeq = 0;
    let sinceCommit = 0;
    let lastProgress = 0;
    const stopIfAborted = () => {
      if (options.signal?.aborted) throw internal(`rebuild of ${name} on ${scope.stream}: stopped at seq ${lastSeq}, nothing promoted`);
    };
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
    lastSeq = await store.replayMessages(scope.stream, { batchSize }, async (messages) => {
      stopIfAborted();
      // The workers first: they start folding while this thread decodes for the targets here.
      const kinds = kindsOf(messages);
      const shared = threads.length > 0 ? packShared(messages, kinds, threadedKinds) : undefined;
      const handedOver = Promise.all(threads.map((thread) => thread.push(shared!)));
      // Awaited below; should a target here fail first, a worker's failure must not go unhandled meanwhile.
      handedOver.catch(() => undefined);
      if (here.length > 0) {
        const events = await store.decodeMessages(scope.stream, ofKinds(messages, kinds, wanted), { verify });
        if (events.length > 0) await Promise.all(here.map((target) => target.apply(events)));
      }
      await handedOver;
      applied += messages.length;
      sinceCommit += messages.length;
      lastSeq = messages[messages.length - 1]!.seq;
      // Checked per batch. What a commit cannot free (the search index lives in memory) must not turn
      // every later batch into a commit: at least MIN_EVENTS_PER_HEAP_COMMIT events between them.
      if (sinceCommit >= commitEvery || (sinceCommit >= MIN_EVENTS_PER_HEAP_COMMIT && process.memoryUsage().heapUsed > heapLimit)) {
        await commitAll(lastSeq);
        sinceCommit = 0;
      }
      report(false);
    });
    report(true);
    stopIfAborted();
    // Each target commits and is then promoted at once, side by side with the others: each promote
    // switches its own read model (search writes its snapshot then, seconds at 1M events), so none waits
    // for another's commit (the files commit writes every memory's file), and a worker thread ends
    // once its target is promoted. Each is awaited, and the first failure is thrown; a read model whose
    // promote succeeded serves its new generation, as the ones promoted before a failing promote
    // always did.
    const finished = await Promise.allSettled(
      definitions.map(async (definition, i) => {
        const f = fresh[i]!;
        if ("here" in f) {
          await f.here.commit(lastSeq);
          await definition.promote(scope, f.here);
        } else {
          await f.thread.commit(lastSeq);
          await f.thread.promote();
          // Its thread and heap go now, not when the slowest target is done: at 1M events the search
          // index is still materializing its vectors then, and the process's peak is the sum of both.
          await f.thread.close();
        }
      }),
    );
    const refused = finished.find((result) => result.status === "rejected");
    if (refused) throw refused.reason;
    return { seq: lastSeq, events: applied, seconds: (performance.now() - started) / 1000 };
  } finally {
    await Promise.all(fresh.map((f) => ("here" in f ? f.here.close() : f.thread.close())));
  }
}
