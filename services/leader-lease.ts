import { Kvm, type KV, type KvEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Naming } from "../events/subjects.js";
import { createJetStreamResource } from "./nats.js";

/**
 * Leader leases in NATS KV: one writer at a time for a read model in a shared store (the claims in
 * Redis, a file store on a shared disk).
 *
 * - Acquire: `create` the key (fails with 10071 when it exists), or, when the holder's lease lapsed,
 *   `update` it at the revision last seen (fails when the holder renewed meanwhile: exactly one of
 *   several contenders wins).
 * - Renew: `update` at the holder's own last revision, every ttl / 3. A failed renewal (10071: someone
 *   else wrote the key) means the lease is lost.
 * - Lapse is judged by each contender's own clock, never by timestamps written on another host: a lease
 *   lapsed when its revision has not changed for `ttlMs` since this contender first saw it. The holder
 *   considers itself leader only until (send time of its last successful renewal) + ttl - margin, which
 *   is always earlier than any contender can judge the lease lapsed: clock skew between hosts does not
 *   matter, only that clocks run at about the same rate.
 * - Fencing: the revision at which a holder acquired the key is its token. KV revisions are the bucket
 *   stream's sequence, so every later acquisition has a higher token; stores record the highest token
 *   seen and refuse writes carrying a lower one (projections/claims/target.ts, projections/files/target.ts).
 *   That is what stops a paused former leader that wakes up after losing its lease.
 * - Release (graceful stop): delete the key at the holder's revision, so a follower takes over at once
 *   instead of after a lapse.
 */

export interface LeaseRecord {
  holder: string;
  host: string;
  acquiredAt: string;
  renewedAt: string;
  ttlMs: number;
}

export interface LeaseOptions {
  /** How long a silent holder keeps the lease; default 10 s. */
  ttlMs?: number;
  /** How often the holder renews and contenders look; default ttl / 3. */
  renewEveryMs?: number;
  onError?: (err: unknown) => void;
}

export type LeaseRole = "leader" | "follower";

export interface LeaseHandlers {
  /** Became leader with this fencing token. Runs before the next renewal; a throw gives the lease back. */
  onAcquired(token: number): Promise<void>;
  /** Lost the lease (lapsed by our clock, taken over, or released): stop writing. */
  onLost(reason: string): Promise<void>;
}

const SAFETY_MARGIN = 0.2;

const isWrongLastSequence = (err: unknown): boolean => (err as { code?: unknown })?.code === 10071;

export async function openLeaseBucket(nc: NatsConnection, names: Naming): Promise<KV> {
  // history 1: only the current holder matters; revisions still grow across deletes and takeovers.
  return createJetStreamResource(`the leases bucket ${names.leasesBucket()}`, () => new Kvm(nc).create(names.leasesBucket(), { history: 1 }));
}

/** Every lease of the prefix, by key, as the bucket holds them now (for `memledger status`). */
export async function readLeases(nc: NatsConnection, names: Naming): Promise<Map<string, LeaseRecord & { revision: number }>> {
  const kv = await openLeaseBucket(nc, names);
  const out = new Map<string, LeaseRecord & { revision: number }>();
  const keys = new Set<string>();
  for await (const key of await kv.keys()) keys.add(key); // a key renewed while listing comes again
  for (const key of keys) {
    const entry = await kv.get(key);
    if (entry && entry.operation === "PUT" && entry.value.length > 0) out.set(key, { ...entry.json<LeaseRecord>(), revision: entry.revision });
  }
  return out;
}

export class LeaderLease {
  private readonly ttlMs: number;
  private readonly renewEveryMs: number;
  private revision = 0;
  private tokenValue: number | null = null;
  /** performance.now() after which this holder no longer counts itself leader. */
  private validUntil = 0;
  /** The holder's revision we last saw, and when (our clock) we first saw it. */
  private observed: { revision: number; since: number } | null = null;
  private timer: NodeJS.Timeout | undefined;
  private tick: Promise<void> = Promise.resolve();
  private stopped = false;
  private acquiredAt = "";
  private lastHolder: string | null = null;
  /**
   * `onAcquired` of the current tenure. Not awaited by the renewal loop: starting to write may take
   * longer than the lease (loading a large read model), and the lease must be renewed meanwhile.
   */
  private acquired: Promise<void> = Promise.resolve();

  constructor(
    private readonly kv: KV,
    readonly key: string,
    private readonly holder: { id: string; host: string },
    private readonly handlers: LeaseHandlers,
    private readonly options: LeaseOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? 10_000;
    this.renewEveryMs = options.renewEveryMs ?? Math.max(50, Math.floor(this.ttlMs / 3));
  }

