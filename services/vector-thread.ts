import { Worker } from "node:worker_threads";
import { compiledModuleUrl } from "../projections/portable.js";
import type { IndexedMemory, VectorChanges, VectorSink, VectorWriteStats } from "../projections/search/index.js";
import { internal } from "../schemas/errors.js";
import { fromRemoteError, type RemoteError } from "./remote-error.js";
import type { SearchDescription } from "./search-definition.js";

/**
 * A fresh search index's vector channel on a thread of its own (a VectorSink).
 *
 * At the end of a rebuild of 1M events, the search worker committed alone while the other core idled:
 * BM25 for 100k memories, then 81k vectors read from the embedding cache and stored, then both written
 * out. Here the vectors are read, checked and stored by a VectorChannel on another thread, made from
 * the same plain description as the search projection (its embedder behind the prefix's cache, on a
 * NATS connection of its own, and its backend), while the index's own thread indexes BM25; `save`
 * writes them where the snapshot expects them.
 *
 * The thread is never terminated from outside: it may be inside hnswlib's native code (see
 * projections/vectors/graph-builder.ts). close() asks it to close its index and connection, and it
 * exits by itself.
 */

/** What the thread is started with. */
export interface VectorThreadData {
  vectors: NonNullable<SearchDescription["vectors"]>;
  app: string;
  generation: string;
}

export type VectorThreadRequest =
  | { op: "write"; id: number; changes: [string, IndexedMemory | null][] }
  | { op: "save"; id: number; dir: string; label: string }
  | { op: "close"; id: number };

/** id -1: the thread has opened its channel (modelId) or failed to. */
export interface VectorThreadReply {
  id: number;
  error: RemoteError | null;
  modelId?: string;
  stats?: VectorWriteStats;
}

const workerEntry = (): string | undefined => {
  const own = import.meta.url;
  return compiledModuleUrl(new URL(own.endsWith(".ts") ? "./vector-thread-worker.ts" : "./vector-thread-worker.js", own).href);
};

export class ThreadedVectorSink implements VectorSink {
  private nextId = 0;
  private readonly waiting = new Map<number, { resolve: (reply: VectorThreadReply) => void; reject: (error: unknown) => void }>();
  /** Set once the thread has ended or failed: every later call throws it. */
  private failure: unknown;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly worker: Worker,
    readonly modelId: string,
    private readonly exited: Promise<void>,
  ) {
    worker.on("message", (reply: VectorThreadReply) => {
      const waiter = this.waiting.get(reply.id);
      this.waiting.delete(reply.id);
      if (reply.error === null) waiter?.resolve(reply);
      else waiter?.reject(fromRemoteError(reply.error));
    });
    void exited.then(() => this.fail(internal("the vector thread has ended")));
  }

  /** Starts the thread and opens its channel over an empty index for the generation `at`. */
  static async start(vectors: VectorThreadData["vectors"], at: { app: string; generation: string }): Promise<ThreadedVectorSink> {
    const entry = workerEntry();
    if (entry === undefined) throw internal("the vector thread needs the compiled module services/vector-thread-worker.js (npm run build)");
    const workerData: VectorThreadData = { vectors, app: at.app, generation: at.generation };
    const worker = new Worker(new URL(entry), { workerData });
    let failed: Error | undefined;
    worker.on("error", (error) => (failed ??= error));
    const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
    const opened = await Promise.race([
      new Promise<VectorThreadReply>((resolve) => worker.once("message", resolve)),
      exited.then(() => undefined),
    ]);
    if (opened?.error === null && opened.modelId !== undefined) return new ThreadedVectorSink(worker, opened.modelId, exited);
    if (opened) {
      // It answered with its failure and waits: asked to close, it exits by itself.
      worker.postMessage({ op: "close", id: 0 } satisfies VectorThreadRequest);
      await exited;
      if (opened.error) throw fromRemoteError(opened.error);
    }
    throw internal(`the vector thread ended before opening its channel${failed ? `: ${failed.message}` : ""}`, {}, failed);
  }

  async write(changes: VectorChanges): Promise<VectorWriteStats> {
    const reply = await this.request({ op: "write", id: 0, changes: [...changes] });
    return reply.stats!;
  }

  async save(dir: string, label: string): Promise<void> {
    await this.request({ op: "save", id: 0, dir, label });
  }

  /** Closes the channel and ends the thread; never throws (targets close in `finally`). Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (!this.failure) await this.request({ op: "close", id: 0 }).catch(() => undefined);
      await this.exited;
    })();
    return this.closing;
  }

  private request(request: VectorThreadRequest): Promise<VectorThreadReply> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const done = new Promise<VectorThreadReply>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    this.worker.postMessage({ ...request, id });
    return done;
  }

  private fail(error: unknown): void {
    this.failure ??= error;
    for (const waiter of this.waiting.values()) waiter.reject(this.failure);
    this.waiting.clear();
  }
}
