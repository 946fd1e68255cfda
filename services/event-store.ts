import type { Msg, MsgHdrs, NatsConnection, Subscription } from "@nats-io/transport-node";
import { createInbox, headers, nanos } from "@nats-io/transport-node";
import {
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  PubHeaders,
  RetentionPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
  type JetStreamClient,
  type JetStreamManager,
  type PubAck,
  type StoredMsg,
  type StreamConfig,
} from "@nats-io/jetstream";
import { chained } from "../events/chain.js";
import { decodeEvent, decodeEventStructural, encodeEvent } from "../events/upcast.js";
import type { Naming } from "../events/subjects.js";
import type { LedgerEvent } from "../schemas/events.js";
import { MemledgerError, invalid, notFound, unavailable } from "../schemas/errors.js";
import { JetStreamCreateCodes, PULL_EXPIRES_MS, checkServer, createJetStreamResource, deliveryOf, versionAtLeast, type ServerFeatures } from "./nats.js";
import { Quarantines } from "./quarantine.js";

/** Events a log scan fetches at a time (readLog, scanLog). */
const LOG_SCAN_BATCH = 1000;

/** How long a replay from sequence 1 waits for the server's scan for quarantines (see replay). */
const FULL_SCAN_TIMEOUT_MS = 120_000;

/** A stored message before decoding: what `replayMessages` hands over. */
export interface StoredMessage {
  seq: number;
  subject: string;
  data: Uint8Array;
}

export interface StoredEvent {
  seq: number;
  subject: string;
  event: LedgerEvent;
}

export interface AppendResult {
  seq: number;
  /** True when JetStream recognised the event id inside its dedupe window: nothing new was stored. */
  duplicate: boolean;
  /** The event as stored: with its chain fields (prevHash, hash; events/chain.ts). */
  event: LedgerEvent;
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

/**
 * nats-server before 2.9.21 checks `Nats-Expected-Last-Subject-Sequence` (N > 0) on a replicated stream
 * only before it proposes the message, against what the leader has applied, and not again when the entry
 * is applied (nats-server #4320). Concurrent appends expecting the same sequence then all land: on 2.9.10
 * with R3, 4 to 12 of 12 concurrent writers "won" a round (test/faults/cluster.e2e.spec.ts). The
 * stream-wide `Nats-Expected-Last-Sequence` is checked when the entry is applied, so adding it restores
 * compare-and-set there (see StreamGuard). Expected sequence 0 was always checked on apply.
 */
export const SUBJECT_SEQUENCE_CHECKED_ON_APPLY = "2.9.21";

/**
 * The last sequence of one replicated stream as this process last saw the leader apply it (from acks and
 * stream info, never from an error's text: that may count entries still in flight). An append that
 * names it can only be applied when nothing landed on the stream after it, so the leader's check of the
 * subject's sequence, made against that very state, cannot be raced.
 */
interface StreamGuard {
  stream: string;
  last: number;
}

/**
 * The ledger's storage: append-only JetStream streams, one per app plus one for the org. Events are
 * never edited or deleted here (the streams deny both); the only writes are appends that name the
 * sequence they expect.
 */
export class EventStore {
  private readonly streams = new Map<string, Promise<string>>();
  private appendReplies: AppendReplies | undefined;
  /** Replicated streams on a server with nats-server #4320, by the subject's parent (`….memory`); null: not needed. */
  private readonly guards = new Map<string, Promise<StreamGuard | null>>();
  private readonly guardsByStream = new Map<string, StreamGuard>();
  /** Sequences an operator set aside (services/quarantine.ts): every read below skips them. */
  readonly quarantines: Quarantines;

  private constructor(
    readonly nc: NatsConnection,
    readonly js: JetStreamClient,
    readonly jsm: JetStreamManager,
    readonly names: Naming,
    readonly features: ServerFeatures,
    private readonly options: Required<EventStoreOptions>,
  ) {
    this.quarantines = new Quarantines(jsm, names);
  }

