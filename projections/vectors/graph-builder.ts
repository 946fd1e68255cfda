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
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { HierarchicalNSW } = require(workerData.hnswlib);
const { dimensions, m, efConstruction, capacity } = workerData;
const graph = new HierarchicalNSW("cosine", dimensions);
graph.initIndex({ maxElements: capacity, m, efConstruction });
parentPort.postMessage({ ready: true });
let failure = null;
let done = 0;
const describe = (error) => String((error && error.message) || error);
parentPort.on("message", (message) => {
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
  /**
   * Settles once the worker has loaded hnswlib and made its graph (or died). close() waits for it:
   * terminating a worker while hnswlib's native module initialises makes the addon's own error throw
   * into a stopping thread, which Node treats as a fatal error of the whole process.
   */
  private readonly started: Promise<void>;

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
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { ...parameters, hnswlib: hnswlibPath() } });
    let started!: () => void;
    this.started = new Promise<void>((resolve) => (started = resolve));
    this.worker.once("exit", () => started());
    this.worker.on("message", (reply: { ready?: true; done?: number; id: number; error: string | null }) => {
      if (reply.ready) return started();
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
      started();
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

  async close(): Promise<void> {
    // Held up by the worker's start only (never by queued inserts): the ref keeps the process up meanwhile.
    this.worker.ref();
    await this.started;
    await this.worker.terminate();
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }
}
