import { DeliverPolicy } from "@nats-io/jetstream";
import type { EventStore } from "../event-store.js";
import { PULL_EXPIRES_MS, isStreamNotFound } from "../nats.js";

/**
 * Live updates for the page, fed from the log: one ordered consumer per stream someone is watching
 * (started on the first watcher, stopped with the last), fanned out to every open page. What goes to the
 * browser is only where the log stands and what kind of event landed (stream sequence, type, app): each
 * screen then reads again through the verbs, so the read policy decides what the human sees, as always.
 */

export interface LiveEvent {
  app: string;
  seq: number;
  type: string;
}

type Listener = (event: LiveEvent) => void;

interface Feed {
  listeners: Set<Listener>;
  /** Resolves once nothing that lands from now on can be missed (the consumer exists, or the stream does not yet). */
  ready: Promise<void>;
  stop(): void;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });

export class LiveFeed {
  private readonly feeds = new Map<string, Feed>();

  constructor(
    private readonly store: EventStore,
    private readonly onError: (err: unknown, where: string) => void = () => undefined,
  ) {}

  /** Calls `listener` for each event that lands in the app's stream; resolves (to the unsubscribe) once watching. */
  async subscribe(app: string, listener: Listener): Promise<() => void> {
    let feed = this.feeds.get(app);
    if (!feed) {
      feed = this.start(app);
      this.feeds.set(app, feed);
    }
    feed.listeners.add(listener);
    const current = feed;
    await current.ready;
    return () => {
      current.listeners.delete(listener);
      if (current.listeners.size === 0 && this.feeds.get(app) === current) {
        this.feeds.delete(app);
        current.stop();
      }
    };
  }

  private start(app: string): Feed {
    const stream = this.store.names.appStream(app);
    const abort = new AbortController();
    const listeners = new Set<Listener>();
    let markReady!: () => void;
    const ready = new Promise<void>((resolve) => (markReady = resolve));
    let messages: { stop(): void } | undefined;
    // From now on, unless the stream does not exist yet: then it is read from its first event when it appears.
    let from: { deliver_policy: DeliverPolicy; opt_start_seq?: number } = { deliver_policy: DeliverPolicy.New };
    void (async () => {
      while (!abort.signal.aborted) {
        try {
          const consumer = await this.store.js.consumers.get(stream, from);
          const iterator = await consumer.consume({ max_messages: 256, expires: PULL_EXPIRES_MS });
          messages = iterator;
          if (abort.signal.aborted) iterator.stop();
          markReady();
          for await (const m of iterator) {
            from = { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: m.seq + 1 };
            const stored = await this.store.decodeStored(stream, m).catch(() => null);
            if (!stored) continue;
            for (const listener of listeners) listener({ app, seq: stored.seq, type: stored.event.type });
          }
        } catch (err) {
          if (isStreamNotFound(err)) {
            from = { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: 1 };
            markReady();
          } else if (!abort.signal.aborted) this.onError(err, `live updates of ${stream}`);
        }
        await sleep(1_000, abort.signal);
      }
    })();
    return {
      listeners,
      ready,
      stop: () => {
        abort.abort();
        messages?.stop();
      },
    };
  }

  close(): void {
    for (const feed of this.feeds.values()) feed.stop();
    this.feeds.clear();
  }
}
