import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import path from "node:path";
import { idInFile } from "./id-file.js";
import { createJetStreamResource } from "./nats.js";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Naming } from "../events/subjects.js";
import { ConflictReason, conflict, internal, invalid } from "../schemas/errors.js";

/**
 * Who this process is among the instances of one prefix, and who else is there.
 *
 * An instance is a data directory (MEMLEDGER_DATA, default .memledger): its id is made once and kept in
 * `<data dir>/instance-id`, so a restart is the same instance (same role names in `status`, same
 * store ids), and two processes on one data directory are refused (they would write the same search
 * snapshots). Presence is a key per instance in the `<prefix>_instances` KV bucket, rewritten by a
 * heartbeat. nats-server 2.9 has no per-message TTL, so each entry carries `updatedAt` and readers treat
 * an entry whose heartbeat is older than the lapse as departed.
 */

export const INSTANCE_ID_FILE = "instance-id";
const INSTANCE_ID = /^[A-Za-z0-9_-]{1,64}$/;
const DEFAULT_DATA_DIR = ".memledger";

export interface InstanceConfig {
  /** The instance's data directory (MEMLEDGER_DATA, default .memledger). */
  dataDir: string;
  /** Heartbeat period; default 2 s. */
  heartbeatMs: number;
  /** A heartbeat older than this means the instance departed; default 10 s. */
  lapseMs: number;
  /** Leader leases of shared read models: how long a silent leader keeps one; default 10 s. */
  leaseTtlMs: number;
}

const positiveMs = (value: string | undefined, name: string): number | undefined => {
  if (value === undefined || value.trim() === "") return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 100) throw invalid(`bad ${name} '${value}': milliseconds, at least 100`);
  return n;
};

/** MEMLEDGER_DATA, MEMLEDGER_HEARTBEAT_MS, MEMLEDGER_LEASE_TTL_MS. */
export function instanceConfigFromEnv(env: NodeJS.ProcessEnv = process.env): InstanceConfig {
  const data = env.MEMLEDGER_DATA?.trim();
  const heartbeatMs = positiveMs(env.MEMLEDGER_HEARTBEAT_MS, "MEMLEDGER_HEARTBEAT_MS") ?? 2_000;
  return {
    dataDir: path.resolve(data ? data : DEFAULT_DATA_DIR),
    heartbeatMs,
    lapseMs: 5 * heartbeatMs,
    leaseTtlMs: positiveMs(env.MEMLEDGER_LEASE_TTL_MS, "MEMLEDGER_LEASE_TTL_MS") ?? 10_000,
  };
}

/** The instance id kept in the data directory, made (exclusively: two racing starts agree) on first use. */
export async function loadInstanceId(dataDir: string): Promise<string> {
  const file = path.join(dataDir, INSTANCE_ID_FILE);
  const { id } = await idInFile(file, `i-${randomBytes(6).toString("hex")}`);
  if (!INSTANCE_ID.test(id)) throw internal(`${file} holds '${id.slice(0, 80)}', not an instance id: delete the file to get a new one`);
  return id;
}

/** One instance's share of a shared read model: does it write the store, and who does. */
export interface InstanceRole {
  projection: string;
  app: string;
  stream: string;
  /** The shared store's id (services/runtime.ts: what the lease is about). */
  store: string;
  role: "leader" | "follower";
  /** The instance writing the store, as last seen. */
  leader: string | null;
}

export interface InstancePresence {
  id: string;
  host: string;
  pid: number;
  dataDir: string;
  /** The files root this instance reads and (when leader of it) writes. */
  filesRoot?: string | undefined;
  startedAt: string;
  updatedAt: string;
  /** Set by a graceful stop. */
  stoppedAt?: string | undefined;
  /** The heartbeat period and the lapse readers should apply. */
  heartbeatMs: number;
  lapseMs: number;
  /** Tells this process apart from an earlier run of the same instance. */
  session: string;
  roles: InstanceRole[];
}

export type InstanceState = "live" | "departed" | "stopped";

export async function openInstancesBucket(nc: NatsConnection, names: Naming): Promise<KV> {
  return createJetStreamResource(`the instances bucket ${names.instancesBucket()}`, () => new Kvm(nc).create(names.instancesBucket(), { history: 1 }));
}

export function instanceState(p: InstancePresence, now = Date.now()): InstanceState {
  if (p.stoppedAt) return "stopped";
  return now - Date.parse(p.updatedAt) > p.lapseMs ? "departed" : "live";
}

