import { Command } from "commander";
import cliProgress from "cli-progress";
import ms from "ms";
import { ORG_APP, naming } from "../../events/subjects.js";
import type { ProjectionScope } from "../../projections/projection.js";
import { MemledgerError, invalid } from "../../schemas/errors.js";
import type { RetrievedMemory, SearchIndex, VectorSetup } from "../../projections/search/index.js";
import { RETRIEVAL_MODES, type RetrievalMode } from "../../schemas/retrieval.js";
import type { VectorBackendConfig } from "../../projections/vectors/backend.js";
import type { EventStore } from "../event-store.js";
import { connectNats } from "../nats.js";
import type { RebuildProgress } from "../projection-runner.js";
import type { ReadModelConfig } from "../read-models.js";
import { printJson, printLine, type Io } from "./io.js";
import { defined, wholeNumber, type GlobalOptions } from "./options.js";

/**
 * The read-model machinery, loaded on first use: a claim or a status call should not pay for loading
 * Orama, hnswlib, the tokenizers and the embedder.
 */
const machinery = async () => {
  const [store, runner, models, search] = await Promise.all([
    import("../event-store.js"),
    import("../projection-runner.js"),
    import("../read-models.js"),
    import("../../projections/search/index.js"),
  ]);
  return { ...store, ...runner, ...models, ...search };
};

type Send = <R>(g: GlobalOptions, verb: string, payload: Record<string, unknown>) => Promise<R>;

/** `10m`, `90s`, `2h` or plain milliseconds. */
export function leaseMs(value: string): number {
  const parsed = /^\d+$/.test(value) ? Number(value) : ms(value as ms.StringValue);
  if (typeof parsed !== "number" || !Number.isFinite(parsed) || parsed <= 0) {
    throw invalid(`bad duration '${value}': use e.g. 90s, 10m, 2h`);
  }
  return parsed;
}

const scopeOf = (store: EventStore, app: string): ProjectionScope =>
  app === ORG_APP
    ? { prefix: store.names.prefix, app, stream: store.names.orgStream() }
    : { prefix: store.names.prefix, app, stream: store.names.appStream(app) };

export async function withStore<T>(g: GlobalOptions, work: (store: EventStore) => Promise<T>): Promise<T> {
  const nc = await connectNats({ servers: g.nats, name: "memledger-cli", reconnect: false });
  try {
    const { EventStore } = await machinery();
    return await work(await EventStore.open(nc, naming(g.prefix)));
  } finally {
    await nc.close().catch(() => undefined);
  }
}

/** A bar with events/s and ETA on a terminal; a plain line a second otherwise (logs, CI). */
function progressReporter(io: Io, json: boolean) {
  const tty = (io.stderr as NodeJS.WriteStream).isTTY === true && !json;
  let bar: cliProgress.SingleBar | undefined;
  let lastLine = 0;
  return {
    update(p: RebuildProgress) {
      if (tty) {
        bar ??= new cliProgress.SingleBar(
          {
            stream: io.stderr as NodeJS.WriteStream,
            format: `${p.projection} [{bar}] {percentage}% | {value}/{total} events | {rate} ev/s | ETA {eta_formatted}`,
          },
          cliProgress.Presets.shades_classic,
        );
        if (!bar.isActive) bar.start(Math.max(p.target, 1), 0, { rate: 0 });
        bar.setTotal(Math.max(p.target, p.seq, 1));
        bar.update(p.seq, { rate: p.eventsPerSecond });
        return;
      }
      const now = Date.now();
      if (now - lastLine < 1000) return;
      lastLine = now;
      const eta = p.etaSeconds === null ? "?" : `${Math.ceil(p.etaSeconds)}s`;
      io.stderr.write(`rebuild ${p.projection} ${p.stream}: ${p.seq}/${p.target} events, ${p.eventsPerSecond} ev/s, ETA ${eta}\n`);
    },
    done() {
      bar?.stop();
      bar = undefined;
    },
  };
}

