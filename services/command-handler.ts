import { createHash, randomFillSync } from "node:crypto";
import { LRUCache } from "lru-cache";
import { v5 as uuidv5, v7 as uuidv7 } from "uuid";
import type { Decider } from "../commands/decider.js";
import { CURRENT_SCHEMA_VERSION, LedgerEvent, type DomainEventOf } from "../schemas/events.js";
import { ConflictReason, MemledgerError, conflict, internal, invalid, unavailable } from "../schemas/errors.js";
import type { Actor, GitContext } from "../schemas/primitives.js";
import { WrongLastSequenceError, type EventStore } from "./event-store.js";
import { canonicalJson } from "../events/chain.js";

/** Who sends a command and in which context; the envelope of the resulting event is built from it. */
export interface CommandContext {
  app: string;
  actor: Actor;
  expectedSeq?: number | undefined;
  key?: string | undefined;
  sessionId?: string | undefined;
  transcriptRef?: string | undefined;
  git?: GitContext | undefined;
  causationId?: string | undefined;
  correlationId?: string | undefined;
}

export interface Loaded<S> {
  state: S;
  /** Stream sequence of the aggregate's last event; 0 when it has none. */
  seq: number;
  /** Where each of the aggregate's events landed, so a replayed command can name its original sequence. */
  seqOf: ReadonlyMap<string, number>;
  /** The chain hash of the aggregate's last event (events/chain.ts): the next event links to it. */
  lastHash: string | null;
}

export interface Executed<S> {
  aggregateId: string;
  event: LedgerEvent;
  seq: number;
  state: S;
  /** The command had been applied before (a retry): nothing new was appended. */
  replayed: boolean;
}

/**
 * Where an event goes when it is not the app's own aggregate subject: the org stream, a promotion's
 * decision subject. The event's `app` is still the context's.
 */
export interface CommandTarget {
  stream: string;
  subject: string;
}

/** When a lost append race is decided again on the reloaded state (emmett's retry policy, as data). */
export interface RetryOptions {
  maxAttempts?: number;
  /**
   * Whether this lost race (a wrong last sequence: another writer moved the aggregate) is reloaded and
   * decided again; default yes. No: the error reaches the caller, who may decide differently (the curator
   * re-runs its policy against the moved org).
   */
  shouldRetry?: (err: WrongLastSequenceError) => boolean;
}

export interface ExecuteOptions<S> {
  isNew?: boolean;
  /**
   * Authorisation against the state the command is decided on (services/auth/guard.ts): run on every
   * attempt, right before decide, so a command racing the aggregate's creation (or any change) is
   * judged on what it finally acts on, never on an earlier read. Throws to refuse.
   */
  authorize?: (state: S) => void;
  /** Default: the app stream and the aggregate's subject in it. */
  target?: CommandTarget;
  /** A fixed event id (derived by the caller, e.g. from a promotion id): a retry finds it applied. */
  eventId?: string;
  retry?: RetryOptions;
}

const retriesLostRace = (): boolean => true;

export interface CommandHandlerOptions {
  now?: () => Date;
  /** Aggregates whose state is kept between commands; a stale one costs a reload, never a lost update. */
  cacheSize?: number;
  /** Rounds of reload-and-retry when other writers keep moving the aggregate. */
  maxAttempts?: number;
}

// Namespace for deterministic ids derived from idempotency keys (a fixed, random UUID).
const KEY_NAMESPACE = "5b0c3f1e-8a47-4e43-9d7e-2f1a6c9b7d10";

/** The aggregate id a keyed creation gets: the same key from the same actor always names the same aggregate. */
export const idForKey = (ctx: Pick<CommandContext, "app" | "actor">, aggregate: string, key: string): string =>
  uuidv5(`${ctx.app}\u0000${aggregate}\u0000${ctx.actor.kind}:${ctx.actor.id}\u0000${key}`, KEY_NAMESPACE);

