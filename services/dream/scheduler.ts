import { hostname } from "node:os";
import { naming, ORG_APP } from "../../events/subjects.js";
import { ConflictReason, MemledgerError } from "../../schemas/errors.js";
import { discoverScopes } from "../discovery.js";
import { EventStore } from "../event-store.js";
import type { Component } from "../runtime.js";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Embedder } from "../../projections/embedder.js";
import type { DreamSettings, Phase } from "./phase.js";
import { runDream } from "./runner.js";

/**
 * The scheduled dream as a component of `memledger up` (off unless `up --dream` or MEMLEDGER_DREAM=1):
 * every `intervalMs` it looks at each app's gates and runs a consolidation when they are open. Several
 * instances may run it: the lock lets one runner per app through, the others skip that app this round
 * (lock_held is not an error here). A run that an instance's death left unfinished is resumed by the
 * next round of any instance, once the dead holder's lock lapsed.
 */
export interface DreamComponentOptions {
  intervalMs: number;
  settings: DreamSettings;
  lockTtlMs: number;
  /** The lock holder's name (default host and pid). */
  holder?: string;
  /** Default: the registered phases (services/dream/phases/index.ts). */
  phases?: readonly Phase[];
  /** For merge's hybrid similarity (services/dream/embedder.ts); without it merge scores BM25 alone. */
  embedder?: (ctx: { nc: NatsConnection; prefix: string }) => Promise<Embedder | undefined>;
  onProgress?: (line: string) => void;
}

export function dreamComponent(options: DreamComponentOptions): Component {
  return {
    name: "dream",
    async start(ctx) {
      const store = await EventStore.open(ctx.nc, naming(ctx.prefix), { replicas: ctx.replicas });
      const stopping = new AbortController();
      const holder = options.holder ?? `${hostname()}-${process.pid}`;
      const embedder = await options.embedder?.({ nc: ctx.nc, prefix: ctx.prefix });
      let round: Promise<void> = Promise.resolve();
      const once = async () => {
        for (const scope of await discoverScopes(store)) {
          if (stopping.signal.aborted) return;
          if (scope.app === ORG_APP) continue;
          try {
            const result = await runDream(
              { nc: ctx.nc, store, embedder, lock: { ttlMs: options.lockTtlMs, onError: (err) => ctx.onError(err, `dream lock ${scope.app}`) }, onProgress: options.onProgress },
              { app: scope.app, settings: options.settings, holder, signal: stopping.signal, ...(options.phases ? { phases: options.phases } : {}) },
            );
            if (result.status === "completed") options.onProgress?.(`dream ${scope.app}: run ${result.runId} completed${result.resumed ? " (resumed)" : ""}`);
          } catch (err) {
            if (stopping.signal.aborted) return;
            // Another instance is consolidating this app: its turn, not an error.
            if (err instanceof MemledgerError && err.details.reason === ConflictReason.lock_held) continue;
            ctx.onError(err, `dream ${scope.app}`);
          }
        }
      };
      const timer = setInterval(() => {
        round = round.then(once).catch((err) => ctx.onError(err, "dream"));
      }, options.intervalMs);
      timer.unref();
      round = once().catch((err) => ctx.onError(err, "dream"));
      return {
        async stop() {
          clearInterval(timer);
          stopping.abort();
          await round.catch(() => undefined);
        },
      };
    },
  };
}