export function registerReadModelCommands(program: Command, io: Io, globals: (cmd: Command) => GlobalOptions, send: Send): void {
  program
    .command("rebuild")
    .description("replay an app's stream from sequence 0 into fresh read models, then switch readers over")
    .argument("[name]", "files, claims, search or all", "all")
    .option("--files <dir>", "markdown file store root (env MEMLEDGER_FILES)")
    .option("--verify", "check every stored event against its full schema (default: structure only; see decodeEventStructural)")
    .action(async (name: string, opts: { files?: string; verify?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      await withStore(g, async (store) => {
        // With the connection, the search rebuild re-creates its vectors through the embedding cache.
        const { openReadModels, readModelConfig, rebuildProjections } = await machinery();
        const models = openReadModels(g.prefix, readModelConfig(io.env, { filesRoot: opts.files }), { nc: store.nc });
        try {
          const definitions = models.select(name);
          const scope = scopeOf(store, g.app);
          // One replay feeds every selected projection's fresh target (rebuildProjections): the log is
          // read and decoded once, and one target's I/O overlaps another's folding.
          const progress = progressReporter(io, g.json);
          const result = await rebuildProjections(store, definitions, scope, { verify: opts.verify ?? false, onProgress: (p) => progress.update(p) });
          progress.done();
          for (const definition of definitions) {
            const summary = { projection: definition.name, app: g.app, stream: scope.stream, ...result };
            if (g.json) printJson(io, summary);
            else printLine(io, `rebuilt ${definition.name} for ${g.app}: ${result.events} events to seq ${result.seq} in ${result.seconds.toFixed(2)} s`);
          }
        } finally {
          await models.close();
        }
      });
    });

  program
    .command("status")
    .description("each instance (id, host, data directory, last heartbeat, leader or follower of each shared read model) and each projection's checkpoint, lag and last error")
    .action(async (_opts, cmd: Command) => {
      const g = globals(cmd);
      await withStore(g, async (store) => {
        const [{ readStatuses }, { listInstances }] = await Promise.all([machinery(), import("../instance.js")]);
        const [statuses, instances] = await Promise.all([readStatuses(store), listInstances(store.nc, store.names)]);
        const live = new Set(instances.filter((i) => i.state === "live").map((i) => i.id));
        // Rows of instances that stopped or departed are history, not state; rows without an instance
        // come from builds before instances existed.
        const current = statuses.filter((s) => s.instance === undefined || s.instance === "local" || live.has(s.instance));
        const rowOf = async (s: (typeof statuses)[number]) => {
          // Lag now, not when the runner last wrote its status.
          const last = await store.lastSeq(s.stream).catch(() => s.position + s.lag);
          return { ...s, lag: Math.max(0, last - s.position) };
        };
        const describeRow = (row: Awaited<ReturnType<typeof rowOf>>) => {
          const problem = row.blocked
            ? `BLOCKED at seq ${row.blocked.seq}: ${row.blocked.error}`
            : row.lastError
              ? `last error at ${row.lastError.at}: ${row.lastError.error}`
              : "ok";
          // Sequences an admin set aside (memledger quarantine): skipped on purpose, shown so nobody wonders.
          const skipped = row.quarantined?.length ? `  skipped (quarantined): ${row.quarantined.join(", ")}` : "";
          return `${row.projection.padEnd(8)} ${row.app.padEnd(16)} checkpoint ${String(row.checkpoint).padStart(8)}  lag ${String(row.lag).padStart(6)}  ${problem}${skipped}`;
        };
        for (const instance of instances) {
          const { state, ...presence } = instance;
          if (g.json) {
            printJson(io, { kind: "instance", state, ...presence });
            continue;
          }
          const ago = Math.max(0, Math.round((Date.now() - Date.parse(presence.updatedAt)) / 1000));
          printLine(io, `instance ${presence.id}  ${state}  host ${presence.host}  pid ${presence.pid}  data ${presence.dataDir}  heartbeat ${ago}s ago`);
          for (const r of [...presence.roles].sort((a, b) => a.projection.localeCompare(b.projection) || a.app.localeCompare(b.app))) {
            const leader = r.role === "leader" ? "" : `  (leader: ${r.leader ?? "none yet"})`;
            printLine(io, `  ${r.projection.padEnd(8)} ${r.app.padEnd(16)} ${r.role.padEnd(8)} store ${r.store}${leader}`);
          }
          for (const s of current.filter((row) => row.instance === presence.id)) printLine(io, `  ${describeRow(await rowOf(s))}`);
        }
        const known = new Set(instances.map((i) => i.id));
        for (const s of current.filter((row) => !known.has(row.instance ?? ""))) {
          const row = await rowOf(s);
          if (g.json) printJson(io, row);
          else printLine(io, describeRow(row));
        }
        if (g.json) for (const s of current.filter((row) => known.has(row.instance ?? ""))) printJson(io, await rowOf(s));
        if (statuses.length === 0 && instances.length === 0 && !g.json) printLine(io, "no projection has reported yet: is `memledger up` running?");
      });
    });

  program
    .command("search")
    .description("hybrid (BM25 + vector) search over the app's and the org's active memories (loads the index snapshots, catches up from the log)")
    .argument("<query>", "words, identifiers or paths")
    .option("--mode <mode>", `${RETRIEVAL_MODES.join(", ")} (default hybrid)`, retrievalMode)
    .option("--k <n>", "how many results (default 10)", wholeNumber(1))
    .option("--scope <scope>", "only this scope")
    .option("--kind <kind>", "only this kind")
    .option("--explain", "show each result's rank and score per channel and the fused score")
    .action(async (query: string, opts: { mode?: RetrievalMode; k?: number; scope?: string; kind?: string; explain?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const { readModelConfig, searchVectorSetup, retrieve } = await machinery();
      const config = readModelConfig(io.env);
      const mode = opts.mode ?? "hybrid";
      const hits = await withStore(g, async (store) => {
        const vectors = mode === "bm25" ? undefined : await searchVectorSetup(store.nc, g.prefix, config, undefined, readerBackend(config));
        // The org's memories are every app's: searched with the app's, marked origin "org".
        const apps = g.app === ORG_APP ? [ORG_APP] : [g.app, ORG_APP];
        const indexes: SearchIndex[] = [];
        for (const app of apps) indexes.push(await openCaughtUp(store, config, app, vectors));
        // Reads are governed: only scopes the acting actor (--as) may read under the policy (MEMLEDGER_POLICY,
        // else the built-in default), as the command service's search answers.
        const [{ resolvePolicy }, { readableTopK }, { mayRead }] = await Promise.all([import("../auth/load.js"), import("../auth/guard.js"), import("../../schemas/policy.js")]);
        const { policy } = await resolvePolicy(undefined, io.env);
        const fetch = (k: number) => retrieve(indexes, query, defined({ k, mode, scope: opts.scope, kind: opts.kind }));
        return readableTopK(fetch, opts.k ?? 10, (hit) => mayRead(policy, g.as, hit.scope));
      });
      for (const [rank, hit] of hits.entries()) {
        if (g.json) printJson(io, { rank: rank + 1, ...hit });
        else printLine(io, describeHit(rank + 1, hit, opts.explain === true));
      }
      if (hits.length === 0 && !g.json) printLine(io, "no matching memory");
    });

  const claimOptions = (c: Command) =>
    c.option("--lock", "a lock on a module or path instead of a task").option("--key <key>", "idempotency key");

  claimOptions(
    program
      .command("claim")
      .description("claim a task (or, with --lock, a module or path) for a lease; conflict (exit 3) names the holder")
      .argument("<name>", "task id, or the path/module with --lock")
      .option("--ttl <duration>", "lease length, e.g. 90s, 10m, 2h (default 10m)", leaseMs)
      .option("--priority <n>", "1 (most urgent) to 5, when the claim opens the task", wholeNumber(1)),
  ).action(async (name: string, opts, cmd: Command) => {
    const g = globals(cmd);
    printJson(io, await send(g, "claim", defined({ name, kind: opts.lock ? "lock" : "task", ttlMs: opts.ttl, priority: opts.priority, key: opts.key, sessionId: g.session })));
  });

  claimOptions(
    program
      .command("renew")
      .description("extend your lease")
      .argument("<name>", "task id, or the path/module with --lock")
      .option("--ttl <duration>", "new lease length (default: the current one)", leaseMs),
  ).action(async (name: string, opts, cmd: Command) => {
    const g = globals(cmd);
    printJson(io, await send(g, "renew", defined({ name, kind: opts.lock ? "lock" : "task", ttlMs: opts.ttl, key: opts.key, sessionId: g.session })));
  });

  claimOptions(
    program
      .command("release")
      .description("give a claim back; --done marks the task finished")
      .argument("<name>", "task id, or the path/module with --lock")
      .option("--done", "the task is finished for good"),
  ).action(async (name: string, opts, cmd: Command) => {
    const g = globals(cmd);
    printJson(io, await send(g, "release", defined({ name, kind: opts.lock ? "lock" : "task", done: opts.done, key: opts.key, sessionId: g.session })));
  });

  program
    .command("claims")
    .description("live claims and locks (from the Redis projection)")
    .option("--agent <id>", "only what this agent holds")
    .action(async (opts: { agent?: string }, cmd: Command) => {
      const g = globals(cmd);
      const claims = await send<{ kind: string; name: string; holder: string; expiresAt: string }[]>(g, "claims", defined({ agent: opts.agent }));
      for (const c of claims) {
        if (g.json) printJson(io, c);
        else printLine(io, `${c.kind.padEnd(4)}  ${c.name}  held by ${c.holder} until ${c.expiresAt}`);
      }
    });

  program
    .command("tasks")
    .description("open tasks by priority")
    .option("--unclaimed", "only tasks nobody holds")
    .option("--limit <n>", "at most this many (default 100)", wholeNumber(1))
    .action(async (opts: { unclaimed?: boolean; limit?: number }, cmd: Command) => {
      const g = globals(cmd);
      const tasks = await send<{ name: string; priority: number; title: string | null; holder?: string | null }[]>(g, "tasks", defined({ unclaimed: opts.unclaimed, limit: opts.limit }));
      for (const t of tasks) {
        if (g.json) printJson(io, t);
        else printLine(io, `p${t.priority}  ${t.name}${t.title ? `  ${t.title}` : ""}${t.holder ? `  (held by ${t.holder})` : ""}`);
      }
    });

  program
    .command("task")
    .description("tasks: open")
    .command("open")
    .description("open a task others can claim")
    .argument("<name>", "task id")
    .option("--title <text>", "what it is")
    .option("--priority <n>", "1 (most urgent) to 5 (default 3)", wholeNumber(1))
    .option("--key <key>", "idempotency key")
    .action(async (name: string, opts, cmd: Command) => {
      const g = globals(cmd);
      printJson(io, await send(g, "open_task", defined({ name, title: opts.title, priority: opts.priority, key: opts.key, sessionId: g.session })));
    });
}

function retrievalMode(value: string): RetrievalMode {
  if (!(RETRIEVAL_MODES as readonly string[]).includes(value)) throw invalid(`bad mode '${value}': use ${RETRIEVAL_MODES.join(", ")}`);
  return value as RetrievalMode;
}

/**
 * The CLI's own vector index: embedded, loaded from the saved vectors or derived through the embedding
 * cache. Catching up must never write into the projection's Qdrant collection: a reader behind `up`
 * would put back versions `up` already replaced.
 */
function readerBackend(config: ReadModelConfig): VectorBackendConfig | null {
  if (!config.vectors) return null;
  return config.vectors.kind === "qdrant" ? { kind: "orama" } : config.vectors;
}

/** One app's index from its snapshot, with what the snapshot lacks folded in memory (the projection persists). */
async function openCaughtUp(store: EventStore, config: ReadModelConfig, app: string, vectors: VectorSetup | undefined): Promise<SearchIndex> {
  const { openSearchIndex } = await machinery();
  const index = await openSearchIndex(config.searchDir, app, vectors ? { vectors } : {});
  await store.replay(scopeOf(store, app).stream, { fromSeq: index.appliedSeq + 1 }, (events) => index.ingest(events)).catch((err) => {
    if (!(err instanceof MemledgerError && err.code === "not_found")) throw err;
  });
  return index;
}

function describeHit(rank: number, hit: RetrievedMemory, explain: boolean): string {
  const origin = hit.origin === "org" ? "  (org)" : "";
  const lines = [`${String(rank).padStart(2)}. ${hit.title}  [${hit.kind}, ${hit.scope}]  ${hit.memoryId}${origin}  score ${hit.score.toFixed(4)}`];
  if (explain) {
    const channel = (name: "bm25" | "vector") => {
      const c = hit.channels[name];
      return c ? `${name} #${c.rank} (${c.score.toFixed(4)})` : `${name} -`;
    };
    const identifiers = hit.identifiersMatched > 0 ? `  identifiers ${hit.identifiersMatched}` : "";
    lines.push(`    ${channel("bm25")}  ${channel("vector")}  fused ${hit.fused.toFixed(5)}${identifiers}`);
  }
  lines.push(`    ${hit.snippet}`);
  return lines.join("\n");
}