/** Every instance that has reported under the prefix, live first, then by id. */
export async function listInstances(nc: NatsConnection, names: Naming): Promise<(InstancePresence & { state: InstanceState })[]> {
  const kv = await openInstancesBucket(nc, names);
  const out: (InstancePresence & { state: InstanceState })[] = [];
  // keys() may repeat a key rewritten while it lists (a heartbeat): each key once.
  for (const key of new Set(await collectKeys(kv))) {
    const entry = await kv.get(key);
    if (!entry || entry.operation !== "PUT" || entry.value.length === 0) continue;
    const p = entry.json<InstancePresence>();
    out.push({ ...p, state: instanceState(p) });
  }
  const rank = { live: 0, stopped: 1, departed: 2 } as const;
  return out.sort((a, b) => rank[a.state] - rank[b.state] || a.id.localeCompare(b.id));
}

async function collectKeys(kv: KV): Promise<string[]> {
  const keys: string[] = [];
  for await (const key of await kv.keys()) keys.push(key);
  return keys;
}

const processAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * This process's presence: refuses to start while another live process uses the same instance (data
 * directory), then rewrites its entry every heartbeat with the roles it holds.
 */
export class Presence {
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> = Promise.resolve();
  private stopped = false;

  private constructor(
    private readonly kv: KV,
    readonly info: InstancePresence,
    private readonly roles: () => InstanceRole[],
    private readonly onError: (err: unknown) => void,
  ) {}

  static async start(
    nc: NatsConnection,
    names: Naming,
    config: InstanceConfig & { filesRoot?: string | undefined },
    options: { roles?: () => InstanceRole[]; onError?: (err: unknown) => void } = {},
  ): Promise<Presence> {
    const id = await loadInstanceId(config.dataDir);
    const kv = await openInstancesBucket(nc, names);
    const info: InstancePresence = {
      id,
      host: hostname(),
      pid: process.pid,
      dataDir: config.dataDir,
      filesRoot: config.filesRoot ? path.resolve(config.filesRoot) : undefined,
      startedAt: new Date().toISOString(),
      updatedAt: new Date().toISOString(),
      heartbeatMs: config.heartbeatMs,
      lapseMs: config.lapseMs,
      session: randomBytes(6).toString("hex"),
      roles: [],
    };
    await Presence.awaitPredecessor(kv, info);
    const presence = new Presence(kv, info, options.roles ?? (() => []), options.onError ?? (() => undefined));
    await presence.beat();
    presence.timer = setInterval(() => {
      presence.beating = presence.beating.then(() => presence.beat());
    }, config.heartbeatMs);
    presence.timer.unref();
    return presence;
  }

  /**
   * Another process reporting under this instance id: fine when it stopped, or when it ran on this host
   * and its process is gone (a crash, then a restart). Otherwise wait for its heartbeat to lapse: if it
   * keeps beating, two processes share one data directory, which is refused.
   */
  private static async awaitPredecessor(kv: KV, me: InstancePresence): Promise<void> {
    const read = async () => {
      const entry = await kv.get(me.id);
      return entry && entry.operation === "PUT" && entry.value.length > 0 ? entry.json<InstancePresence>() : null;
    };
    const first = await read();
    if (!first || instanceState(first) !== "live") return;
    if (first.host === me.host && !processAlive(first.pid)) return;
    const deadline = Date.now() + first.lapseMs + first.heartbeatMs;
    for (;;) {
      await sleep(Math.min(first.heartbeatMs, 1000));
      const now = await read();
      if (!now || instanceState(now) !== "live") return;
      if (now.updatedAt !== first.updatedAt || now.session !== first.session || Date.now() > deadline) {
        throw conflict(
          `instance ${me.id} (data directory ${me.dataDir}) is already running on ${now.host} as pid ${now.pid}: give each instance its own MEMLEDGER_DATA`,
          { reason: ConflictReason.instance_running, instance: me.id },
        );
      }
    }
  }

  get id(): string {
    return this.info.id;
  }

  /** Writes the entry now (roles changed); the heartbeat keeps writing it. */
  refresh(): void {
    this.beating = this.beating.then(() => this.beat());
  }

  private async beat(): Promise<void> {
    if (this.stopped) return;
    try {
      this.info.updatedAt = new Date().toISOString();
      this.info.roles = this.roles();
      await this.kv.put(this.info.id, JSON.stringify(this.info));
    } catch (err) {
      // Presence is advisory (status); the instance keeps serving while NATS is briefly away.
      this.onError(err);
    }
  }

  /** Marks the instance stopped (status shows it as such rather than departed). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.beating;
    this.stopped = true;
    this.info.stoppedAt = new Date().toISOString();
    this.info.updatedAt = this.info.stoppedAt;
    this.info.roles = [];
    await this.kv.put(this.info.id, JSON.stringify(this.info)).catch((err) => this.onError(err));
  }
}
