import { ORG_APP } from "../events/subjects.js";
import type { ProjectionScope } from "../projections/projection.js";
import type { EventStore } from "./event-store.js";

/**
 * The streams of a prefix: one per app, plus the org stream if it exists. Everything that follows the
 * ledger app by app (projections, the curator) finds its streams here, so a new kind of stream is taught
 * to all of them at once.
 */
export async function discoverScopes(store: EventStore): Promise<ProjectionScope[]> {
  const { names } = store;
  const appStreamPrefix = names.appStream("");
  const scopes: ProjectionScope[] = [];
  for await (const stream of store.jsm.streams.names()) {
    if (stream.startsWith(appStreamPrefix)) {
      scopes.push({ prefix: names.prefix, app: stream.slice(appStreamPrefix.length), stream });
    } else if (stream === names.orgStream()) {
      scopes.push({ prefix: names.prefix, app: ORG_APP, stream });
    }
  }
  return scopes.sort((a, b) => a.stream.localeCompare(b.stream));
}
