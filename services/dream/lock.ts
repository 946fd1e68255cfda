import { hostname } from "node:os";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Naming } from "../../events/subjects.js";
import { ConflictReason, MemledgerError, conflict } from "../../schemas/errors.js";
import { LeaderLease, openLeaseBucket } from "../leader-lease.js";

/**
 * One consolidation runner per app at a time: a lease on the key `dream.<app>` of the leases bucket
 * (events/subjects.ts), taken with a KV create (or, once a silent holder's lease lapsed, an update at the
 * revision it left), renewed every ttl / 3 while the run goes on, deleted at the end. It is the leader
 * lease of services/leader-lease.ts, so its guarantees are those: a contender judges a lease lapsed by its
 * own clock (the key's revision unchanged for ttl), so a killed runner's lock is taken over after ttl.
 *
 * A second runner either exits at once (`lock_held`, exit status 3) or waits until the lock is free.
 */
export interface DreamLockOptions {
  /** How long a silent holder keeps the lock (default 30 s; a killed runner's lock is free after it). */
  ttlMs?: number;
  /** Wait for the lock instead of failing with `lock_held`. */
  wait?: boolean;
  /** How long to wait at most (default: forever, or until `signal`). */
  waitTimeoutMs?: number;
  signal?: AbortSignal;
  onError?: (err: unknown) => void;
}

export const DEFAULT_DREAM_LOCK_TTL_MS = 30_000;

export class DreamLock {
  private readonly lostController = new AbortController();

  private constructor(
    private readonly lease: LeaderLease,
    readonly key: string,
    readonly holder: string,
  ) {}

  /** Aborted when the lock is lost (taken over after a stall, or released): the runner stops appending. */
  get lost(): AbortSignal {
    return this.lostController.signal;
  }

  held(): boolean {
    return this.lease.held();
  }

  /** Throws `conflict` (lease_lost) unless the lock is still ours: checked before each append. */
  check(): void {
    if (!this.lease.held()) throw conflict(`the consolidation lock ${this.key} is no longer held by ${this.holder}`, { reason: ConflictReason.lease_lost, key: this.key });
  }

  static async acquire(nc: NatsConnection, names: Naming, app: string, holder: string, options: DreamLockOptions = {}): Promise<DreamLock> {
    const kv = await openLeaseBucket(nc, names);
    const key = names.dreamLock(app);
    let lock: DreamLock | undefined = undefined;
    const lease = new LeaderLease(
      kv,
      key,
      { id: holder, host: hostname() },
      {
        onAcquired: async () => undefined,
        onLost: async (reason) => lock?.lostController.abort(conflict(`lost the consolidation lock ${key}: ${reason}`, { reason: ConflictReason.lease_lost, key })),
      },
      { ttlMs: options.ttlMs ?? DEFAULT_DREAM_LOCK_TTL_MS, onError: options.onError },
    );
    lock = new DreamLock(lease, key, holder);
    await lease.start();
    if (lease.held()) return lock;
    if (!options.wait) {
      const current = lease.leader;
      await lease.stop();
      throw conflict(`app ${app} is being consolidated by ${current ?? "another runner"} (lock ${key}); try again later or wait (--wait)`, {
        reason: ConflictReason.lock_held,
        key,
        holder: current,
      });
    }
    // The lease keeps trying on its own timer; a lapsed holder's lock is taken after ttl.
    const deadline = options.waitTimeoutMs === undefined ? Infinity : Date.now() + options.waitTimeoutMs;
    while (!lease.held()) {
      if (options.signal?.aborted || Date.now() > deadline) {
        const current = lease.leader;
        await lease.stop();
        if (options.signal?.aborted && options.signal.reason instanceof MemledgerError) throw options.signal.reason;
        throw conflict(`gave up waiting for the consolidation lock ${key} held by ${current ?? "another runner"}`, { reason: ConflictReason.lock_held, key, holder: current });
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return lock;
  }

  /** Deletes the key (at our revision), so the next runner need not wait for a lapse. */
  async release(): Promise<void> {
    await this.lease.stop();
  }
}