// uuid's v7 asks WebCrypto for 16 fresh bytes per id, which cost more than the rest of the id: draw them
// from a pool refilled 4 KiB at a time instead, and keep v7's monotonic per-millisecond counter here
// (the same algorithm as uuid's own state, which it skips once random bytes are passed in).
const RANDOM_POOL = new Uint8Array(4096);
let poolOffset = RANDOM_POOL.length;
const v7State = { msecs: -Infinity, seq: 0 };

/** A UUIDv7, as uuid's `v7()` makes it, with the random bytes from a pool. */
export function fastUuidv7(): string {
  if (poolOffset + 16 > RANDOM_POOL.length) {
    randomFillSync(RANDOM_POOL);
    poolOffset = 0;
  }
  const random = RANDOM_POOL.subarray(poolOffset, (poolOffset += 16));
  const now = Date.now();
  if (now > v7State.msecs) {
    v7State.seq = ((random[6]! & 0x7f) << 24) | (random[7]! << 16) | (random[8]! << 8) | random[9]!;
    v7State.msecs = now;
  } else {
    v7State.seq = (v7State.seq + 1) | 0;
    if (v7State.seq === 0) v7State.msecs++;
  }
  return uuidv7({ random, msecs: v7State.msecs, seq: v7State.seq });
}

/**
 * A keyed command's event id names the command type too: reusing a key for another verb on the same
 * memory (propose with K, later approve with K) is a different command, not a replay of the first.
 */
const eventIdFor = (ctx: CommandContext, aggregate: string, aggregateId: string, commandType: string): string =>
  ctx.key === undefined
    ? fastUuidv7()
    : uuidv5(
        `${ctx.app}\u0000${aggregate}:${aggregateId}\u0000${commandType}\u0000${ctx.actor.kind}:${ctx.actor.id}\u0000${ctx.key}`,
        KEY_NAMESPACE,
      );

export const newAggregateId = (): string => fastUuidv7();

/**
 * What a keyed command asked for, as a hash stored in its event (`commandHash`), so a later command with
 * the same key is recognised as a retry only if it asks for the same thing. `now` is left out: it is when
 * the service decided (claims' leases), not part of the request, and differs on every retry.
 */
export function commandHashOf(command: unknown): string {
  const { now: _now, ...asked } = command as Record<string, unknown>;
  return createHash("sha256").update(canonicalJson(asked)).digest("base64url");
}

/**
 * Runs a command against one aggregate with optimistic concurrency:
 * load (from cache, catching up from the cached sequence), decide, append expecting the sequence the
 * state was built from. Losing the race means another writer got there first: reload and decide again,
 * unless the sender pinned `expectedSeq`, in which case the sender must reread (conflict).
 *
 * Idempotency: a keyed command gets a deterministic event id. Inside JetStream's dedupe window the
 * retry is a duplicate publish; beyond it, the aggregate's state remembers every event id it applied.
 */
export class CommandHandler {
  private readonly cache: LRUCache<string, Loaded<unknown>>;
  private readonly now: () => Date;
  private readonly maxAttempts: number;

  constructor(readonly store: EventStore, options: CommandHandlerOptions = {}) {
    this.cache = new LRUCache({ max: options.cacheSize ?? 10_000 });
    this.now = options.now ?? (() => new Date());
    this.maxAttempts = options.maxAttempts ?? 100;
  }

  subjectOf(app: string, aggregate: string, id: string): string {
    return this.store.names.aggregate(app, aggregate as "memory" | "session", id);
  }

  /** Current state of one aggregate, caught up with the log (read-your-writes). */
  async load<C, E extends LedgerEvent, S>(decider: Decider<C, E, S>, app: string, id: string): Promise<Loaded<S>> {
    const stream = this.store.names.appStream(app);
    return this.catchUp(decider, stream, this.subjectOf(app, decider.aggregate, id), this.cached<S>(app, decider, id));
  }

