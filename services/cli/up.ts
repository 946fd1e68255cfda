import { defaultComponents, startMemledger } from "../runtime.js";
import { readModelConfig } from "../read-models.js";
import { resolvePolicy } from "../auth/load.js";
import { sessionReviewComponent } from "../dream/session-review.js";
import { snapshotWriterComponent } from "../audit/snapshot-writer.js";
import { dreamComponent } from "../dream/scheduler.js";
import { dreamEmbedder } from "../dream/embedder.js";
import { dreamEnabledFromEnv, dreamIntervalFromEnv, dreamLockTtlFromEnv, dreamSettingsFromEnv } from "../dream/settings.js";
import { printJson, printLine, redactUrl, toFailure, type Io } from "./io.js";
import type { GlobalOptions } from "./options.js";
import { needsOperator, startupProgress } from "./startup-progress.js";

const describe = (err: unknown): string => toFailure(err).message;

/**
 * Runs the ledger until SIGINT or SIGTERM, then drains and resolves 0. A second signal while draining
 * exits at once (1). Losing the connection for good (it reconnects forever otherwise) resolves 1.
 */
export async function up(globals: GlobalOptions, options: { replicas?: number; files?: string; policy?: string; sessionReview?: boolean; dream?: boolean; snapshotEvery?: number }, io: Io): Promise<number> {
  const log = (line: string) => io.stderr.write(`memledger: ${line}\n`);
  // --policy, else MEMLEDGER_POLICY, else the permissive built-in default (schemas/policy.ts).
  const { policy, source } = await resolvePolicy(options.policy, io.env);
  // Read-model state that needs the operator (see needsOperator): `up` stops at once, naming the file.
  let fatal: unknown;
  let onFatal: (() => void) | undefined;
  const progress = startupProgress(io);
  const runtime = await startMemledger({
    servers: globals.nats,
    prefix: globals.prefix,
    replicas: options.replicas,
    policy,
    components: [
      ...defaultComponents({ readModels: readModelConfig(io.env, { filesRoot: options.files }) }),
      // Session candidates are reviewed when their session ends (docs/candidates.md); --no-session-review turns it off.
      ...(options.sessionReview === false ? [] : [sessionReviewComponent({ onProgress: (line) => log(line) })]),
      // The scheduled dream (docs/consolidation.md): off unless --dream or MEMLEDGER_DREAM=1.
      ...(options.dream === true || dreamEnabledFromEnv(io.env)
        ? [dreamComponent({
            intervalMs: dreamIntervalFromEnv(io.env),
            settings: dreamSettingsFromEnv(io.env),
            lockTtlMs: dreamLockTtlFromEnv(io.env),
            embedder: ({ nc, prefix }) => dreamEmbedder(nc, prefix, io.env),
            onProgress: (line) => log(line),
          })]
        : []),
      // As-of snapshots every N events of each app (docs/audit.md), one writer per app; --snapshot-every 0 turns it off.
      ...(options.snapshotEvery === 0 ? [] : [snapshotWriterComponent({ ...(options.snapshotEvery !== undefined ? { every: options.snapshotEvery } : {}) })]),
    ],
    onError: (err, where) => {
      log(`error: ${where}: ${describe(err)}`);
      if (fatal === undefined && needsOperator(err, where)) {
        fatal = err;
        onFatal?.();
      }
    },
    onProgress: (p) => progress.update(p),
  });
  if (fatal !== undefined) {
    progress.done();
    await runtime.stop();
    log(`stopped: ${describe(fatal)}`);
    return 1;
  }

  let stopping = false;
  void (async () => {
    for await (const s of runtime.nc.status()) {
      if (s.type === "disconnect") log(`disconnected from NATS at ${s.server}; reconnecting`);
      else if (s.type === "reconnect") log(`reconnected to NATS at ${s.server}`);
    }
  })().catch(() => undefined);

  const nats = redactUrl(globals.nats);
  const ready = { status: "ready", prefix: runtime.prefix, nats, components: runtime.components, policy: source };
  if (globals.json) printJson(io, ready);
  else printLine(io, `memledger ready: serving commands on ${runtime.prefix}.cmd.> via ${nats} (${runtime.components.join(", ")}; policy: ${source})`);

  return new Promise<number>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        log(`${signal} again: exiting without waiting for the drain`);
        process.exit(1);
      }
      stopping = true;
      progress.done();
      log(`${signal}: draining`);
      runtime.stop().then(
        () => {
          detach();
          if (globals.json) printJson(io, { status: "stopped" });
          else printLine(io, "memledger stopped");
          resolve(0);
        },
        (err) => {
          detach();
          log(`error while stopping: ${describe(err)}`);
          resolve(1);
        },
      );
    };
    const detach = () => {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    onFatal = () => {
      if (stopping) return;
      stopping = true;
      progress.done();
      log(`stopping: ${describe(fatal)}`);
      void runtime.stop().finally(() => {
        detach();
        resolve(1);
      });
    };
    void runtime.closed.then((err) => {
      if (stopping) return;
      detach();
      log(`connection to NATS closed${err ? `: ${describe(err)}` : ""}`);
      resolve(1);
    });
  });
}
