import { createHash } from "node:crypto";
import { open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { Worker } from "node:worker_threads";

/**
 * File-system edges of the file projection: atomic writes and deterministic tree walks.
 */

/**
 * Writes through a temporary file in the same directory, then renames it over the target: readers see
 * the old content or the new, never a torn file. The temporary name is fixed (hidden, `.tmp`): one writer
 * owns a generation directory, so names cannot clash, and a crash leaves at most one leftover per file,
 * which the next write replaces and `removeLeftoverTemps` sweeps at open. With `sync`, the data is
 * fsynced before the rename (survives an OS crash, not only a process exit), at a large cost in speed.
 */
export async function writeFileAtomic(file: string, content: string, sync = false): Promise<void> {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
  const handle = await open(temp, "w");
  try {
    await handle.writeFile(content, "utf8");
    if (sync) await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temp, file);
}

export const isNotFound = (err: unknown): boolean => (err as NodeJS.ErrnoException)?.code === "ENOENT";

export async function readTextIfExists(file: string): Promise<string | null> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

/** Deletes temporary files a crash left behind under `dir`. */
export async function removeLeftoverTemps(dir: string): Promise<void> {
  const names = await readdir(dir, { recursive: true });
  await Promise.all(
    names
      .filter((name) => path.basename(name).startsWith(".") && name.endsWith(".tmp"))
      .map((name) => rm(path.join(dir, name), { force: true })),
  );
}

export interface WalkOptions {
  /** Include names starting with '.' (the projection's state and checkpoint). Default: false. */
  includeHidden?: boolean;
}

/**
 * Every regular file under `dir`, as '/'-separated relative paths sorted by code unit. Symbolic links are
 * followed (the app directories are links to generations); hidden entries are skipped unless asked for.
 */
export async function listFiles(dir: string, options: WalkOptions = {}): Promise<string[]> {
  const out: string[] = [];
  const walk = async (absolute: string, relative: string): Promise<void> => {
    const entries = await readdir(absolute, { withFileTypes: true });
    for (const entry of entries) {
      if (!options.includeHidden && entry.name.startsWith(".")) continue;
      const childAbsolute = path.join(absolute, entry.name);
      const childRelative = relative ? `${relative}/${entry.name}` : entry.name;
      const isDirectory = entry.isSymbolicLink() ? (await stat(childAbsolute)).isDirectory() : entry.isDirectory();
      if (isDirectory) await walk(childAbsolute, childRelative);
      else out.push(childRelative);
    }
  };
  await walk(dir, "");
  return out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * sha256 over the sorted relative paths and contents of every file under `root`, following symbolic
 * links. Each path and content is length-prefixed, so no two different trees hash alike by concatenation.
 * Equal hashes mean byte-identical trees: what a rebuild must reproduce.
 */
export async function treeHash(root: string, options: WalkOptions = {}): Promise<string> {
  const hash = createHash("sha256");
  for (const relative of await listFiles(root, options)) {
    const content = await readFile(path.join(root, relative));
    const name = Buffer.from(relative, "utf8");
    hash.update(`${name.length}:`).update(name).update(`${content.length}:`).update(content);
  }
  return hash.digest("hex");
}

// The worker is plain CommonJS given as source, so it runs the same from dist/ and under vitest (which
// runs the TypeScript sources and could not start a worker from a .ts file).
const WRITER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { writeFileSync } = require("node:fs");
parentPort.on("message", ({ id, files }) => {
  try {
    for (const [file, content] of files) writeFileSync(file, content, "utf8");
    parentPort.postMessage({ id, error: null });
  } catch (err) {
    parentPort.postMessage({ id, error: String((err && err.message) || err) });
  }
});
`;

/**
 * Writes files in place (no temporary and rename: for a directory nobody reads yet) on a worker thread,
 * with synchronous writes, in batches. A rebuild's commit renders on the main thread while the worker
 * writes, and the other projections' commits (the search index's inserts) run meanwhile. Synchronous
 * writes because on these machines fs/promises' writeFile (open, write, close: three thread-pool round
 * trips per file) took 2.5 to 5.6 s for 6,000 small files under load, writeFileSync 0.5 to 0.7 s.
 */
export class BackgroundWriter {
  private readonly worker: Worker;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  private readonly inFlight: Promise<void>[] = [];
  private batch: [string, string][] = [];
  private next = 0;

  constructor(
    private readonly filesPerBatch = 256,
    private readonly maxBatchesInFlight = 16,
  ) {
    this.worker = new Worker(WRITER_SOURCE, { eval: true });
    this.worker.on("message", ({ id, error }: { id: number; error: string | null }) => {
      const waiting = this.waiting.get(id);
      this.waiting.delete(id);
      if (error === null) waiting?.resolve();
      else waiting?.reject(new Error(`writing files failed: ${error}`));
    });
    this.worker.on("error", (err) => this.failAll(err));
    this.worker.on("exit", () => this.failAll(new Error("the file writer exited")));
  }

  /** Queues a write; waits when too many batches are ahead of the disk (bounds the memory they hold). */
  async write(file: string, content: string): Promise<void> {
    this.batch.push([file, content]);
    if (this.batch.length >= this.filesPerBatch) this.flush();
    if (this.inFlight.length > this.maxBatchesInFlight) await this.inFlight.shift();
  }

  /** Resolves once every queued file is written (rejects with the first failure); stops the worker. */
  async close(): Promise<void> {
    this.flush();
    try {
      await Promise.all(this.inFlight.splice(0));
    } finally {
      await this.worker.terminate();
    }
  }

  private flush(): void {
    if (this.batch.length === 0) return;
    const id = this.next++;
    const files = this.batch;
    this.batch = [];
    const done = new Promise<void>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    done.catch(() => undefined); // surfaced by write() or close(), never as an unhandled rejection
    this.inFlight.push(done);
    this.worker.postMessage({ id, files });
  }

  private failAll(err: Error): void {
    for (const waiting of this.waiting.values()) waiting.reject(err);
    this.waiting.clear();
  }
}