  /**
   * A stored message as an event, or null when an operator quarantined its sequence (it is skipped).
   * Anything else that does not decode throws, as before: a reader stops on it, loudly.
   */
  async decodeStored(stream: string, msg: { seq: number; subject: string; data: Uint8Array }, decode: (data: Uint8Array) => LedgerEvent = decodeEvent): Promise<StoredEvent | null> {
    if (this.quarantines.known(stream, msg.seq)) return null;
    try {
      return { seq: msg.seq, subject: msg.subject, event: decode(msg.data) };
    } catch (err) {
      const quarantined = await this.quarantines.at(stream, msg.seq).catch(() => null);
      if (quarantined) return null;
      throw err;
    }
  }

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
      await createJetStreamResource(`the stream ${name}`, () => this.jsm.streams.add(this.streamConfig(name, subjects)));
    } catch (err) {
      // Another process created it first, perhaps with other replicas or limits: keep theirs if it
      // captures our subjects, since editing a live ledger's config is an operator's decision.
      if (!(err instanceof JetStreamApiError && err.code === JetStreamCreateCodes.StreamNameInUse)) throw asUnavailable(err);
      const info = await this.jsm.streams.info(name);
      const missing = subjects.filter((s) => !info.config.subjects?.includes(s));
      if (missing.length > 0) throw unavailable(`stream ${name} exists but does not capture ${missing.join(", ")}`);
    }
    return name;
  }

  /**
   * Appends one event if, and only if, the last event on its subject is still `expectedLastSubjectSeq`
   * (0: the subject is empty). The event id is the message id, so a retried append is recognised.
   *
   * This is what `js.publish(subject, data, { msgID, expect: { lastSubjectSequence } })` sends and how
   * it reads the ack, with the same errors, but over one long-lived reply subscription: js.publish's
   * request machinery (a timer, a request object and a stack-capturing Error per call) cost the command
   * service about 14 µs of its ~75 µs per command.
   */
  async append(subject: string, unchained: LedgerEvent, expectedLastSubjectSeq: number, prevHash?: string | null): Promise<AppendResult> {
    // Linked to the event it follows on its subject: the caller knows its hash when it loaded the
    // aggregate (the command handler does); otherwise it is read at the expected sequence.
    const event = chained(unchained, prevHash !== undefined ? prevHash : await this.hashAt(subject, expectedLastSubjectSeq));
    const guard = expectedLastSubjectSeq > 0 ? await this.guardFor(subject) : null;
    if (!guard) return this.appendOnce(subject, event, expectedLastSubjectSeq, null);
    for (let attempt = 1; ; attempt++) {
      try {
        const result = await this.appendOnce(subject, event, expectedLastSubjectSeq, guard.last);
        guard.last = Math.max(guard.last, result.seq);
        return result;
      } catch (err) {
        if (!(err instanceof WrongLastSequenceError)) throw err;
        // 10071 for the subject (a real conflict: the caller reloads) or only for the stream (something
        // landed elsewhere in it): tell them apart by the subject's own last sequence.
        if ((await this.lastSeqOf(guard.stream, subject)) !== expectedLastSubjectSeq) throw err;
        if (attempt >= GUARDED_APPEND_ATTEMPTS) {
          throw unavailable(`stream ${guard.stream} kept moving: gave up appending to ${subject} after ${attempt} attempts`);
        }
        // What the leader has applied now (assigned, not maxed: a stream deleted and made again starts over).
        guard.last = await this.lastSeq(guard.stream);
        if (attempt > 2) await sleep(Math.random() * Math.min(20, attempt));
      }
    }
  }

  /** The chain hash of the event at `seq` on `subject` (null: none there, or it predates chains). */
  private async hashAt(subject: string, seq: number): Promise<string | null> {
    if (seq === 0) return null;
    const stream = this.names.streamOfSubject(subject);
    if (!stream) throw invalid(`${subject} is not an event subject of prefix ${this.names.prefix}`);
    const stored = await this.eventAt(stream, seq);
    return stored?.subject === subject ? (stored.event.hash ?? null) : null;
  }

  /**
   * Whether appends to this subject's stream need the stream-wide expectation: only on a server with
   * nats-server #4320, in a cluster, for a stream with more than one replica. Looked up once per parent
   * subject (every aggregate of one kind in one app lives in one stream).
   */
  private guardFor(subject: string): Promise<StreamGuard | null> {
    if (versionAtLeast(this.features.version, SUBJECT_SEQUENCE_CHECKED_ON_APPLY) || !this.nc.info?.cluster) return Promise.resolve(null);
    const parent = subject.slice(0, subject.lastIndexOf("."));
    let pending = this.guards.get(parent);
    if (!pending) {
      pending = (async () => {
        try {
          const stream = await this.jsm.streams.find(subject);
          const info = await this.jsm.streams.info(stream);
          if ((info.config.num_replicas ?? 1) <= 1) return null;
          let guard = this.guardsByStream.get(stream);
          if (!guard) this.guardsByStream.set(stream, (guard = { stream, last: info.state.last_seq }));
          return guard;
        } catch (err) {
          throw asUnavailable(err);
        }
      })();
      this.guards.set(parent, pending);
      pending.catch(() => this.guards.delete(parent));
    }
    return pending;
  }

  private async appendOnce(subject: string, event: LedgerEvent, expectedLastSubjectSeq: number, expectedLastSeq: number | null): Promise<AppendResult> {
    let reply: Msg;
    try {
      const hdrs = headers();
      hdrs.set(PubHeaders.MsgIdHdr, event.id);
      hdrs.set(PubHeaders.ExpectedLastSubjectSequenceHdr, `${expectedLastSubjectSeq}`);
      if (expectedLastSeq !== null) hdrs.set(PubHeaders.ExpectedLastSeqHdr, `${expectedLastSeq}`);
      if (!this.appendReplies || this.appendReplies.closed) this.appendReplies = new AppendReplies(this.nc, APPEND_TIMEOUT_MS);
      reply = await this.appendReplies.request(subject, encodeEvent(event), hdrs);
    } catch (err) {
      throw asUnavailable(err);
    }
    if (reply.data.length === 0 && reply.headers?.code === 503) {
      throw unavailable("JetStream request failed: jetstream is not enabled");
    }
    let ack: PubAck & { error?: { code: number; err_code: number; description: string } };
    try {
      ack = JSON.parse(reply.string());
    } catch (err) {
      throw asUnavailable(err);
    }
    if (ack.error) {
      if (ack.error.err_code === JetStreamApiCodes.StreamWrongLastSequence) throw new WrongLastSequenceError(subject, expectedLastSubjectSeq);
      if (ack.error.err_code === JetStreamApiCodes.JetStreamNotEnabledForAccount) {
        throw unavailable(`JetStream request failed: ${ack.error.description}`);
      }
      throw asUnavailable(new JetStreamApiError(ack.error));
    }
    if (ack.stream === "") throw unavailable("JetStream request failed: invalid ack response");
    return { seq: ack.seq, duplicate: ack.duplicate ?? false, event };
  }

  /**
   * The events of one subject after `afterSeq`, oldest first. A memory has tens of events, so walking
   * them with direct gets (next_by_subj) is cheaper than creating a consumer for each load.
   */
  async *readSubject(stream: string, subject: string, afterSeq = 0, onQuarantined?: (seq: number) => void): AsyncGenerator<StoredEvent> {
    let seq = afterSeq + 1;
    for (;;) {
      let msg: StoredMsg | null;
      try {
        msg = await this.jsm.direct.getMessage(stream, { seq, next_by_subj: subject });
      } catch (err) {
        throw asUnavailable(err);
      }
      if (!msg) return;
      const stored = await this.decodeStored(stream, msg);
      // A quarantined message is skipped, but it is still the subject's last sequence so far: a writer
      // that appends with an expected sequence must expect it (onQuarantined tells it).
      if (stored) yield stored;
      else onQuarantined?.(msg.seq);
      seq = msg.seq + 1;
    }
  }

  async eventAt(stream: string, seq: number): Promise<StoredEvent | null> {
    try {
      const msg = await this.jsm.direct.getMessage(stream, { seq });
      return msg ? await this.decodeStored(stream, msg) : null;
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
    const out: StoredEvent[] = [];
    if (options.limit <= 0) return out;
    await this.scanLog(stream, { ...options, batchSize: Math.min(options.limit, LOG_SCAN_BATCH) }, (batch) => {
      for (const stored of batch) {
        out.push(stored);
        if (out.length >= options.limit) return false;
      }
      return true;
    });
    return out;
  }

  /**
   * Hands the events from `sinceSeq` on (inclusive; optionally only one subject filter's) to `onBatch`,
   * oldest first, in batches of at most `batchSize`, until it returns false or the stream's end as the
   * scan started is reached. One consumer for the whole scan: a reader that stops early (a reply that is
   * full) reads at most one batch more than it used, and a long one does not pay a consumer's creation,
   * info and deletion per batch (at 1000 events a batch, that was most of a `log` page's time).
   *
   * Decoded structurally, as replays are (decodeEventStructural: every event was fully checked when it
   * was appended); quarantined sequences are skipped, anything else that does not decode throws.
   */
  async scanLog(
    stream: string,
    options: { filterSubject?: string; sinceSeq?: number; batchSize?: number },
    onBatch: (events: StoredEvent[]) => boolean | Promise<boolean>,
  ): Promise<void> {
    const last = await this.lastSeq(stream);
    const start = Math.max(1, options.sinceSeq ?? 1);
    if (last < start) return;
    const batchSize = Math.max(1, options.batchSize ?? LOG_SCAN_BATCH);
    const consumer = await this.js.consumers.get(stream, {
      // A single string: 2.9 servers accept one filter subject, not a list.
      filter_subjects: options.filterSubject,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: start,
    });
    try {
      for (;;) {
        const fetched = await consumer.fetch({ max_messages: batchSize, expires: 1000 });
        const batch: StoredEvent[] = [];
        let got = 0;
        let end = false;
        for await (const m of fetched) {
          got++;
          const stored = await this.decodeStored(stream, m, decodeEventStructural);
          if (stored) batch.push(stored);
          // pending: what the consumer has beyond this message right now; past `last`: written after the scan began.
          if (m.info.pending === 0 || m.seq >= last) {
            end = true;
            break;
          }
        }
        if (batch.length > 0 && !(await onBatch(batch))) return;
        if (end || got === 0) return;
        const info = await consumer.info(true);
        if (info.num_pending === 0) return;
      }
    } finally {
      await consumer.delete().catch(() => undefined);
    }
  }

  /**
   * Reads the stream from `fromSeq` until it has caught up (nothing pending at the moment of the last
   * delivery), handing events over in batches. An ordered consumer: the fastest way to read a stream.
   *
   * Events are checked for structure (decodeEventStructural: types and presence of every field, the
   * refinements were checked when they were appended); `verify` runs the full schema check on each.
   */
  async replay(
    stream: string,
    options: { fromSeq?: number; batchSize?: number; verify?: boolean },
    onBatch: (events: StoredEvent[]) => Promise<void> | void,
  ): Promise<number> {
    return this.replayMessages(stream, options, async (messages) => {
      const events = await this.decodeMessages(stream, messages, options);
      if (events.length > 0) await onBatch(events);
    });
  }

  /**
   * Decodes stored messages as `replay` does: structurally (or fully with `verify`), a message that
   * fails to decode skipped if it was quarantined meanwhile, else its error thrown.
   */
  async decodeMessages(
    stream: string,
    messages: readonly StoredMessage[],
    options: { verify?: boolean } = {},
  ): Promise<StoredEvent[]> {
    const decode = options.verify ? decodeEvent : decodeEventStructural;
    const events: StoredEvent[] = [];
    for (const m of messages) {
      let stored: StoredEvent | null;
      try {
        stored = { seq: m.seq, subject: m.subject, event: decode(m.data) };
      } catch {
        // Quarantined meanwhile (skip), or not: decodeStored throws the decoder's error again.
        stored = await this.decodeStored(stream, m, decode);
      }
      if (stored) events.push(stored);
    }
    return events;
  }

  /**
   * `replay` without decoding: the stored messages as they are (sequence, subject, bytes), quarantined
   * sequences left out, in batches of at most `batchSize`, until caught up. Returns the last sequence
   * read. For readers that decode elsewhere (a rebuild hands the bytes to worker threads).
   */
  async replayMessages(
    stream: string,
    options: { fromSeq?: number; batchSize?: number },
    onBatch: (messages: StoredMessage[]) => Promise<void> | void,
  ): Promise<number> {
    const fromSeq = Math.max(1, options.fromSeq ?? 1);
    const batchSize = options.batchSize ?? 2000;
    if ((await this.lastSeq(stream)) < fromSeq) return fromSeq - 1;
    // Quarantined sequences are skipped whatever they hold: the structural decode may accept what the
    // strict one refused, and a rebuild must fold exactly what the live runners folded. They are looked
    // up while the consumer is created and its first messages arrive, and awaited before the first one
    // is handed over.
    // A full replay's lookup gets its own patience: it once was a server-side scan of the whole stream
    // (seconds at 1M events on a loaded machine, past the 5 s request timeout: a 1M-event rebuild failed
    // on it twice), and a listing of a stream with many subjects is still the longest request a replay makes.
    const lookup = (async () => {
      const quarantines = fromSeq <= 1 ? new Quarantines(await jetstreamManager(this.nc, { timeout: FULL_SCAN_TIMEOUT_MS }), this.names) : this.quarantines;
      return quarantines.since(stream, fromSeq);
    })().catch((err: unknown) => {
      throw asUnavailable(err);
    });
    // Observed below; a consumer that fails to start must not leave it unhandled meanwhile.
    lookup.catch(() => undefined);
    const consumer = await this.js.consumers.get(stream, {
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: fromSeq,
    });
    const messages = await consumer.consume({ max_messages: batchSize, expires: PULL_EXPIRES_MS });
    let quarantined: Map<number, unknown> | undefined;
    let buffer: StoredMessage[] = [];
    let lastSeq = fromSeq - 1;
    try {
      for await (const m of messages) {
        quarantined ??= await lookup;
        const { seq, pending } = deliveryOf(m);
        if (!quarantined.has(seq)) buffer.push({ seq, subject: m.subject, data: m.data });
        lastSeq = seq;
        // pending = what the stream holds beyond this message right now: zero means caught up.
        const caughtUp = pending === 0;
        if (buffer.length > 0 && (buffer.length >= batchSize || caughtUp)) {
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
      if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound)) throw err;
    });
  }
}

