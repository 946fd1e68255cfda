import path from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import type { ProjectionProgress } from "../projections/projection.js";
import { DEFAULT_PREFIX, Prefix } from "../events/subjects.js";
import { internal, invalid } from "../schemas/errors.js";
import { CommandService, readWaitMsFromEnv, type ReadModelsPosition } from "./command-service.js";
import { connectNats } from "./nats.js";
import type { Policy } from "../schemas/policy.js";
import { EventStore } from "./event-store.js";
import { naming } from "../events/subjects.js";
import { ProjectionSupervisor, type SharedStore } from "./projection-supervisor.js";
import { instanceConfigFromEnv, Presence, type InstanceConfig } from "./instance.js";
import { openLeaseBucket } from "./leader-lease.js";
import { sharedStores } from "./shared-stores.js";
import { openReadModels, readModelConfig, type ReadModelConfig, type ReadModels } from "./read-models.js";
import { Curator } from "./curator/curator.js";
import type { CuratorPolicyInput } from "./curator/policy.js";
import { resolveCuratorPolicy } from "./curator/load.js";

/** What every component of a running memledger shares: one connection and one naming prefix. */
export interface RuntimeContext {
  nc: NatsConnection;
  prefix: string;
  replicas: number;
  /** Who may do what; undefined: everyone may do everything. */
  policy?: Policy | undefined;
  /** Failures that are nobody's input error (a bug, a lost dependency), for the operator's log. */
  onError(err: unknown, where: string): void;
  /** What each projection is doing while it opens and catches up (`memledger up` prints it). */
  onProgress?: ((progress: ProjectionProgress) => void) | undefined;
}

export interface RunningComponent {
  /** Stop taking work, finish what is under way. The connection is drained after every component stopped. */
  stop(): Promise<void>;
}

/**
 * One part of the server process: the instance's presence, the read models, the command service, the
 * projections and the curator (defaultComponents).
 * Components start in list order and stop in reverse order, so a later one may rely on an earlier one.
 */
export interface Component {
  name: string;
  start(ctx: RuntimeContext): Promise<RunningComponent>;
}

export interface MemledgerOptions {
  /** NATS URL(s); default NATS_URL, then nats://127.0.0.1:4222. */
  servers?: string;
  /** Subject and stream prefix; default MEMLEDGER_PREFIX, then "memledger". */
  prefix?: string;
  /** Stream replicas for streams this process creates: 1 on a single server, 3 in a cluster. */
  replicas?: number;
  /** Who may do what (schemas/policy.ts); default: everyone may do everything. */
  policy?: Policy;
  /** Default: `defaultComponents()`. */
  components?: Component[];
  onError?: (err: unknown, where: string) => void;
  /** What each projection is doing while it opens (loading a snapshot, setting one aside) and catches up. */
  onProgress?: (progress: ProjectionProgress) => void;
  /** How long stop() waits for each component and for the drain before it closes regardless. */
  stopTimeoutMs?: number;
}

export interface Memledger {
  readonly nc: NatsConnection;
  readonly prefix: string;
  /** Names of the started components, in start order. */
  readonly components: readonly string[];
  /** Settles when the connection is closed, by stop() or because it failed for good. */
  readonly closed: Promise<void | Error>;
  /** Stops every component (reverse order), drains and closes the connection. Idempotent. */
  stop(): Promise<void>;
}

export const commandServiceComponent = (
  readModels?: () => ReadModels | undefined,
  /** This process's projections, so queries carrying `minSeq` wait until they applied it. */
  supervisor?: () => ProjectionSupervisor | undefined,
): Component => ({
  name: "command-service",
  async start(ctx) {
    return CommandService.start(ctx.nc, {
      readModelsAt: supervisor && readModelsAtOf(supervisor),
      readWaitMs: readWaitMsFromEnv(),
      prefix: ctx.prefix,
      replicas: ctx.replicas,
      onError: ctx.onError,
      claims: readModels?.()?.claims,
      policy: ctx.policy,
      // hydrate reads MEMORY.md from the files root and ranks with the live search index (vectors too).
      hydration: readModels?.() && { filesRoot: readModels()!.config.filesRoot, searchIndex: (app: string) => readModels()?.search.index(app) },
    });
  },
});

/**
 * Where this process's read models of an app are (CommandServiceOptions.readModelsAt): waits, until
 * `timeoutMs`, for the supervisor to cover the app (an app whose stream is new is not covered until the
 * supervisor discovers it) and for its read models to apply `seq`.
 */
