import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { naming } from "../../events/subjects.js";
import type { LedgerEvent } from "../../schemas/events.js";
import { Curator, type CuratorOptions } from "../../services/curator/index.js";
import { EventStore, type StoredEvent } from "../../services/event-store.js";
import { connectNats } from "../../services/nats.js";
import { NATS_URL } from "../support/env.js";
import { eventually } from "../support/eventually.js";

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export { eventually };

/** A curator on its own connection, so a test can crash it by closing that connection. */
export async function startCurator(prefix: string, options: CuratorOptions = {}): Promise<{ curator: Curator; nc: NatsConnection }> {
  const nc = await connectNats({ servers: NATS_URL, name: `test-curator-${prefix}` });
  const curator = await Curator.start(nc, { prefix, discoverEveryMs: 100, ackWaitMs: 1_000, ...options });
  return { curator, nc };
}

export async function stopCurator(running: { curator: Curator; nc: NatsConnection }): Promise<void> {
  await running.curator.stop().catch(() => undefined);
  if (!running.nc.isClosed()) await running.nc.close();
}

export async function storeFor(nc: NatsConnection, prefix: string): Promise<EventStore> {
  return EventStore.open(nc, naming(prefix));
}

/** Every event of one subject, oldest first. */
export async function eventsOn(store: EventStore, stream: string, subject: string): Promise<StoredEvent[]> {
  const out: StoredEvent[] = [];
  try {
    for await (const stored of store.readSubject(stream, subject)) out.push(stored);
  } catch {
    return [];
  }
  return out;
}

/** Every message of a stream as stored: subject and raw text, for "this string appears nowhere" checks. */
export async function rawMessages(nc: NatsConnection, stream: string): Promise<{ seq: number; subject: string; text: string }[]> {
  const jsm = await jetstreamManager(nc);
  let last = 0;
  try {
    last = (await jsm.streams.info(stream)).state.last_seq;
  } catch {
    return [];
  }
  const out: { seq: number; subject: string; text: string }[] = [];
  for (let seq = 1; seq <= last; seq++) {
    const msg = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (msg) out.push({ seq, subject: msg.subject, text: new TextDecoder().decode(msg.data) });
  }
  return out;
}

/** The curator's decision on one promotion, once it is stored. */
export async function decisionOf(store: EventStore, app: string, promotionId: string): Promise<StoredEvent & { event: LedgerEvent }> {
  return eventually(`the decision on promotion ${promotionId}`, async () => (await eventsOn(store, store.names.appStream(app), store.names.promotion(app, promotionId)))[0]);
}
