import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import { internal } from "../../schemas/errors.js";

/**
 * An HNSW graph built on a worker thread while the caller goes on with other work.
 *
 * Inserting into an HNSW graph is the most expensive step of indexing a vector (about 1 to 4 ms per
 * 512-d point here at efConstruction 200, against microseconds for everything else a rebuild does per
 * memory), and hnswlib's addPoint is synchronous. An HnswVectorIndex that has no graph yet (a bulk
 * load, or a snapshot saved without one) builds it here: the inserts run on another core, in the order
 * they were sent, the builder reports how many it has applied (`caughtUp`, `onCaughtUp`), and the graph
 * comes back through a file (`writeIndex`, hnswlib's own format) once the builder has caught up.
 *
 * The worker's code is a string (`eval`) that loads hnswlib-node by its resolved path, so it runs
 * the same from dist/ and from the TypeScript sources the tests load.
 *
 * The thread is never terminated from outside: `Worker.terminate()` stops a thread wherever it is, and
 * when that is inside one of hnswlib's native calls (loading the addon, `addPoint` reading its array),
 * the call fails, the addon throws into a stopping thread, and Node ends the whole process with
 * "FATAL ERROR: Error::ThrowAsJavaScriptException napi_throw" (it killed a vitest worker in CI twice,
 * and would kill `up` when a rebuild stops early). Instead close() raises a shared flag that the thread
 * reads before each native call and exits by itself.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { dimensions, m, efConstruction, capacity, stop } = workerData;
// Ends this thread from JavaScript, between two native calls, once the host has asked it to stop.
const exitIfStopped = () => {
  if (Atomics.load(stop, 0) === 1) process.exit(0);
};
const { HierarchicalNSW } = require(workerData.hnswlib);
const graph = new HierarchicalNSW("cosine", dimensions);
graph.initIndex({ maxElements: capacity, m, efConstruction });
exitIfStopped();
let failure = null;
let done = 0;
const describe = (error) => String((error && error.message) || error);
parentPort.on("message", (message) => {
  // Whatever is still queued after a stop is dropped, not applied: close() does not wait for it.
  exitIfStopped();
  if (message.op === "add" || message.op === "delete") {
    apply(message);
    // Counted whether it failed or not, so that the host knows when nothing is left queued.
    parentPort.postMessage({ done: ++done });
  } else if (message.op === "write") {
    if (failure) return parentPort.postMessage({ id: message.id, error: failure });
    try {
      // Synchronously: an asynchronous write would race the inserts that follow it in the queue.
      graph.writeIndexSync(message.file);
      parentPort.postMessage({ id: message.id, error: null });
    } catch (error) {
      parentPort.postMessage({ id: message.id, error: describe(error) });
    }
  }
});
function apply(message) {
  if (message.op === "add") {
    if (failure) return;
    try {
      const { slots, vectors } = message;
      for (let i = 0; i < slots.length; i++) {
        exitIfStopped();
        const slot = slots[i];
        const room = graph.getMaxElements();
        if (slot >= room) graph.resizeIndex(Math.max(slot + 1, room * 2, capacity));
        graph.addPoint(Array.from(vectors.subarray(i * dimensions, (i + 1) * dimensions)), slot);
      }
    } catch (error) {
      failure = describe(error);
    }
  } else if (message.op === "delete") {
    if (failure) return;
    try {
      for (const slot of message.slots) graph.markDelete(slot);
    } catch (error) {
      failure = describe(error);
    }
  }
}
`;

const hnswlibPath = (): string => createRequire(import.meta.url).resolve("hnswlib-node");

export interface GraphParameters {
  dimensions: number;
  m: number;
  efConstruction: number;
  capacity: number;
}

export class GraphBuilder {
  private readonly worker: Worker;
  private nextId = 0;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (error: unknown) => void }>();
  private failure: unknown;
  /** Set to 1 by close(): the worker exits at its next check (see the note at the top). */
  private readonly stop = new Int32Array(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT));
  /** Settles once the worker's thread has ended, however it ended. */
  private readonly exited: Promise<void>;

  /** Inserts and deletions posted, and how many of them the worker has applied. */
  private posted = 0;
  private done = 0;
  /** Called whenever the worker has applied everything posted so far. */
  onCaughtUp: (() => void) | undefined;

  /** True while the worker has applied every insert and deletion posted (its graph is complete). */
  get caughtUp(): boolean {
    return this.done === this.posted;
  }

  constructor(readonly parameters: GraphParameters) {
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { ...parameters, hnswlib: hnswlibPath(), stop: this.stop } });
    this.exited = new Promise<void>((resolve) =>
      this.worker.once("exit", () => {
        // A write still waiting will never be answered.
        for (const waiter of this.waiting.values()) waiter.reject(internal("HNSW graph builder: closed before the graph was written"));
        this.waiting.clear();
        resolve();
      }),
    );
    this.worker.on("message", (reply: { done?: number; id: number; error: string | null }) => {
      if (reply.done !== undefined) {
        this.done = reply.done;
        if (this.caughtUp) this.onCaughtUp?.();
        return;
      }
      const waiter = this.waiting.get(reply.id);
      this.waiting.delete(reply.id);
      if (reply.error === null) waiter?.resolve();
      else waiter?.reject(internal(`HNSW graph builder: ${reply.error}`));
    });
    this.worker.on("error", (error) => {
      this.failure ??= error;
      for (const waiter of this.waiting.values()) waiter.reject(error);
      this.waiting.clear();
    });
    // The builder's thread never keeps the process up by itself.
    this.worker.unref();
  }

  /** Queues inserts: `vectors` holds one unit vector per slot, packed; it is copied to the worker. */
  add(slots: Int32Array, vectors: Float32Array): void {
    this.check();
    this.posted++;
    this.worker.postMessage({ op: "add", slots, vectors });
  }

  /** Queues deletions of slots the graph holds. */
  markDelete(slots: number[]): void {
    this.check();
    this.posted++;
    this.worker.postMessage({ op: "delete", slots });
  }

  /** Writes the graph, with every queued insert and deletion applied, to `file`. */
  async writeIndex(file: string): Promise<void> {
    this.check();
    const id = this.nextId++;
    const done = new Promise<void>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    this.worker.ref();
    try {
      this.worker.postMessage({ op: "write", id, file });
      await done;
    } finally {
      this.worker.unref();
    }
  }

  /**
   * Ends the worker's thread. It waits for at most the native call under way (one insert, or the
   * loading of hnswlib), never for queued inserts: those are dropped. The ref keeps the process up
   * meanwhile. Idempotent.
   */
  async close(): Promise<void> {
    Atomics.store(this.stop, 0, 1);
    this.worker.ref();
    // Wakes a worker that waits for messages; one that is busy sees the flag before its next insert.
    this.worker.postMessage({ op: "stop" });
    await this.exited;
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }
}
