import type { NatsConnection } from "@nats-io/transport-node";
import { nanos } from "@nats-io/transport-node";
import {
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
  type JetStreamClient,
  type JetStreamManager,
  type StoredMsg,
  type StreamConfig,
} from "@nats-io/jetstream";
import { decodeEvent, encodeEvent } from "../events/upcast.js";
import type { Naming } from "../events/subjects.js";
import type { LedgerEvent } from "../schemas/events.js";
import { MemledgerError, notFound, unavailable } from "../schemas/errors.js";
import { checkServer, type ServerFeatures } from "./nats.js";

/** JetStream API error codes memledger reacts to (see NOTES.md). */
export const JS_ERR = {
  wrongLastSequence: 10071,
  streamNameInUse: 10058,
  streamNotFound: 10059,
} as const;

export interface StoredEvent {
  seq: number;
  subject: string;
  event: LedgerEvent;
}

export interface AppendResult {
  seq: number;
  /** True when JetStream recognised the event id inside its dedupe window: nothing new was stored. */
  duplicate: boolean;
}

/** The subject moved past the sequence the writer read. */
export class WrongLastSequenceError extends Error {
  override readonly name = "WrongLastSequenceError";
  constructor(readonly subject: string, readonly expected: number) {
    super(`wrong last sequence on ${subject}: expected ${expected}`);
  }
}

export interface EventStoreOptions {
  /** 1 on a single server; 3 in a cluster, so that an acknowledged event survives a node loss. */
  replicas?: number;
  /** JetStream's dedupe window for Nats-Msg-Id; retries inside it are free, beyond it state answers. */
  duplicateWindowMs?: number;
}

const RETRYABLE = (err: unknown) =>
  err instanceof Error && /timeout|TIMEOUT|no responders|disconnect|closed/i.test(err.message);

/**
 * The ledger's storage: append-only JetStream streams, one per app plus one for the org. Events are
 * never edited or deleted here (the streams deny both); the only writes are appends that name the
 * sequence they expect.
 */
export class EventStore {
  private readonly streams = new Map<string, Promise<string>>();

  private constructor(
    readonly nc: NatsConnection,
    readonly js: JetStreamClient,
    readonly jsm: JetStreamManager,
    readonly names: Naming,
    readonly features: ServerFeatures,
    private readonly options: Required<EventStoreOptions>,
  ) {}

  static async open(nc: NatsConnection, names: Naming, options: EventStoreOptions = {}): Promise<EventStore> {
    const features = checkServer(nc);
    let jsm: JetStreamManager;
    try {
      jsm = await jetstreamManager(nc);
    } catch (err) {
      throw unavailable(`JetStream is not available: ${(err as Error).message}`);
    }
    return new EventStore(nc, jetstream(nc), jsm, names, features, {
      replicas: options.replicas ?? 1,
      duplicateWindowMs: options.duplicateWindowMs ?? 120_000,
    });
  }

  streamConfig(name: string, subjects: string[]): Partial<StreamConfig> & { name: string } {
    return {
      name,
      subjects,
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
      max_age: 0,
      max_msgs: -1,
      max_bytes: -1,
      max_msgs_per_subject: -1,
      num_replicas: this.options.replicas,
      duplicate_window: nanos(this.options.duplicateWindowMs),
      deny_delete: true,
      deny_purge: true,
      allow_direct: true,
    };
  }

  /** Creates the app's stream once (idempotent across processes); returns its name. */
  ensureAppStream(app: string): Promise<string> {
    return this.ensureStream(this.names.appStream(app), [this.names.appEvents(app)]);
  }

  ensureOrgStream(): Promise<string> {
    return this.ensureStream(this.names.orgStream(), [this.names.orgEvents()]);
  }

  private ensureStream(name: string, subjects: string[]): Promise<string> {
    let pending = this.streams.get(name);
    if (!pending) {
      pending = this.createStream(name, subjects);
      this.streams.set(name, pending);
      pending.catch(() => this.streams.delete(name));
    }
    return pending;
  }

  private async createStream(name: string, subjects: string[]): Promise<string> {
    try {
      await this.jsm.streams.add(this.streamConfig(name, subjects));
    } catch (err) {
      // Another process created it first, perhaps with other replicas or limits: keep theirs if it
      // captures our subjects, since editing a live ledger's config is an operator's decision.
      if (!(err instanceof JetStreamApiError && err.code === JS_ERR.streamNameInUse)) throw asUnavailable(err);
      const info = await this.jsm.streams.info(name);
      const missing = subjects.filter((s) => !info.config.subjects?.includes(s));
      if (missing.length > 0) throw unavailable(`stream ${name} exists but does not capture ${missing.join(", ")}`);
    }
    return name;
  }

