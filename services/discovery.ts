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

export interface ScopeWatch {
  /** Stops looking; resolves when a look in progress has finished (no callback runs after). */
  stop(): Promise<void>;
}

export interface WatchScopesOptions {
  /** How often to look again for streams created since (default 2 s). */
  everyMs?: number;
  /** A failed look (or callback) is reported here; the next look happens all the same. */
  onError?: (err: unknown) => void;
}

/**
 * Calls `onScope` once for every stream of the prefix: those there now (awaited before this resolves,
 * so a caller is following them when it starts) and each one created later, found by looking again every
 * `everyMs`. Looks never overlap, and `onScope` is not called again for a scope it took. A scope is offered
 * again at the next look when `onScope` returns false (it reported its own failure) or throws (reported here). The one place that follows the ledger's streams as
 * they appear: the projection supervisor, the curator and the consolidation components all use it.
 */
export async function watchScopes(
  store: EventStore,
  onScope: (scope: ProjectionScope) => Promise<boolean | void>,
  options: WatchScopesOptions = {},
): Promise<ScopeWatch> {
  const taken = new Set<string>();
  let stopped = false;
  const look = async (): Promise<void> => {
    for (const scope of await discoverScopes(store)) {
      if (stopped) return;
      if (taken.has(scope.stream)) continue;
      taken.add(scope.stream);
      try {
        if ((await onScope(scope)) === false) taken.delete(scope.stream);
      } catch (err) {
        taken.delete(scope.stream);
        options.onError?.(err);
      }
    }
  };
  await look();
  let looking: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    looking = looking.then(look).catch((err) => options.onError?.(err));
  }, options.everyMs ?? 2000);
  timer.unref();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await looking.catch(() => undefined);
    },
  };
}
