import { hostname } from "node:os";
import type { ObjectStore } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";
import { naming } from "../../events/subjects.js";
import type { ProjectionScope } from "../../projections/projection.js";
import { watchScopes, type ScopeWatch } from "../discovery.js";
import { EventStore, type EventStoreOptions } from "../event-store.js";
import { LeaderLease, openLeaseBucket } from "../leader-lease.js";
import type { Component } from "../runtime.js";
import { DEFAULT_SNAPSHOT_EVERY, newestSnapshotSeq, NoLongerWriter, openSnapshots, writeSnapshots } from "./snapshots.js";

/**
 * `memledger up`'s as-of snapshot writer (issue 12 item 2): follows every app stream (and the org's) and,
 * once the stream passed a checkpoint (a multiple of `every`) that has no snapshot yet, writes the missing
 * ones with `writeSnapshots` (the same code as `memledger snapshot`). So as-of reads fold at most one
 * interval of events after the newest snapshot without anyone running `snapshot` by hand.
 *
 * One writer per app: an instance writes an app's snapshots only while it holds that app's lease
 * (`asOfSnapshotLease(app)` in the leases bucket, services/leader-lease.ts); others follow and take over
 * when it stops or lapses. A write that finds the lease lost stops before its next object. A snapshot is
 * named by its sequence, so even two writers overlapping in a takeover would write the same object twice,
 * never two snapshots of one checkpoint.
 *
 * Out of band: nothing here is on the command path. Each app is looked at on its own timer (a look is one
 * `lastSeq` request; the fold runs only when a checkpoint was passed), one write at a time per app, and a
 * failure goes to `onError`, to be tried again at the next look.
 */

export interface SnapshotWriterOptions extends EventStoreOptions {
  prefix?: string;
  /** Events between checkpoints (default DEFAULT_SNAPSHOT_EVERY, 10,000); 0: write none (the component is then not started). */
  every?: number;
  /** How often each app's stream is looked at (default 5 s). */
  checkEveryMs?: number;
  /** How often to look for new app streams (default 2 s). */
  discoverEveryMs?: number;
  /** The per-app lease's time to live (default 10 s). */
  leaseTtlMs?: number;
  /** This instance's id in the leases (default host and pid). */
  holder?: string;
  onError?: (err: unknown, where: string) => void;
  /** After a write that saved snapshots (tests, logs). */
  onWritten?: (app: string, seqs: number[]) => void;
}

interface Followed {
  scope: ProjectionScope;
  lease: LeaderLease;
  timer: NodeJS.Timeout | undefined;
  /** Every checkpoint at or below this has a snapshot (as far as this instance knows). */
  known: number | null;
  running: Promise<void>;
}

export class SnapshotWriter {
  private readonly followed = new Map<string, Followed>();
  private watch: ScopeWatch | undefined;
  private stopped = false;
  private bucket: ObjectStore | undefined;
  private readonly every: number;
  private readonly holder: { id: string; host: string };

  private constructor(
    readonly store: EventStore,
    private readonly kv: Awaited<ReturnType<typeof openLeaseBucket>>,
    private readonly options: SnapshotWriterOptions,
  ) {
    this.every = options.every ?? DEFAULT_SNAPSHOT_EVERY;
    this.holder = { id: options.holder ?? `${hostname()}:${process.pid}:snapshots`, host: hostname() };
  }

  static async start(nc: NatsConnection, options: SnapshotWriterOptions = {}): Promise<SnapshotWriter> {
    const names = naming(options.prefix);
    const store = await EventStore.open(nc, names, options);
    const writer = new SnapshotWriter(store, await openLeaseBucket(nc, names), options);
    if (writer.every <= 0) return writer;
    writer.watch = await watchScopes(store, (scope) => writer.follow(scope), {
      everyMs: options.discoverEveryMs,
      onError: (err) => writer.report(err, "snapshot writer: discovering app streams"),
    });
    return writer;
  }

  /** The apps this instance currently writes (holds the lease of). */
  get leading(): string[] {
    return [...this.followed.values()].filter((f) => f.lease.held()).map((f) => f.scope.app).sort();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.watch?.stop();
    await Promise.all(
      [...this.followed.values()].map(async (f) => {
        clearInterval(f.timer);
        await f.running;
        await f.lease.stop().catch((err) => this.report(err, `snapshot writer: releasing ${f.scope.app}`));
      }),
    );
  }

  private report(err: unknown, where: string): void {
    this.options.onError?.(err, where);
  }

  private async follow(scope: ProjectionScope): Promise<void> {
    if (this.stopped) return;
    const where = `snapshot writer: ${scope.app}`;
    const followed: Followed = { scope, lease: undefined as unknown as LeaderLease, timer: undefined, known: null, running: Promise.resolve() };
    followed.lease = new LeaderLease(
      this.kv,
      this.store.names.asOfSnapshotLease(scope.app),
      this.holder,
      {
        // Nothing to load: a leader only starts looking (the first look is on the timer, never awaited here).
        onAcquired: async () => {
          followed.known = null;
        },
        onLost: async () => {
          await followed.running;
        },
      },
      { ttlMs: this.options.leaseTtlMs, onError: (err) => this.report(err, `${where}: lease`) },
    );
    this.followed.set(scope.stream, followed);
    followed.timer = setInterval(() => {
      if (this.stopped || !followed.lease.held()) return;
      // One write at a time per app: a look that finds one under way waits for the next tick.
      followed.running = followed.running.then(() => this.look(followed).catch((err) => this.report(err, where)));
    }, this.options.checkEveryMs ?? 5_000);
    followed.timer.unref();
    await followed.lease.start();
  }

  /** Writes the app's missing checkpoints when its stream passed one this instance has not seen written. */
  private async look(f: Followed): Promise<void> {
    if (this.stopped || !f.lease.held()) return;
    const bucket = (this.bucket ??= (await openSnapshots(this.store, { create: true }))!);
    f.known ??= await newestSnapshotSeq(bucket, f.scope.app);
    const lastSeq = await this.store.lastSeq(f.scope.stream).catch(() => 0);
    const due = Math.floor(lastSeq / this.every) * this.every;
    if (due <= f.known) return;
    try {
      const result = await writeSnapshots(this.store, f.scope.app, { every: this.every, bucket, held: () => !this.stopped && f.lease.held() });
      f.known = Math.floor(result.lastSeq / this.every) * this.every;
      if (result.written.length > 0) this.options.onWritten?.(f.scope.app, result.written.map((w) => w.seq));
    } catch (err) {
      if (err instanceof NoLongerWriter) return;
      throw err;
    }
  }
}

/** `memledger up`'s component (off when `every` is 0). */
export const snapshotWriterComponent = (options: Omit<SnapshotWriterOptions, "prefix" | "replicas" | "onError"> = {}): Component => ({
  name: "snapshot-writer",
  async start(ctx) {
    return SnapshotWriter.start(ctx.nc, { ...options, prefix: ctx.prefix, replicas: ctx.replicas, onError: (err, where) => ctx.onError(err, where) });
  },
});
