import { Worker } from "node:worker_threads";
import { aggregateKindOfSubject, type AggregateKind } from "../events/subjects.js";
import { compiledModuleUrl } from "../projections/portable.js";
import type { Checkpoint, PortableDefinition, ProjectionDefinition, ProjectionScope } from "../projections/projection.js";
import { internal, type MemledgerError } from "../schemas/errors.js";
import { fromRemoteError, type RemoteError } from "./remote-error.js";
import type { StoredMessage } from "./event-store.js";

/**
 * Rebuilding a projection on a worker thread.
 *
 * A rebuild reads the log once and feeds every fresh target. On one thread, decoding the events and
 * folding them into three read models (files, claims, search) ran one after the other on one core
 * while the machine's other cores idled; a single-pass rebuild ran at 13% of the rate the log can be
 * read. A projection whose definition is portable (it can be made again from plain options in another
 * thread: projections/portable.ts) is rebuilt here instead: the caller's thread reads the log and
 * hands each worker the raw bytes of the events its projection consumes (the subject says the
 * aggregate kind, so nothing else is copied, and nothing is decoded on the caller's thread for it),
 * and the worker decodes and folds them (rebuild-worker.ts). A batch is packed once for every worker
 * into shared memory (SharedBatch), and at most MAX_IN_FLIGHT are queued per worker, so a slow worker
 * slows the reader instead of letting the log pile up in memory.
 *
 * A failure in the worker (a decode, a write) comes back as the same MemledgerError code with the
 * worker's stack as its cause; the rebuild stops, as it would on one thread. One difference: an event
 * that cannot be decoded and was quarantined while the rebuild ran fails the rebuild (the caller's
 * thread would look the quarantine up and skip it); running the rebuild again skips it.
 */

/** Batches queued per worker before the reader waits: enough to keep it busy, bounded in memory. */
const MAX_IN_FLIGHT = 4;

/**
 * The young generation of a rebuild worker's heap, in MB (V8 sizes it from the heap limit otherwise).
 * A worker folds a stream into state that lives until its commit: each batch it decodes is mostly
 * garbage a moment later, but a scavenge that comes in the middle of a batch copies what is still in
 * use, and with the default the search and files workers ran about 300 scavenges of 8 to 9 ms each
 * per 1M events. Measured with --trace-gc at 1M events (docs/benchmarks.md, sixth round): at 64 MB
 * they ran 66 to 190 and the workers' scavenges took 4.9 s instead of 6.7 s, for 60 to 100 MB more peak
 * RSS; 128 and 256 were no faster and cost 300 and 550 MB.
 */
export const REBUILD_WORKER_YOUNG_GENERATION_MB = 64;

export interface RebuildWorkerData {
  portable: PortableDefinition;
  scope: ProjectionScope;
  verify: boolean;
}

export type RebuildWorkerRequest =
  /** A shared batch (see SharedBatch) and the positions in it of the events this worker's projection consumes. */
  | { op: "apply"; id: number; seqs: Float64Array; subjects: string; bytes: Uint8Array; ends: Uint32Array; picks: Uint32Array }
  | { op: "commit"; id: number; seq: number }
  | { op: "promote"; id: number }
  | { op: "close"; id: number };

/** id -1: the worker has opened its fresh target (checkpoint) or failed to. */
export interface RebuildWorkerReply {
  id: number;
  error: RemoteError | null;
  checkpoint?: Checkpoint;
}

const workerEntry = (): string | undefined => {
  const own = import.meta.url;
  return compiledModuleUrl(new URL(own.endsWith(".ts") ? "./rebuild-worker.ts" : "./rebuild-worker.js", own).href);
};

/**
 * Streams shorter than this rebuild every projection on the reading thread (RebuildOptions.threadsFromEvents).
 *
 * A worker costs CPU the reading thread does not spend: it loads and compiles its own modules (about a
 * second of CPU), has a heap of its own to collect, and every event it consumes is copied to it. It
 * pays only where a core would otherwise idle, and on a 2-core machine the NATS server delivering the
 * log, the file writer and V8's own threads already keep both busy. Measured on one (docs/benchmarks.md,
 * fifth round), rebuilding files, claims and search in one pass, in a process of its own: at 100k
 * events the workers made it about 1.1 times as long (4.4 against 4.0 s, a fifth more CPU), at 300k it
 * was even (12.1 against 11.9 s, 15.0 against 17.9 s in a slower run), at 1M they made it 1.6 times
 * faster (35 against 55 s).
 */
export const THREADS_FROM_EVENTS = 500_000;

/**
 * Whether `rebuildProjections` can run this definition on a worker thread here, for a stream of
 * `events` events (unknown: as if long enough), rebuilding on workers from `fromEvents` events.
 */