export const readModelsAtOf =
  (supervisor: () => ProjectionSupervisor | undefined) =>
  async (app: string, seq: number, timeoutMs: number): Promise<ReadModelsPosition> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const running = supervisor();
      if (running?.covers(app)) {
        const reached = await running.waitFor(app, seq, Math.max(0, deadline - Date.now()));
        return { reached, position: await running.position(app) };
      }
      if (Date.now() >= deadline) return { reached: false, position: running ? await running.position(app) : 0 };
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };

/**
 * Every projection over every app stream (and the org stream), started as apps appear. With the
 * instance (`instanceComponent`), the read models in shared stores (claims in Redis; the file store,
 * which other instances may share on a network disk) are written by one instance at a time, by lease;
 * without it every projection runs here, as a single process does.
 */
export const projectionsComponent = (
  readModels: () => ReadModels | undefined,
  onStart?: (supervisor: ProjectionSupervisor) => void,
  instance?: () => RunningInstance | undefined,
): Component => ({
  name: "projections",
  async start(ctx) {
    const models = readModels();
    if (!models) throw internal("projections need the read models component to start first");
    const store = await EventStore.open(ctx.nc, naming(ctx.prefix));
    const me = instance?.();
    const shared = me ? sharedStores(ctx.prefix, models.config) : undefined;
    let supervisor: ProjectionSupervisor | undefined;
    supervisor = new ProjectionSupervisor(store, models.definitions, {
      onError: (err, where) => ctx.onError(err, `projection ${where.projection} on ${where.stream}${where.seq ? ` at seq ${where.seq}` : ""}`),
      onProgress: ctx.onProgress,
      ...(me && shared
        ? {
            leases: { kv: await openLeaseBucket(ctx.nc, store.names), holder: { id: me.presence.id, host: me.presence.info.host }, ttlMs: me.config.leaseTtlMs },
            sharedStore: (definition, scope): Promise<SharedStore | null> => shared.of(definition, scope),
            onRoleChange: () => me.presence.refresh(),
          }
        : {}),
    });
    me?.attach(() => supervisor?.roles() ?? []);
    try {
      await supervisor.start();
    } catch (err) {
      await shared?.close();
      throw err;
    }
    onStart?.(supervisor);
    return {
      async stop() {
        await supervisor!.stop();
        supervisor = undefined;
        await shared?.close();
      },
    };
  },
});

/** This process as one instance among those of its prefix (services/instance.ts). */
export interface RunningInstance {
  presence: Presence;
  config: InstanceConfig;
  /** Where the presence entry gets this instance's roles from (the projections component). */
  attach(roles: () => ReturnType<ProjectionSupervisor["roles"]>): void;
}

/**
 * The instance: its id (kept in its data directory) and its presence in the `<prefix>_instances`
 * bucket, heartbeat included. Started first: a second process on the same data directory is refused
 * before it opens anything, and stopped last, marking the instance stopped.
 */
export const instanceComponent = (config: InstanceConfig & { filesRoot?: string }, onStart: (instance: RunningInstance) => void): Component => ({
  name: "instance",
  async start(ctx) {
    let roles: () => ReturnType<ProjectionSupervisor["roles"]> = () => [];
    const presence = await Presence.start(ctx.nc, naming(ctx.prefix), config, {
      roles: () => roles(),
      onError: (err) => ctx.onError(err, "instance heartbeat"),
    });
    onStart({
      presence,
      config,
      attach(next) {
        roles = next;
        presence.refresh();
      },
    });
    return { stop: () => presence.stop() };
  },
});

/**
 * The curator: turns promotion requests of every app into org memories (services/curator). Checks the
 * runtime's access policy before writing the org, as the command service does for commands.
 */
export const curatorComponent = (policy?: CuratorPolicyInput): Component => ({
  name: "curator",
  async start(ctx) {
    return Curator.start(ctx.nc, {
      prefix: ctx.prefix,
      replicas: ctx.replicas,
      // Without one given, MEMLEDGER_CURATOR_POLICY (a file), else the defaults.
      policy: policy ?? (await resolveCuratorPolicy(undefined)),
      access: ctx.policy,
      onError: (err, where) => ctx.onError(err, where),
    });
  },
});

