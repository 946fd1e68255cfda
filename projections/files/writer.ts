import { Worker } from "node:worker_threads";
import { internal } from "../../schemas/errors.js";

/**
 * Writes a fresh generation's files on a worker thread, in batches, in the order they were queued.
 *
 * A rebuild writes one markdown file per memory (10k files at 100k events). Written synchronously on
 * the main thread, those writes were 27% of a single-pass rebuild's time (file creation on ext4 under
 * load, ~1.4 ms each), during which nothing else ran; through fs/promises each small file is three
 * thread-pool round trips. Here the main thread renders and queues, the worker creates the files (and
 * their folders, which took milliseconds each under load) while
 * the main thread goes on folding events (and, on a 2-core machine, on the other core), and `drain`
 * resolves once everything queued is on disk (page cache: a fresh generation is invisible until
 * promoted and never resumed, so it is not fsynced, as before).
 *
 * A batch goes to the worker as bytes, not strings: the contents encoded as UTF-8 into one buffer that
 * is transferred (moved, not copied), with where each file ends, and the paths joined by NUL (which no
 * path holds). Posting an array of strings made the structured clone copy each one, and the worker then
 * encoded each again to write it: at 100k events that posting was 9% of a one-thread rebuild's time.
 *
 * The worker's code is a string (`eval`), so it runs the same from the compiled dist/ and from the
 * TypeScript sources the tests load: it only needs node:fs.
 */
const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { mkdirSync, writeFileSync } = require("node:fs");
const path = require("node:path");
// Creates the folders between base and the file one level at a time, never base itself: if base was
// deleted (the generation was removed), writing fails instead of resurrecting it.
const ensureParent = (base, file) => {
  const segments = path.relative(base, path.dirname(file)).split(path.sep).filter(Boolean);
  let dir = base;
  for (const segment of segments) {
    dir = path.join(dir, segment);
    try {
      mkdirSync(dir);
    } catch (error) {
      if (error.code !== "EEXIST") throw error;
    }
  }
};
parentPort.on("message", ({ id, base, paths, ends, bytes }) => {
  let written = 0;
  try {
    const files = paths.split("\0");
    for (let i = 0; i < files.length; i++) {
      const content = bytes.subarray(i === 0 ? 0 : ends[i - 1], ends[i]);
      try {
        writeFileSync(files[i], content);
      } catch (error) {
        if (error.code !== "ENOENT") throw error;
        ensureParent(base, files[i]);
        writeFileSync(files[i], content);
      }
      written++;
    }
    parentPort.postMessage({ id, written, error: null });
  } catch (error) {
    parentPort.postMessage({ id, written, error: { message: String(error && error.message), code: error && error.code } });
  }
});
`;

/** Files per message to the worker: large enough that messaging costs little, small enough to start writing early. */
const BATCH_FILES = 256;

interface Reply {
  id: number;
  written: number;
  error: { message: string; code?: string } | null;
}

export class FileWriter {
  /** @param base the directory every file is written under; folders below it are created as needed. */
  constructor(private readonly base: string) {}

  private worker: Worker | undefined;
  /** Absolute paths not yet sent, and their contents. */
  private queuedPaths: string[] = [];
  private queuedContents: string[] = [];
  private nextId = 0;
  private readonly inFlight = new Map<number, { done: Promise<void>; resolve: () => void; reject: (error: unknown) => void }>();
  private failure: unknown;
  private closed = false;
  /** Tracked files queued or in flight, by the id of the batch that writes their last queued content (nextId: not sent yet). */
  private readonly pending = new Map<string, number>();

  /**
   * Queues a file; it is written after everything queued before it. Throws a failure of an earlier batch.
   * `track`: the file may be read back before the queue drains (see whenWritten).
   */
  enqueue(file: string, content: string, track = false): void {
    this.check();
    this.queuedPaths.push(file);
    this.queuedContents.push(content);
    if (track) this.pending.set(file, this.nextId);
    if (this.queuedPaths.length >= BATCH_FILES) this.send();
  }

  /**
   * Resolves once the last content queued for `file` (enqueued with `track`) is written, at once when
   * nothing for it is pending, without waiting for the rest of the queue as `drain` does; rejects as
   * `drain` would.
   */
  async whenWritten(file: string): Promise<void> {
    this.check();
    const batch = this.pending.get(file);
    if (batch === undefined) return;
    if (batch === this.nextId) this.send();
    await this.inFlight.get(batch)?.done;
    this.check();
  }

  /** Resolves when every queued file is written; rejects with the first write that failed. */
  async drain(): Promise<void> {
    this.check();
    this.send();
    await Promise.allSettled([...this.inFlight.values()].map((batch) => batch.done));
    this.check();
  }

  /** Stops the worker; files queued and not drained may or may not be written. */
  async close(): Promise<void> {
    this.closed = true;
    this.queuedPaths = [];
    this.queuedContents = [];
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
    for (const { reject } of this.inFlight.values()) reject(internal("the file writer was closed"));
    this.inFlight.clear();
  }

  private send(): void {
    if (this.queuedPaths.length === 0) return;
    const paths = this.queuedPaths;
    const contents = this.queuedContents;
    this.queuedPaths = [];
    this.queuedContents = [];
    // Its own ArrayBuffer (not Node's shared pool), so that it can be transferred.
    const ends = new Uint32Array(contents.length);
    let total = 0;
    for (let i = 0; i < contents.length; i++) ends[i] = total += Buffer.byteLength(contents[i]!, "utf8");
    const bytes = Buffer.from(new ArrayBuffer(total));
    let offset = 0;
    for (const content of contents) offset += bytes.write(content, offset, "utf8");
    const id = this.nextId++;
    let settle!: { resolve: () => void; reject: (error: unknown) => void };
    const done = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
    done.catch(() => undefined); // observed through `failure` and drain
    this.inFlight.set(id, { done, ...settle });
    const worker = this.workerThread();
    worker.ref(); // keeps the process up while files are being written
    worker.postMessage({ id, base: this.base, paths: paths.join("\0"), ends, bytes }, [ends.buffer, bytes.buffer]);
  }

  private workerThread(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(WORKER_SOURCE, { eval: true });
    worker.on("message", (reply: Reply) => {
      const batch = this.inFlight.get(reply.id);
      this.inFlight.delete(reply.id);
      for (const [file, id] of this.pending) if (id <= reply.id) this.pending.delete(file);
      if (reply.error) {
        const error = Object.assign(new Error(reply.error.message), reply.error.code ? { code: reply.error.code } : {});
        this.failure ??= error;
        batch?.reject(error);
      } else {
        batch?.resolve();
      }
      if (this.inFlight.size === 0) worker.unref();
    });
    worker.on("error", (error) => {
      this.failure ??= error;
      for (const batch of this.inFlight.values()) batch.reject(error);
      this.inFlight.clear();
    });
    // An idle worker does not keep the process up (a rebuild that failed before close).
    worker.unref();
    this.worker = worker;
    return worker;
  }

  private check(): void {
    if (this.closed) throw internal("the file writer was closed");
    if (this.failure) throw this.failure;
  }
}