  /**
   * Appends one event if, and only if, the last event on its subject is still `expectedLastSubjectSeq`
   * (0: the subject is empty). The event id is the message id, so a retried append is recognised.
   */
  async append(subject: string, event: LedgerEvent, expectedLastSubjectSeq: number): Promise<AppendResult> {
    try {
      const ack = await this.js.publish(subject, encodeEvent(event), {
        msgID: event.id,
        expect: { lastSubjectSequence: expectedLastSubjectSeq },
      });
      return { seq: ack.seq, duplicate: ack.duplicate };
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === JS_ERR.wrongLastSequence) {
        throw new WrongLastSequenceError(subject, expectedLastSubjectSeq);
      }
      throw asUnavailable(err);
    }
  }

  /**
   * The events of one subject after `afterSeq`, oldest first. A memory has tens of events, so walking
   * them with direct gets (next_by_subj) is cheaper than creating a consumer for each load.
   */
  async *readSubject(stream: string, subject: string, afterSeq = 0): AsyncGenerator<StoredEvent> {
    let seq = afterSeq + 1;
    for (;;) {
      let msg: StoredMsg | null;
      try {
        msg = await this.jsm.direct.getMessage(stream, { seq, next_by_subj: subject });
      } catch (err) {
        throw asUnavailable(err);
      }
      if (!msg) return;
      yield { seq: msg.seq, subject: msg.subject, event: decodeEvent(msg.data) };
      seq = msg.seq + 1;
    }
  }

  async eventAt(stream: string, seq: number): Promise<StoredEvent | null> {
    try {
      const msg = await this.jsm.direct.getMessage(stream, { seq });
      return msg ? { seq: msg.seq, subject: msg.subject, event: decodeEvent(msg.data) } : null;
    } catch (err) {
      throw asUnavailable(err);
    }
  }

  /** The sequence of the last event on a subject, 0 if it has none. */
  async lastSeqOf(stream: string, subject: string): Promise<number> {
    try {
      const msg = await this.jsm.direct.getMessage(stream, { last_by_subj: subject });
      return msg?.seq ?? 0;
    } catch (err) {
      throw asUnavailable(err);
    }
  }

  async lastSeq(stream: string): Promise<number> {
    try {
      const info = await this.jsm.streams.info(stream);
      return info.state.last_seq;
    } catch (err) {
      throw asUnavailable(err);
    }
  }

  /** Up to `limit` events from `sinceSeq` on (inclusive), optionally only those on one subject filter. */
  async readLog(
    stream: string,
    options: { filterSubject?: string; sinceSeq?: number; limit: number },
  ): Promise<StoredEvent[]> {
    const last = await this.lastSeq(stream);
    const start = Math.max(1, options.sinceSeq ?? 1);
    if (last < start) return [];
    const consumer = await this.js.consumers.get(stream, {
      // A single string: 2.9 servers accept one filter subject, not a list.
      filter_subjects: options.filterSubject,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: start,
    });
    const out: StoredEvent[] = [];
    try {
      for (;;) {
        const batch = await consumer.fetch({ max_messages: Math.min(options.limit - out.length, 1000), expires: 1000 });
        let got = 0;
        for await (const m of batch) {
          got++;
          out.push({ seq: m.seq, subject: m.subject, event: decodeEvent(m.data) });
          if (out.length >= options.limit || m.info.pending === 0) break;
        }
        if (out.length >= options.limit || got === 0 || (out.at(-1)?.seq ?? 0) >= last) break;
        const info = await consumer.info(true);
        if (info.num_pending === 0) break;
      }
    } finally {
      await consumer.delete().catch(() => undefined);
    }
    return out;
  }

  /**
   * Reads the stream from `fromSeq` until it has caught up (nothing pending at the moment of the last
   * delivery), handing events over in batches. An ordered consumer: the fastest way to read a stream.
   */
  async replay(
    stream: string,
    options: { fromSeq?: number; batchSize?: number },
    onBatch: (events: StoredEvent[]) => Promise<void> | void,
  ): Promise<number> {
    const fromSeq = Math.max(1, options.fromSeq ?? 1);
    const batchSize = options.batchSize ?? 2000;
    if ((await this.lastSeq(stream)) < fromSeq) return fromSeq - 1;
    const consumer = await this.js.consumers.get(stream, {
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: fromSeq,
    });
    const messages = await consumer.consume({ max_messages: batchSize });
    let buffer: StoredEvent[] = [];
    let lastSeq = fromSeq - 1;
    try {
      for await (const m of messages) {
        buffer.push({ seq: m.seq, subject: m.subject, event: decodeEvent(m.data) });
        lastSeq = m.seq;
        // pending = what the stream holds beyond this message right now: zero means caught up.
        const caughtUp = m.info.pending === 0;
        if (buffer.length >= batchSize || caughtUp) {
          const batch = buffer;
          buffer = [];
          await onBatch(batch);
        }
        if (caughtUp) break;
      }
    } finally {
      messages.stop();
    }
    return lastSeq;
  }

  async deleteStream(name: string): Promise<void> {
    this.streams.delete(name);
    await this.jsm.streams.delete(name).catch((err) => {
      if (!(err instanceof JetStreamApiError && err.code === JS_ERR.streamNotFound)) throw err;
    });
  }
}

function asUnavailable(err: unknown): Error {
  if (err instanceof MemledgerError || err instanceof WrongLastSequenceError) return err;
  if (err instanceof JetStreamApiError && err.code === JS_ERR.streamNotFound) {
    return notFound("no such app: its stream does not exist yet");
  }
  const message = err instanceof Error ? err.message : String(err);
  return RETRYABLE(err) || !(err instanceof JetStreamApiError)
    ? unavailable(`JetStream request failed: ${message}`)
    : unavailable(`JetStream refused the request: ${message}`, { jsCode: err.code });
}