/** The read models' shared resources (Redis readers), opened before the components that use them. */
export const readModelsComponent = (config: ReadModelConfig, onOpen: (models: ReadModels) => void): Component => ({
  name: "read-models",
  async start(ctx) {
    const models = openReadModels(ctx.prefix, config, { nc: ctx.nc });
    onOpen(models);
    return { stop: () => models.close() };
  },
});

export interface DefaultComponentOptions {
  readModels?: ReadModelConfig;
  /** The instance's data directory, heartbeat and lease timing; default from the environment (instanceConfigFromEnv). */
  instance?: InstanceConfig;
  /** Run the projections in this process (default true). */
  projections?: boolean;
  /** Run the curator in this process (default true), with this policy (default: services/curator/policy.ts). */
  curator?: boolean;
  curatorPolicy?: CuratorPolicyInput;
}

/** What `memledger up` runs: the instance, read models, the command service, the projections and the curator. */
export const defaultComponents = (options: DefaultComponentOptions = {}): Component[] => {
  let models: ReadModels | undefined;
  let supervisor: ProjectionSupervisor | undefined;
  let instance: RunningInstance | undefined;
  const config = options.readModels ?? readModelConfig();
  return [
    // The instance is the owner of its own state, the search snapshots: its data directory is theirs
    // (MEMLEDGER_DATA), also when a caller gave the read models' places without setting the variable.
    instanceComponent({ ...(options.instance ?? { ...instanceConfigFromEnv(), dataDir: path.resolve(path.dirname(config.searchDir)) }), filesRoot: config.filesRoot }, (started) => {
      instance = started;
    }),
    readModelsComponent(config, (opened) => {
      models = opened;
    }),
    commandServiceComponent(() => models, options.projections === false ? undefined : () => supervisor),
    ...(options.projections === false ? [] : [projectionsComponent(() => models, (started) => (supervisor = started), () => instance)]),
    ...(options.curator === false ? [] : [curatorComponent(options.curatorPolicy)]),
  ];
};

const nonEmpty = (s: string | undefined): string | undefined => (s === undefined || s === "" ? undefined : s);

async function within<T>(ms: number, work: Promise<T>): Promise<T | "timeout"> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Connects to NATS (reconnecting forever: a server restart must not kill the ledger), then starts each
 * component. If one fails to start, those already started are stopped and the error is rethrown.
 */
export async function startMemledger(options: MemledgerOptions = {}): Promise<Memledger> {
  const prefix = options.prefix ?? nonEmpty(process.env.MEMLEDGER_PREFIX) ?? DEFAULT_PREFIX;
  const checked = Prefix.safeParse(prefix);
  if (!checked.success) throw invalid(`bad prefix '${prefix}': ${checked.error.issues[0]?.message}`);
  const replicas = options.replicas ?? 1;
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5) {
    throw invalid(`bad replicas ${replicas}: a whole number from 1 to 5`);
  }
  const onError = options.onError ?? (() => undefined);
  const stopTimeoutMs = options.stopTimeoutMs ?? 15_000;

  const nc = await connectNats({ servers: options.servers, name: `memledger-${prefix}`, reconnect: true });
  const closed = nc.closed();
  const ctx: RuntimeContext = { nc, prefix, replicas, policy: options.policy, onError, onProgress: options.onProgress };
  const started: { name: string; running: RunningComponent }[] = [];

  const stopAll = async (): Promise<void> => {
    for (const { name, running } of [...started].reverse()) {
      try {
        if ((await within(stopTimeoutMs, running.stop())) === "timeout") {
          onError(internal(`did not stop within ${stopTimeoutMs} ms`), `stopping ${name}`);
        }
      } catch (err) {
        onError(err, `stopping ${name}`);
      }
    }
    if (nc.isClosed()) return;
    try {
      if ((await within(stopTimeoutMs, nc.drain())) === "timeout") onError(internal("drain timed out"), "draining NATS");
    } catch (err) {
      onError(err, "draining NATS");
    }
    if (!nc.isClosed()) await nc.close().catch(() => undefined);
  };

  try {
    for (const component of options.components ?? defaultComponents()) {
      started.push({ name: component.name, running: await component.start(ctx) });
    }
  } catch (err) {
    await stopAll();
    throw err;
  }

  let stopping: Promise<void> | undefined;
  return {
    nc,
    prefix,
    components: started.map((c) => c.name),
    closed,
    stop: () => (stopping ??= stopAll()),
  };
}
