import type { Command } from "commander";
import cliProgress from "cli-progress";
import type { RebuildProgress } from "../../projection-runner.js";
import type { CliContext } from "../context.js";
import { printJson, printLine, type Io } from "../io.js";
import { machinery, scopeOf, storeConnection, withStore } from "../read-models.js";

/** `memledger rebuild` and `memledger status`: the projections' read models, rebuilt and reported on. */
export function register(program: Command, { io, globals }: CliContext): void {
  program
    .command("rebuild")
    .description("replay an app's stream from sequence 0 into fresh read models, then switch readers over")
    .argument("[name]", "files, claims, search or all", "all")
    .option("--files <dir>", "markdown file store root (env MEMLEDGER_FILES)")
    .option("--verify", "check every stored event against its full schema (default: structure only; see decodeEventStructural)")
    .action(async (name: string, opts: { files?: string; verify?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      await withStore(g, async (store) => {
        // With the connection, the search rebuild re-creates its vectors through the embedding cache; with
        // how it was opened, a worker thread rebuilding search opens its own (services/search-definition.ts).
        const { openReadModels, readModelConfig, rebuildProjections } = await machinery();
        const models = openReadModels(g.prefix, readModelConfig(io.env, { filesRoot: opts.files }), { nc: store.nc, connection: storeConnection(g) });
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
        const [{ readStatuses }, { listInstances }] = await Promise.all([machinery(), import("../../instance.js")]);
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
