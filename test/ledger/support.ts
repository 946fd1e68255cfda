import type { NatsConnection } from "@nats-io/transport-node";
import { MemledgerError } from "../../schemas/errors.js";
import type { Reply } from "../../schemas/commands.js";
import { CommandService, type CommandServiceOptions } from "../../services/command-service.js";
import { WrongLastSequenceError } from "../../services/event-store.js";
import { connectNats } from "../../services/nats.js";
import { NATS_URL, type Ledger } from "../support/env.js";
import { until } from "../support/eventually.js";

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const encoder = new TextEncoder();
export const json = (value: unknown): Uint8Array => encoder.encode(JSON.stringify(value));

/** Awaits a promise that must reject with a MemledgerError, and returns that error. */
export async function rejectionOf(promise: Promise<unknown>): Promise<MemledgerError> {
  let result: unknown;
  try {
    result = await promise;
  } catch (err) {
    if (err instanceof MemledgerError) return err;
    throw err;
  }
  throw new Error(`expected a MemledgerError, but the call resolved with ${JSON.stringify(result)}`);
}

/** Opens `n` NATS connections of their own (so concurrent writers do not share a socket). */
export async function openConnections(n: number, label: string, servers = NATS_URL): Promise<NatsConnection[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => connectNats({ servers, name: `${label}-${i}` })));
}

export async function closeAll(connections: NatsConnection[]): Promise<void> {
  await Promise.allSettled(connections.map((nc) => nc.close()));
}

/** Polls `check` until it holds; fails with `what` after `timeoutMs`. Not a timing assertion: a guard. */
export const waitUntil = (check: () => Promise<boolean> | boolean, what: string, timeoutMs = 15_000): Promise<void> => until(what, check, timeoutMs, 25);

/** Sends raw bytes on a command subject and returns the decoded reply envelope. */
export async function rawRequest(nc: NatsConnection, subject: string, data: Uint8Array | string): Promise<Reply<unknown>> {
  const msg = await nc.request(subject, data, { timeout: 10_000 });
  return JSON.parse(msg.string()) as Reply<unknown>;
}

export interface ServiceProbe {
  /** Commands this instance's handler executed (writes only; show/log do not count). */
  executions: number;
  /** Appends this instance tried whose expected sequence was stale (each one is followed by a reload). */
  staleAppends: number;
  /** Appends this instance got acknowledged as new events. */
  appended: number;
}

/**
 * Counts what one real service instance does, by wrapping its handler and store methods. Nothing is
 * replaced: every call goes through to the real code against the real server.
 */
export function probe(service: CommandService): ServiceProbe {
  const counts: ServiceProbe = { executions: 0, staleAppends: 0, appended: 0 };
  const handler = service.handler;
  const execute = handler.execute.bind(handler);
  handler.execute = ((...args: Parameters<typeof execute>) => {
    counts.executions++;
    return execute(...args);
  }) as typeof handler.execute;
  const store = service.store;
  const append = store.append.bind(store);
  store.append = async (...args: Parameters<typeof append>) => {
    try {
      const ack = await append(...args);
      if (!ack.duplicate) counts.appended++;
      return ack;
    } catch (err) {
      if (err instanceof WrongLastSequenceError) counts.staleAppends++;
      throw err;
    }
  };
  return counts;
}

/**
 * More command-service instances on a ledger's prefix, each on its own connection with an empty cache
 * (another process, as far as the ledger can tell); `stopAll()` in afterEach stops them and closes their
 * connections.
 */
export function extraInstances() {
  const services: CommandService[] = [];
  const connections: NatsConnection[] = [];
  return {
    async start(l: Ledger, options: CommandServiceOptions = {}): Promise<CommandService> {
      const nc = await connectNats({ servers: NATS_URL, name: `extra-${l.prefix}` });
      connections.push(nc);
      const service = await CommandService.start(nc, { ...options, prefix: l.prefix });
      services.push(service);
      return service;
    },
    async stopAll(): Promise<void> {
      for (const s of services.splice(0)) await s.stop().catch(() => undefined);
      for (const nc of connections.splice(0)) await nc.close().catch(() => undefined);
    },
  };
}
