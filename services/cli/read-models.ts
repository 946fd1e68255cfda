import type { ProjectionScope } from "../../projections/projection.js";
import { ORG_APP, naming } from "../../events/subjects.js";
import type { EventStore } from "../event-store.js";
import { connectNats, type ConnectOptions } from "../nats.js";
import type { GlobalOptions } from "./options.js";

/**
 * The read-model machinery, loaded on first use: a claim or a status call should not pay for loading
 * Orama, hnswlib, the tokenizers and the embedder.
 */
export const machinery = async () => {
  const [store, runner, models, search] = await Promise.all([
    import("../event-store.js"),
    import("../projection-runner.js"),
    import("../read-models.js"),
    import("../../projections/search/index.js"),
  ]);
  return { ...store, ...runner, ...models, ...search };
};

export const scopeOf = (store: EventStore, app: string): ProjectionScope =>
  app === ORG_APP
    ? { prefix: store.names.prefix, app, stream: store.names.orgStream() }
    : { prefix: store.names.prefix, app, stream: store.names.appStream(app) };


/** How `withStore` connects: also handed to a rebuild's search worker, which opens a connection of its own. */
export const storeConnection = (g: GlobalOptions): ConnectOptions => ({ servers: g.nats, name: "memledger-cli", reconnect: false });

export async function withStore<T>(g: GlobalOptions, work: (store: EventStore) => Promise<T>): Promise<T> {
  const nc = await connectNats(storeConnection(g));
  try {
    const { EventStore } = await machinery();
    return await work(await EventStore.open(nc, naming(g.prefix)));
  } finally {
    await nc.close().catch(() => undefined);
  }
}