export const canRebuildInThread = (definition: ProjectionDefinition, events = Number.POSITIVE_INFINITY, fromEvents = THREADS_FROM_EVENTS): boolean =>
  definition.portable !== undefined && events >= fromEvents && workerEntry() !== undefined;

/** The aggregate kinds a set of definitions consumes: undefined when one of them may use any event. */
export function consumedKinds(definitions: readonly ProjectionDefinition[]): ReadonlySet<AggregateKind> | undefined {
  const kinds = new Set<AggregateKind>();
  for (const definition of definitions) {
    if (!definition.consumes) return undefined;
    for (const kind of definition.consumes) kinds.add(kind);
  }
  return kinds;
}

/**
 * One batch of raw events packed once for every worker of a rebuild. The arrays live in
 * SharedArrayBuffers, so each worker reads the same bytes: a memory event that feeds files and search
 * is copied once, not once per worker, and what is posted to a worker is the batch's handles and the
 * positions it needs (`picks`). A batch is never written after it is packed.
 */
export interface SharedBatch {
  seqs: Float64Array;
  /** Where each event's bytes end in `bytes` (each starts where the previous one ended). */
  ends: Uint32Array;
  bytes: Uint8Array;
  /** The subjects joined by "\n" (a subject holds no whitespace): one string to copy, not one per event. */
  subjects: string;
  /** Each event's aggregate kind, read from its subject. */
  kinds: readonly (AggregateKind | null)[];
}

/** Whether an event of `kind` goes to consumers of `wanted` (undefined: they take every event). */
const isWanted = (kind: AggregateKind | null | undefined, wanted: ReadonlySet<AggregateKind> | undefined): boolean =>
  !wanted || (kind !== null && kind !== undefined && wanted.has(kind));

/** Packs the messages of a batch whose kind is in `wanted` (all when undefined) into a SharedBatch. */
export function packShared(messages: readonly StoredMessage[], kinds: readonly (AggregateKind | null)[], wanted: ReadonlySet<AggregateKind> | undefined): SharedBatch {
  const chosen: number[] = [];
  let total = 0;
  for (let i = 0; i < messages.length; i++) {
    if (!isWanted(kinds[i], wanted)) continue;
    chosen.push(i);
    total += messages[i]!.data.length;
  }
  const bytes = new Uint8Array(new SharedArrayBuffer(total));
  const ends = new Uint32Array(new SharedArrayBuffer(chosen.length * Uint32Array.BYTES_PER_ELEMENT));
  const seqs = new Float64Array(new SharedArrayBuffer(chosen.length * Float64Array.BYTES_PER_ELEMENT));
  const subjects: string[] = new Array(chosen.length);
  const chosenKinds: (AggregateKind | null)[] = new Array(chosen.length);
  let offset = 0;
  for (let j = 0; j < chosen.length; j++) {
    const i = chosen[j]!;
    const m = messages[i]!;
    bytes.set(m.data, offset);
    offset += m.data.length;
    ends[j] = offset;
    seqs[j] = m.seq;
    subjects[j] = m.subject;
    chosenKinds[j] = kinds[i] ?? null;
  }
  return { seqs, ends, bytes, subjects: subjects.join("\n"), kinds: chosenKinds };
}

/** The aggregate kind of each message of a batch, read from its subject once for every consumer of the batch. */
export const kindsOf = (messages: readonly StoredMessage[]): (AggregateKind | null)[] => messages.map((m) => aggregateKindOfSubject(m.subject));

/** The messages of a batch whose kind is in `kinds` (all of them when `kinds` is undefined). */
export function ofKinds(messages: readonly StoredMessage[], kinds: readonly (AggregateKind | null)[], wanted: ReadonlySet<AggregateKind> | undefined): readonly StoredMessage[] {
  return wanted ? messages.filter((_, i) => isWanted(kinds[i], wanted)) : messages;
}

const fromRemote = (projection: string, error: RemoteError): MemledgerError => fromRemoteError(error, `${projection} (rebuilt on a worker thread): `);

