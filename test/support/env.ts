import { randomBytes } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { isStreamOfPrefix } from "../../events/subjects.js";
import { connectNats } from "../../services/nats.js";
import { CommandService, type CommandServiceOptions } from "../../services/command-service.js";
import { MemoryClient } from "../../services/client.js";

export const NATS_URL = process.env.NATS_URL ?? "nats://127.0.0.1:4222";
export const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";

/** A prefix no other test uses: streams, subjects and keys built from it are this test's alone. */
export const uniquePrefix = (label = "t"): string => `${label}${randomBytes(5).toString("hex")}`;

export interface Ledger {
  prefix: string;
  app: string;
  nc: NatsConnection;
  service: CommandService;
  client(as?: string, app?: string): MemoryClient;
  /** Stops the service, deletes every stream under the prefix, closes connections. */
  cleanup(): Promise<void>;
}

/** A running command service on a private prefix, plus clients for it. */
export async function startLedger(options: CommandServiceOptions & { app?: string } = {}): Promise<Ledger> {
  const prefix = options.prefix ?? uniquePrefix();
  const app = options.app ?? "app1";
  const nc = await connectNats({ servers: NATS_URL, name: `test-${prefix}` });
  const service = await CommandService.start(nc, { ...options, prefix });
  return {
    prefix,
    app,
    nc,
    service,
    client(as = "agent-a", forApp = app) {
      return new MemoryClient(nc, { app: forApp, as, prefix });
    },
    async cleanup() {
      await service.stop().catch(() => undefined);
      await deleteStreams(nc, prefix);
      await nc.close();
    },
  };
}

/** Every stream of the prefix: ledger streams and the KV buckets (projection status, embedding cache). */
export async function deleteStreams(nc: NatsConnection, prefix: string): Promise<void> {
  const jsm = await jetstreamManager(nc);
  for await (const name of jsm.streams.names()) {
    if (isStreamOfPrefix(prefix, name)) await jsm.streams.delete(name).catch(() => undefined);
  }
}

/** Every Redis key of the prefix (the claims projection keeps its keys under `<prefix>:`). */
export async function deleteRedisKeys(prefix: string): Promise<void> {
  const { Redis } = await import("ioredis");
  const { unlinkMatching, escapeGlob } = await import("../../projections/claims/index.js");
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  try {
    await unlinkMatching(redis, `${escapeGlob(prefix)}:*`);
  } finally {
    redis.disconnect();
  }
}

export async function streamMessageCount(nc: NatsConnection, stream: string): Promise<number> {
  const jsm = await jetstreamManager(nc);
  try {
    return (await jsm.streams.info(stream)).state.messages;
  } catch {
    return 0;
  }
}
