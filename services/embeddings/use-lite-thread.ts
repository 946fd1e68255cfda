import { Worker } from "node:worker_threads";
import { compiledModuleUrl } from "../../projections/portable.js";
import { unavailable } from "../../schemas/errors.js";
import { fromRemoteError, type RemoteError } from "../remote-error.js";

/**
 * The embedded model on a thread of its own.
 *
 * USE-lite runs on TF.js WebAssembly, and a model call computes synchronously: a batch of 32 notes of 70
 * words held the thread for about four seconds (7 to 9 such notes a second, shared/NOTES.md). On the
 * thread that serves commands, every request, claim, file write and JetStream call of `memledger up`
 * waited meanwhile: an instance starting on a log whose memories were not embedded yet answered in
 * seconds, and its own JetStream requests timed out (5 s). Here the model is loaded and called in a
 * worker, one batch at a time, in order; the calling thread only posts the texts and gets the vectors
 * back (one transferred buffer per batch).
 *
 * One thread per process, started on the first embed, like the model it replaces (loaded once, shared by
 * every embedder). It does not keep the process alive while idle. When it ends (it failed, or
 * `stopUseLiteThread`), the calls waiting on it are rejected as `unavailable`, and the next call starts a
 * new one.
 */

export interface UseLiteRequest {
  id: number;
  texts: string[];
}

export type UseLiteReply = { id: number; error: null; rows: number; dimensions: number; vectors: Float32Array } | { id: number; error: RemoteError };

/** The worker's module (compiled JavaScript), or undefined when there is none (the model then runs on the caller's thread). */
export const useLiteWorkerUrl = (): string | undefined => {
  const own = import.meta.url;
  return compiledModuleUrl(new URL(own.endsWith(".ts") ? "./use-lite-worker.ts" : "./use-lite-worker.js", own).href);
};

class UseLiteThread {
  private readonly worker: Worker;
  private nextId = 0;
  private readonly waiting = new Map<number, { resolve: (rows: Float32Array[]) => void; reject: (error: unknown) => void }>();
  private ended = false;

  constructor(
    url: string,
    private readonly onEnd: (thread: UseLiteThread) => void,
  ) {
    this.worker = new Worker(new URL(url));
    this.worker.unref();
    this.worker.on("message", (reply: UseLiteReply) => this.settle(reply));
    this.worker.on("error", (error) => this.end(unavailable(`the embedding thread failed: ${error.message}`, {}, error)));
    this.worker.on("exit", (code) => this.end(unavailable(`the embedding thread ended (exit code ${code})`)));
  }

  embed(texts: string[]): Promise<Float32Array[]> {
    if (this.ended) return Promise.reject(unavailable("the embedding thread ended"));
    const id = this.nextId++;
    const done = new Promise<Float32Array[]>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    // Kept alive while a call waits on it: a process embedding before it exits finishes that first.
    this.worker.ref();
    this.worker.postMessage({ id, texts } satisfies UseLiteRequest);
    return done;
  }

  async stop(): Promise<void> {
    this.end(unavailable("the embedding thread was stopped"));
    await this.worker.terminate();
  }

  private settle(reply: UseLiteReply): void {
    const waiter = this.waiting.get(reply.id);
    this.waiting.delete(reply.id);
    if (this.waiting.size === 0) this.worker.unref();
    if (!waiter) return;
    if (reply.error) return waiter.reject(fromRemoteError(reply.error));
    const rows: Float32Array[] = new Array(reply.rows);
    for (let i = 0; i < reply.rows; i++) rows[i] = reply.vectors.subarray(i * reply.dimensions, (i + 1) * reply.dimensions);
    waiter.resolve(rows);
  }

  private end(error: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.onEnd(this);
    for (const { reject } of this.waiting.values()) reject(error);
    this.waiting.clear();
  }
}

let current: UseLiteThread | undefined;

/** One model call (a batch of non-blank texts) on the process's embedding thread; rows in input order. */
export function embedOnUseLiteThread(url: string, texts: string[]): Promise<Float32Array[]> {
  current ??= new UseLiteThread(url, (ended) => {
    if (current === ended) current = undefined;
  });
  return current.embed(texts);
}

/** Ends the embedding thread, if one runs: calls waiting on it are rejected, and the next embed starts a new one. */
export async function stopUseLiteThread(): Promise<void> {
  const thread = current;
  current = undefined;
  await thread?.stop();
}
