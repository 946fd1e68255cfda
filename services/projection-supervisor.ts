import type { KV } from "@nats-io/kv";
import { ORG_APP } from "../events/subjects.js";
import type { ProjectionDefinition, ProjectionScope } from "../projections/projection.js";
import type { EventStore } from "./event-store.js";
import type { InstanceRole } from "./instance.js";
import { watchScopes, type ScopeWatch } from "./discovery.js";
import { LeaderLease } from "./leader-lease.js";
import { ProjectionRunner, type RunnerOptions } from "./projection-runner.js";
import { internal } from "../schemas/errors.js";

export { ORG_APP } from "../events/subjects.js";
export { discoverScopes } from "./discovery.js";

/** A store other instances may write too (Redis, a shared disk): one writer at a time, by lease. */
export interface SharedStore {
  /** Names the store: instances that write the same store compete for the same lease. */
  id: string;
  /** The stream sequence the store holds for `scope`, as its readers see it (what a follower waits on). */
  checkpoint(scope: ProjectionScope): Promise<number>;
}

export interface SupervisorLeases {
  /** The leases bucket (services/leader-lease.ts openLeaseBucket). */
  kv: KV;
  /** This instance (services/instance.ts). */
  holder: { id: string; host: string };
  ttlMs?: number;
}

export interface SupervisorOptions extends RunnerOptions {
  /** How often to look for streams of new apps. */
  discoverEveryMs?: number;
  /** Only these apps (and the org); default every app under the prefix. */
  apps?: string[];
  /**
   * Which projections write a shared store (null: a read model of this instance alone, run by every
   * instance). Needs `leases`; without both, every projection runs here, as a single instance does.
   */
  sharedStore?: (definition: ProjectionDefinition, scope: ProjectionScope) => Promise<SharedStore | null>;
  leases?: SupervisorLeases;
  /** Called when this instance became leader or follower of a shared read model. */
  onRoleChange?: () => void;
}

/** One projection of one stream, as this instance runs it. */
interface Entry {
  definition: ProjectionDefinition;
  scope: ProjectionScope;
  /** Present while this instance applies events: always for its own read models, while leader for shared ones. */
  runner?: ProjectionRunner | undefined;
  /** Shared read models only. */
  shared?: { store: SharedStore; lease: LeaderLease } | undefined;
}

const FOLLOWER_POLL_MS = 25;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs every projection over every stream of the prefix, starting runners for apps that appear later.
 *
 * Read models of this instance alone (the search index in its data directory, a file store on its own
 * disk) get a runner here whatever other instances do: each runner follows the stream with an ordered
 * consumer of its own. A read model in a shared store (`sharedStore`: the claims in Redis, a file store
 * on a shared disk) gets a leader lease per store and stream: the leader runs the runner, fenced with the
 * lease's token; followers only read the store, and take over (from the store's own checkpoint) when
 * the leader's lease lapses.
 */
export class ProjectionSupervisor {
  private readonly entries = new Map<string, Entry>();
  private watch: ScopeWatch | undefined;
  private stopped = false;

  constructor(
    readonly store: EventStore,
    readonly definitions: readonly ProjectionDefinition[],
    private readonly options: SupervisorOptions = {},
  ) {}