  private cached<S>(app: string, decider: { aggregate: string }, id: string): Loaded<S> | undefined {
    return this.cache.get(this.subjectOf(app, decider.aggregate, id)) as Loaded<S> | undefined;
  }

  private async catchUp<C, E extends LedgerEvent, S>(
    decider: Decider<C, E, S>,
    stream: string,
    subject: string,
    from: Loaded<S> | undefined,
  ): Promise<Loaded<S>> {
    let state = from?.state ?? decider.initialState();
    let seq = from?.seq ?? 0;
    const seqOf = new Map(from?.seqOf);
    let lastHash = from?.lastHash ?? null;
    // A quarantined message on the subject (services/quarantine.ts) is not folded, but the next append
    // must expect the subject's real last sequence, so it counts for `seq`.
    for await (const stored of this.store.readSubject(stream, subject, seq, (skipped) => (seq = Math.max(seq, skipped)))) {
      state = decider.evolve(state, stored.event as E);
      seq = stored.seq;
      seqOf.set(stored.event.id, stored.seq);
      lastHash = stored.event.hash ?? null;
    }
    const loaded = { state, seq, seqOf, lastHash };
    this.cache.set(subject, loaded);
    return loaded;
  }

  async execute<C, E extends LedgerEvent, S>(
    decider: Decider<C, E, S>,
    aggregateId: string,
    command: C,
    ctx: CommandContext,
    options: ExecuteOptions<S> = {},
  ): Promise<Executed<S>> {
    const stream = options.target?.stream ?? (await this.store.ensureAppStream(ctx.app));
    const subject = options.target?.subject ?? this.subjectOf(ctx.app, decider.aggregate, aggregateId);
    const eventId = options.eventId ?? eventIdFor(ctx, decider.aggregate, aggregateId, (command as { type?: string }).type ?? "");
    const maxAttempts = options.retry?.maxAttempts ?? this.maxAttempts;
    const shouldRetry = options.retry?.shouldRetry ?? retriesLostRace;
    const commandHash = ctx.key === undefined ? undefined : commandHashOf(command);

    // What the cache holds may be stale (another instance wrote since); an id the caller says is new
    // (freshly generated, or derived from a key) most likely has no history, so skip the read: if it has
    // one, the append's expected sequence 0 fails and the loop reloads.
    let loaded = this.cache.get(subject) as Loaded<S> | undefined;
    if (!loaded && options.isNew) loaded = { state: decider.initialState(), seq: 0, seqOf: new Map(), lastHash: null };
    /** Whether `loaded` was read from the log during this command (not cached, not assumed). */
    let fresh = false;
    if (!loaded) {
      loaded = await this.catchUp(decider, stream, subject, undefined);
      fresh = true;
    }

    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      // Before the replay check too: a retry is answered only to an actor still allowed on this state.
      // A stale cache cannot let a command through: its append expects the cached sequence, fails, and
      // the next attempt authorises again on the reloaded state.
      options.authorize?.(loaded.state);
      const prior = decider.outcomeOf(loaded.state, eventId);
      if (prior) {
        const seq = loaded.seqOf.get(eventId) ?? loaded.seq;
        const event = await this.eventAt(stream, seq, eventId);
        // The same key for a different request is a mistake to report, not a retry to answer with the
        // first request's result. Events written before hashes were stored have none: a replay.
        if (commandHash !== undefined && event.commandHash !== undefined && event.commandHash !== commandHash) {
          throw conflict(
            `idempotency key '${ctx.key}' was already used for a different ${event.type} request on ${decider.aggregate} ${aggregateId} (sequence ${seq}): use a new key for a new request`,
            { reason: ConflictReason.key_reused, key: ctx.key, eventId, seq },
          );
        }
        return { aggregateId, event, seq, state: loaded.state, replayed: true };
      }

      if (ctx.expectedSeq !== undefined && ctx.expectedSeq !== loaded.seq) {
        // The cache may be what is stale, not the sender: judge only against the log itself.
        if (!fresh) {
          loaded = await this.catchUp(decider, stream, subject, loaded);
          fresh = true;
          continue;
        }
        throw conflict(`${decider.aggregate} ${aggregateId} is at sequence ${loaded.seq}, not ${ctx.expectedSeq}`, {
          currentSeq: loaded.seq,
          expectedSeq: ctx.expectedSeq,
        });
      }

      let decided: DomainEventOf<E>;
      try {
        decided = decider.decide(command, loaded.state);
      } catch (err) {
        // A refusal ("no pending version", "held by x") decided against cached state may be the cache's
        // fault: another instance moved the aggregate. Refuse only what the log itself refuses.
        if (!fresh && err instanceof MemledgerError) {
          loaded = await this.catchUp(decider, stream, subject, loaded);
          fresh = true;
          continue;
        }
        throw err;
      }
      const event = this.envelope(decider, aggregateId, eventId, command, loaded.state, decided, ctx, commandHash);
      try {
        const ack = await this.store.append(subject, event, loaded.seq, loaded.lastHash);
        if (ack.duplicate) {
          // Our own earlier attempt landed (a retry inside the dedupe window): answer from the log.
          loaded = await this.catchUp(decider, stream, subject, loaded);
          fresh = true;
          continue;
        }
        const seqOf = new Map(loaded.seqOf).set(event.id, ack.seq);
        const state = decider.evolve(loaded.state, ack.event as E);
        this.cache.set(subject, { state, seq: ack.seq, seqOf, lastHash: ack.event.hash ?? null });
        return { aggregateId, event: ack.event, seq: ack.seq, state, replayed: false };
      } catch (err) {
        if (!(err instanceof WrongLastSequenceError)) throw err;
        if (!shouldRetry(err)) {
          // The caller decides again, and its next command must not be decided on what is now known stale.
          this.cache.delete(subject);
          throw err;
        }
        loaded = await this.catchUp(decider, stream, subject, loaded);
        fresh = true;
        if (attempt > 2) await sleep(Math.random() * Math.min(50, 2 ** attempt));
      }
    }
    throw unavailable(`${decider.aggregate} ${aggregateId} kept changing; gave up after ${maxAttempts} attempts`);
  }

  private envelope<C, E extends LedgerEvent, S>(
    decider: Decider<C, E, S>,
    aggregateId: string,
    eventId: string,
    command: C,
    state: S,
    decided: DomainEventOf<E>,
    ctx: CommandContext,
    commandHash: string | undefined,
  ): LedgerEvent {
    const candidate = {
      id: eventId,
      type: decided.type,
      schemaVersion: CURRENT_SCHEMA_VERSION[decided.type],
      aggregateId,
      app: ctx.app,
      scope: decider.scopeOf(command, state),
      actor: ctx.actor,
      sessionId: ctx.sessionId ?? null,
      transcriptRef: ctx.transcriptRef ?? null,
      git: ctx.git ?? null,
      causationId: ctx.causationId ?? null,
      correlationId: ctx.correlationId ?? eventId,
      time: this.now().toISOString(),
      data: decided.data,
      ...(commandHash === undefined ? {} : { commandHash }),
    };
    // The last gate before the log: nothing that fails the schema is ever stored.
    const parsed = LedgerEvent.safeParse(candidate);
    if (!parsed.success) throw invalid(`event failed its schema: ${parsed.error.issues[0]?.message}`, { issues: parsed.error.issues });
    return parsed.data;
  }

  private async eventAt(stream: string, seq: number, eventId: string): Promise<LedgerEvent> {
    const stored = await this.store.eventAt(stream, seq);
    if (stored?.event.id !== eventId) throw internal(`event ${eventId} is not at sequence ${seq}`);
    return stored.event;
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