/** The JetStream client's default request timeout, which appends always used. */
const APPEND_TIMEOUT_MS = 5_000;

/** Rounds of a guarded append (StreamGuard) before it reports `unavailable`; each lost round lets another writer in. */
const GUARDED_APPEND_ATTEMPTS = 200;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface PendingReply {
  resolve(msg: Msg): void;
  reject(err: Error): void;
  deadline: number;
}

/**
 * Request/reply over one wildcard inbox subscription (`<inbox>.<n>`), with one timer sweeping for
 * timeouts instead of one timer per request. Created on the first append; gone with the connection.
 */
class AppendReplies {
  private readonly inbox: string;
  private readonly pending = new Map<string, PendingReply>();
  private readonly subscription: Subscription;
  private readonly sweeper: NodeJS.Timeout;
  private next = 0;
  /** Its subscription ended (the connection closed, or the server refused it): make a new one. */
  closed = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs: number,
  ) {
    this.inbox = createInbox((nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix);
    const prefixLength = this.inbox.length + 1;
    this.subscription = nc.subscribe(`${this.inbox}.*`, {
      callback: (err, msg) => {
        if (err) return this.failAll(err);
        const token = msg.subject.slice(prefixLength);
        const waiting = this.pending.get(token);
        if (!waiting) return; // it timed out already
        this.pending.delete(token);
        waiting.resolve(msg);
      },
    });
    this.sweeper = setInterval(() => this.sweep(), Math.max(50, Math.min(1_000, timeoutMs / 4)));
    this.sweeper.unref();
    void this.subscription.closed.then(
      () => this.failAll(unavailable("JetStream append failed: the connection closed before its ack")),
      (err: Error) => this.failAll(err),
    );
  }

  request(subject: string, data: Uint8Array, hdrs: MsgHdrs): Promise<Msg> {
    if (this.nc.isClosed()) throw unavailable("JetStream append failed: the connection is closed");
    if (this.nc.isDraining()) throw unavailable("JetStream append failed: the connection is draining");
    const token = (this.next++).toString(36);
    return new Promise<Msg>((resolve, reject) => {
      this.pending.set(token, { resolve, reject, deadline: Date.now() + this.timeoutMs });
      try {
        this.nc.publish(subject, data, { reply: `${this.inbox}.${token}`, headers: hdrs });
      } catch (err) {
        this.pending.delete(token);
        reject(err as Error);
      }
    });
  }

  private sweep(): void {
    const now = Date.now();
    for (const [token, waiting] of this.pending) {
      if (waiting.deadline > now) continue;
      this.pending.delete(token);
      waiting.reject(unavailable("JetStream append timed out: its ack never came (it may have landed; a retry with the same event id is safe)"));
    }
  }

  private failAll(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweeper);
    for (const waiting of this.pending.values()) waiting.reject(err);
    this.pending.clear();
    try {
      this.subscription.unsubscribe();
    } catch {
      // already gone with its connection
    }
  }
}

function asUnavailable(err: unknown): Error {
  if (err instanceof MemledgerError || err instanceof WrongLastSequenceError) return err;
  if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) {
    return notFound("no such app: its stream does not exist yet");
  }
  const message = err instanceof Error ? err.message : String(err);
  // The server answered with a refusal (its code says which), or the request never got an answer.
  return err instanceof JetStreamApiError
    ? unavailable(`JetStream refused the request: ${message}`, { jsCode: err.code }, err)
    : unavailable(`JetStream request failed: ${message}`, undefined, err);
}