  get role(): LeaseRole {
    return this.held() ? "leader" : "follower";
  }

  /** The fencing token while leader. */
  get token(): number | null {
    return this.held() ? this.tokenValue : null;
  }

  /** Who holds the lease as last seen (this instance's id when leader). */
  get leader(): string | null {
    return this.held() ? this.holder.id : this.lastHolder;
  }

  /** True while this instance holds the lease by its own clock. */
  held(): boolean {
    return this.tokenValue !== null && performance.now() < this.validUntil;
  }

  /**
   * Makes a first attempt at once, then keeps renewing or trying. Resolves once the role is known and,
   * if this instance became leader, `onAcquired` finished (renewals go on meanwhile).
   */
  async start(): Promise<void> {
    this.tick = this.step();
    await this.tick;
    this.timer = setInterval(() => {
      this.tick = this.tick.then(() => this.step());
    }, this.renewEveryMs);
    this.timer.unref();
    await this.acquired;
  }

  /** Stops renewing; a leader gives the lease back (after `onLost`) so that a follower takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.tick;
    if (this.tokenValue !== null) {
      const revision = this.revision;
      await this.lose("stopping");
      await this.kv.delete(this.key, { previousSeq: revision }).catch(() => undefined);
    }
  }

  private record(renewedAt = new Date().toISOString()): string {
    const value: LeaseRecord = { holder: this.holder.id, host: this.holder.host, acquiredAt: this.acquiredAt || renewedAt, renewedAt, ttlMs: this.ttlMs };
    return JSON.stringify(value);
  }

  private async step(): Promise<void> {
    if (this.stopped) return;
    try {
      if (this.tokenValue !== null) await this.renew();
      else await this.tryAcquire();
    } catch (err) {
      this.options.onError?.(err);
    }
  }

  private async renew(): Promise<void> {
    // Even when our own clock says the lease lapsed (this process stalled), an update at our revision
    // that succeeds proves nobody took it over: nothing was committed meanwhile (the runner checks
    // held() first), and leadership simply continues.
    const sent = performance.now();
    try {
      this.revision = await this.kv.update(this.key, this.record(), this.revision);
      this.validUntil = sent + this.ttlMs * (1 - SAFETY_MARGIN);
    } catch (err) {
      if (isWrongLastSequence(err)) await this.lose("another instance took the lease over");
      else if (!this.held()) await this.lose(`the lease lapsed: renewing failed: ${(err as Error).message}`);
      else throw err;
    }
  }

  private async tryAcquire(): Promise<void> {
    const entry: KvEntry | null = await this.kv.get(this.key);
    const now = performance.now();
    const live = entry !== null && entry.operation === "PUT" && entry.value.length > 0;
    if (live) {
      this.lastHolder = entry.json<LeaseRecord>().holder;
      if (this.observed?.revision !== entry.revision) {
        this.observed = { revision: entry.revision, since: now };
        return;
      }
      if (now - this.observed.since < this.ttlMs) return;
    }
    const sent = performance.now();
    this.acquiredAt = new Date().toISOString();
    try {
      this.revision = live ? await this.kv.update(this.key, this.record(this.acquiredAt), entry.revision) : await this.kv.create(this.key, this.record(this.acquiredAt));
    } catch (err) {
      // Someone else renewed or took it first: follow them.
      if (isWrongLastSequence(err)) {
        this.observed = null;
        return;
      }
      throw err;
    }
    this.tokenValue = this.revision;
    this.validUntil = sent + this.ttlMs * (1 - SAFETY_MARGIN);
    this.lastHolder = this.holder.id;
    this.observed = null;
    const token = this.revision;
    this.acquired = this.handlers.onAcquired(token).catch(async (err) => {
      this.options.onError?.(err);
      // Could not start writing (e.g. the store already carries a higher token): give the lease back.
      if (this.tokenValue !== token) return;
      this.tokenValue = null;
      this.validUntil = 0;
      await this.kv.delete(this.key, { previousSeq: this.revision }).catch(() => undefined);
      await this.handlers.onLost("could not start writing").catch((e) => this.options.onError?.(e));
    });
  }

  private async lose(reason: string): Promise<void> {
    if (this.tokenValue === null) return;
    this.tokenValue = null;
    this.validUntil = 0;
    this.observed = null;
    // Whatever onAcquired started must exist before onLost can stop it.
    await this.acquired;
    await this.handlers.onLost(reason).catch((err) => this.options.onError?.(err));
  }
}