  async start(): Promise<void> {
    this.watch = await watchScopes(this.store, (scope) => this.follow(scope), {
      everyMs: this.options.discoverEveryMs,
      onError: (err) => this.options.onError?.(err, { projection: "*", stream: "*", seq: null }),
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.watch?.stop();
    // A leader stops its runner, then gives its lease back so that a follower takes over at once.
    await Promise.allSettled([...this.entries.values()].map((e) => (e.shared ? e.shared.lease.stop() : e.runner?.stop())));
    this.entries.clear();
  }

  /** The runners applying events in this instance (a follower has none for the shared read models). */
  list(): ProjectionRunner[] {
    return [...this.entries.values()].flatMap((e) => (e.runner ? [e.runner] : []));
  }

  runner(name: string, app: string): ProjectionRunner | undefined {
    return this.entries.get(`${name}\u0000${app}`)?.runner;
  }

  /** True when every projection of `app` is set up here (as a runner, or as leader or follower of its store). */
  covers(app: string): boolean {
    return this.definitions.every((d) => this.entries.has(`${d.name}\u0000${app}`));
  }

  /** This instance's role for each shared read model (`memledger status`). */
  roles(): InstanceRole[] {
    return [...this.entries.values()].flatMap((e) =>
      e.shared
        ? [{ projection: e.definition.name, app: e.scope.app, stream: e.scope.stream, store: e.shared.store.id, role: e.shared.lease.role, leader: e.shared.lease.leader }]
        : [],
    );
  }

  /**
   * How far the read models of `app` that readers here see have applied the stream: the lowest position
   * over this instance's runners and the shared stores' checkpoints. 0 when none is set up yet.
   */
  async position(app: string): Promise<number> {
    const positions = await Promise.all([...this.entries.values()].filter((e) => e.scope.app === app).map((e) => this.entryPosition(e)));
    return positions.length > 0 ? Math.min(...positions) : 0;
  }

  private async entryPosition(entry: Entry): Promise<number> {
    if (entry.runner) return entry.runner.position;
    return entry.shared ? entry.shared.store.checkpoint(entry.scope).catch(() => 0) : 0;
  }

  /**
   * Resolves when the read models of `app` this instance serves from have applied the stream up to `seq`:
   * its own runners, and for shared stores it only follows, the store's checkpoint.
   */
  async waitFor(app: string, seq: number, timeoutMs = 30_000): Promise<boolean> {
    const entries = [...this.entries.values()].filter((e) => e.scope.app === app);
    const deadline = Date.now() + timeoutMs;
    const reached = async (entry: Entry): Promise<boolean> => {
      for (;;) {
        // Leadership may move while we wait: ask whichever side this instance is on now.
        const runner = entry.runner;
        if (runner && runner.position >= seq) return true;
        if (runner) {
          if (await runner.waitFor(seq, Math.min(250, Math.max(0, deadline - Date.now())))) return true;
        } else if ((await this.entryPosition(entry)) >= seq) {
          return true;
        } else {
          await sleep(FOLLOWER_POLL_MS);
        }
        if (this.stopped || Date.now() > deadline) return false;
      }
    };
    const results = await Promise.all(entries.map(reached));
    return entries.length > 0 && results.every(Boolean);
  }

  /**
   * Starts every projection on a stream watchScopes found. One that fails to start is reported and
   * tried again at the next look (false: offer the stream again).
   */
  private async follow(scope: ProjectionScope): Promise<boolean> {
    const wanted = this.options.apps;
    if (wanted && scope.app !== ORG_APP && !wanted.includes(scope.app)) return true;
    let started = true;
    for (const definition of this.definitions) {
      const key = `${definition.name}\u0000${scope.app}`;
      if (this.entries.has(key) || this.stopped) continue;
      await this.removeLegacyConsumer(definition, scope);
      const entry: Entry = { definition, scope };
      this.entries.set(key, entry);
      try {
        const store = this.options.leases && this.options.sharedStore ? await this.options.sharedStore(definition, scope) : null;
        if (store) await this.followShared(entry, store);
        else {
          entry.runner = this.newRunner(definition, scope);
          await entry.runner.start();
        }
      } catch (err) {
        this.entries.delete(key);
        this.options.onError?.(err, { projection: definition.name, stream: scope.stream, seq: null });
        started = false;
      }
    }
    return started;
  }

  /**
   * Builds before instances shared one durable consumer per projection (`projection-<name>`), which
   * nothing uses now and the server would keep forever: removed when idle (no pull waiting on it).
   */
  private async removeLegacyConsumer(definition: ProjectionDefinition, scope: ProjectionScope): Promise<void> {
    const name = `projection-${definition.name}`;
    try {
      const info = await this.store.jsm.consumers.info(scope.stream, name);
      if (info.num_waiting === 0) await this.store.jsm.consumers.delete(scope.stream, name);
    } catch {
      // Not there (the normal case), or removed by another instance meanwhile.
    }
  }

  private newRunner(definition: ProjectionDefinition, scope: ProjectionScope, fence?: RunnerOptions["fence"]): ProjectionRunner {
    const { sharedStore: _s, leases: _l, onRoleChange: _r, discoverEveryMs: _d, apps: _a, ...runnerOptions } = this.options;
    return new ProjectionRunner(this.store, definition, scope, {
      ...runnerOptions,
      ...(this.options.leases ? { instanceId: this.options.leases.holder.id } : {}),
      ...(fence ? { fence } : {}),
    });
  }

  /** Competes for the lease of a shared store: the leader runs the runner, fenced by its token. */
  private async followShared(entry: Entry, store: SharedStore): Promise<void> {
    const leases = this.options.leases!;
    const { definition, scope } = entry;
    const where = { projection: definition.name, stream: scope.stream, seq: null };
    const key = this.store.names.projectionLease(definition.name, store.id, scope.stream);
    const lease: LeaderLease = new LeaderLease(
      leases.kv,
      key,
      leases.holder,
      {
        onAcquired: async (token) => {
          if (this.stopped) throw internal("stopping");
          const runner = this.newRunner(definition, scope, { token, held: () => lease.held() });
          entry.runner = runner;
          try {
            await runner.start();
          } catch (err) {
            if (entry.runner === runner) entry.runner = undefined;
            await runner.stop().catch(() => undefined);
            throw err;
          }
          this.options.onRoleChange?.();
        },
        onLost: async (reason) => {
          const runner = entry.runner;
          entry.runner = undefined;
          await runner?.stop();
          if (!this.stopped) this.options.onError?.(internal(`no longer the leader of ${definition.name} (store ${store.id}): ${reason}`), where);
          this.options.onRoleChange?.();
        },
      },
      { ttlMs: leases.ttlMs, onError: (err) => this.options.onError?.(err, where) },
    );
    entry.shared = { store, lease };
    await lease.start();
    this.options.onRoleChange?.();
  }
}
