import type { Consumer, JsMsg } from "@nats-io/jetstream";
import { PULL_EXPIRES_MS } from "./nats.js";

/** Sleeps `ms`, or less when `signal` aborts: a loop told to stop must not sit out its backoff. */
export function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

export interface ConsumeLoopOptions {
  /**
   * The consumer each (re)start reads from: an ordered consumer from the reader's own checkpoint + 1
   * (projections), or a durable one whose acknowledgements are the position (the curator). Called again
   * after every failure, so what failed is delivered again.
   */
  consumer(): Promise<Consumer>;
  /** Messages per pull. */
  maxMessages: number;
  /** Messages handed to `handle` at once; after a failure, one at a time until one succeeds. */
  maxBatch: number;
  /**
   * Applies a batch. Throwing means nothing past the batch's first message may count as done: the loop
   * reports, backs off and starts a new consumer. False: start a new consumer now (no failure).
   */
  handle(batch: JsMsg[]): Promise<boolean>;
  /** After a batch was handled (a block, if any, has cleared). */
  onSuccess?(): Promise<void>;
  /**
   * A failure, before the backoff. `blocking`: the batch had been narrowed to one message, so that
   * message is what blocks (`batch` is empty when the consumer itself failed).
   */
  onFailure(err: unknown, batch: JsMsg[], attempts: number, blocking: boolean): Promise<void>;
  /** The backoff after the `attempts`-th failure in a row. */
  backoffMs(attempts: number): number;
  /** After the backoff, before the next consumer (a projection reopens its target at its checkpoint). */
  afterBackoff?(): Promise<void>;
  /** Stops the loop promptly: the current pull ends and a backoff is cut short. */
  signal: AbortSignal;
  /** The connection is gone (a crash): stop without reporting, JetStream redelivers what was not acked. */
  halted?(): boolean;
}

/**
 * Consumes one stream until `signal` aborts: pull, batch what is already waiting (never holding an event
 * back when nothing more is queued), handle, and on failure narrow to the failing message, report it and
 * retry with exponential backoff. Poison blocks loudly; nothing after it is handled before it is.
 */
export async function consumeLoop(options: ConsumeLoopOptions): Promise<void> {
  const { signal } = options;
  let attempts = 0;
  let batchLimit = options.maxBatch;
  while (!signal.aborted) {
    let pending: JsMsg[] = [];
    let batch: JsMsg[] = [];
    let stopOnAbort: (() => void) | undefined;
    try {
      const consumer = await options.consumer();
      const messages = await consumer.consume({ max_messages: options.maxMessages, expires: PULL_EXPIRES_MS });
      stopOnAbort = () => messages.stop();
      signal.addEventListener("abort", stopOnAbort, { once: true });
      try {
        if (signal.aborted) break;
        for await (const m of messages) {
          pending.push(m);
          if (pending.length < batchLimit && m.info.pending > 0) continue;
          batch = pending;
          pending = [];
          if (!(await options.handle(batch))) break;
          batch = [];
          attempts = 0;
          batchLimit = options.maxBatch;
          await options.onSuccess?.();
          if (signal.aborted) break;
        }
      } finally {
        messages.stop();
      }
    } catch (err) {
      if (signal.aborted || options.halted?.()) break;
      attempts++;
      const blocking = batch.length === 1 || (batch.length > 0 && batchLimit === 1);
      batchLimit = 1;
      await options.onFailure(err, batch, attempts, blocking);
      await sleepUnlessAborted(options.backoffMs(attempts), signal);
      if (!signal.aborted) await options.afterBackoff?.();
    } finally {
      if (stopOnAbort) signal.removeEventListener("abort", stopOnAbort);
    }
  }
}