/** A fresh target living in a worker thread, driven from here. */
export class ThreadedRebuild {
  private nextId = 0;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (error: unknown) => void }>();
  private readonly inFlight = new Set<Promise<void>>();
  private failure: unknown;
  private exited = false;
  private readonly wanted: ReadonlySet<AggregateKind> | undefined;

  private constructor(
    readonly definition: ProjectionDefinition,
    private readonly worker: Worker,
    readonly checkpoint: Checkpoint,
  ) {
    this.wanted = consumedKinds([definition]);
    worker.on("message", (reply: RebuildWorkerReply) => this.settle(reply));
    worker.on("error", (error) => this.fail(internal(`${definition.name} rebuild worker failed: ${error.message}`, {}, error)));
    worker.on("exit", (code) => {
      this.exited = true;
      this.fail(internal(`${definition.name} rebuild worker exited (code ${code})`));
    });
  }

  /** Starts the worker and opens the fresh target there. */
  static async start(definition: ProjectionDefinition, scope: ProjectionScope, options: { verify: boolean }): Promise<ThreadedRebuild> {
    const entry = workerEntry();
    if (!definition.portable || entry === undefined) throw internal(`${definition.name} cannot be rebuilt on a worker thread`);
    const workerData: RebuildWorkerData = { portable: definition.portable, scope, verify: options.verify };
    const worker = new Worker(new URL(entry), { workerData, resourceLimits: { maxYoungGenerationSizeMb: REBUILD_WORKER_YOUNG_GENERATION_MB } });
    let onExit!: (code: number) => void;
    let onError!: (error: Error) => void;
    const opened = await new Promise<RebuildWorkerReply>((resolve, reject) => {
      onExit = (code) => reject(internal(`${definition.name} rebuild worker exited (code ${code}) before opening its target`));
      onError = (error) => reject(internal(`${definition.name} rebuild worker failed to start: ${error.message}`, {}, error));
      worker.once("error", onError);
      worker.once("exit", onExit);
      worker.once("message", resolve);
    }).finally(() => {
      // Only these two: a Worker has listeners of its own (removeAllListeners cut its message delivery).
      worker.off("exit", onExit);
      worker.off("error", onError);
    });
    if (opened.error || !opened.checkpoint) {
      await worker.terminate();
      throw fromRemote(definition.name, opened.error ?? { code: null, message: "no checkpoint", details: {}, stack: undefined });
    }
    return new ThreadedRebuild(definition, worker, opened.checkpoint);
  }

  /**
   * Hands over the events of a shared batch this projection consumes (all of them if it does not say):
   * their positions, with the batch's shared arrays; waits first while MAX_IN_FLIGHT batches are queued.
   */
  async push(batch: SharedBatch): Promise<void> {
    this.check();
    const positions: number[] = [];
    for (let i = 0; i < batch.kinds.length; i++) if (isWanted(batch.kinds[i], this.wanted)) positions.push(i);
    if (positions.length === 0) return;
    while (this.inFlight.size >= MAX_IN_FLIGHT) await Promise.race(this.inFlight);
    const picks = Uint32Array.from(positions);
    const { seqs, subjects, bytes, ends } = batch;
    const done = this.request({ op: "apply", id: 0, seqs, subjects, bytes, ends, picks }, [picks.buffer]);
    const tracked = done.finally(() => this.inFlight.delete(tracked));
    // A failure is also kept in `failure` and thrown by the next call: never an unhandled rejection here.
    tracked.catch(() => undefined);
    this.inFlight.add(tracked);
  }

  /** Waits for every queued batch, then commits at `seq` in the worker. */
  async commit(seq: number): Promise<void> {
    await this.drain();
    await this.request({ op: "commit", id: 0, seq });
  }

  async promote(): Promise<void> {
    await this.drain();
    await this.request({ op: "promote", id: 0 });
  }

  /**
   * Closes the target and ends the thread; never throws (it runs in `finally`). The target is closed
   * even after a failure, while the thread lives: its close ends what it started (a search target's
   * vector thread, which must exit by itself: see services/vector-thread.ts), and the thread is
   * terminated only once it is idle.
   */
  async close(): Promise<void> {
    if (!this.exited) await this.send({ op: "close", id: 0 }).catch(() => undefined);
    await this.worker.terminate().catch(() => undefined);
  }

  private async drain(): Promise<void> {
    await Promise.all(this.inFlight);
    this.check();
  }

  private request(request: RebuildWorkerRequest, transfer: ArrayBuffer[] = []): Promise<void> {
    this.check();
    return this.send(request, transfer);
  }

  /** Posts a request, failed or not (close); answered, or rejected when the thread ends. */
  private send(request: RebuildWorkerRequest, transfer: ArrayBuffer[] = []): Promise<void> {
    if (this.exited) return Promise.reject(this.failure);
    const id = this.nextId++;
    const done = new Promise<void>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    this.worker.postMessage({ ...request, id }, transfer);
    return done;
  }

  private settle(reply: RebuildWorkerReply): void {
    const waiter = this.waiting.get(reply.id);
    this.waiting.delete(reply.id);
    if (reply.error === null) return waiter?.resolve();
    const error = fromRemote(this.definition.name, reply.error);
    this.failure ??= error;
    waiter?.reject(error);
  }

  private fail(error: unknown): void {
    this.failure ??= error;
    for (const waiter of this.waiting.values()) waiter.reject(this.failure);
    this.waiting.clear();
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }
}
