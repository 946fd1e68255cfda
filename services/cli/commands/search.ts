import type { Command } from "commander";
import { ORG_APP } from "../../../events/subjects.js";
import { MemledgerError } from "../../../schemas/errors.js";
import type { RetrievedMemory, SearchIndex, VectorSetup } from "../../../projections/search/index.js";
import type { RetrievalMode } from "../../../schemas/retrieval.js";
import type { VectorBackendConfig } from "../../../projections/vectors/backend.js";
import type { EventStore } from "../../event-store.js";
import type { ReadModelConfig } from "../../read-models.js";
import type { CliContext } from "../context.js";
import { printJson, printLine } from "../io.js";
import { asOfOptions, defined, isAsOf, modeOption, parseAsOf, snapshotOption, wholeNumber, type AsOfOptions } from "../options.js";
import { machinery, scopeOf, withStore } from "../read-models.js";

/** `memledger search`: hybrid search over the app's and the org's memories, from the index snapshots. */
export function register(program: Command, { io, globals }: CliContext): void {
  const search = modeOption(
    program
      .command("search")
      .description("hybrid (BM25 + vector) search over the app's and the org's active memories (loads the index snapshots, catches up from the log)")
      .argument("<query>", "words, identifiers or paths"),
  )
    .option("--k <n>", "how many results (default 10)", wholeNumber(1))
    .option("--scope <scope>", "only this scope")
    .option("--kind <kind>", "only this kind")
    .option("--explain", "show each result's rank and score per channel and the fused score");
  snapshotOption(asOfOptions(search, "as the memories stood at this time (ISO 8601), folded from the log"))
    .action(async (query: string, opts: { mode?: RetrievalMode; k?: number; scope?: string; kind?: string; explain?: boolean } & AsOfOptions, cmd: Command) => {
      const g = globals(cmd);
      const { readModelConfig, searchVectorSetup, retrieve } = await machinery();
      const config = readModelConfig(io.env);
      const mode = opts.mode ?? "hybrid";
      const asOf = isAsOf(opts) ? parseAsOf(opts) : undefined;
      const hits = await withStore(g, async (store) => {
        const vectors = mode === "bm25" ? undefined : await searchVectorSetup(store.nc, g.prefix, config, undefined, readerBackend(config));
        if (asOf) {
          // As of a moment: the memory records of then, folded from the log (services/audit/time-travel.ts),
          // ranked by the same retrieve, under the same read policy.
          const [{ searchAsOf }, { resolvePolicy }, { mayRead }] = await Promise.all([import("../../audit/time-travel.js"), import("../../auth/load.js"), import("../../../schemas/policy.js")]);
          const { policy } = await resolvePolicy(undefined, io.env);
          const readable = (scope: string) => mayRead(policy, g.as, scope);
          return (await searchAsOf(store, g.app, query, asOf, { k: opts.k ?? 10, mode, scope: opts.scope, kind: opts.kind, readable, vectors, noSnapshot: opts.snapshot === false })).hits;
        }
        // The org's memories are every app's: searched with the app's, marked origin "org".
        const apps = g.app === ORG_APP ? [ORG_APP] : [g.app, ORG_APP];
        const indexes: SearchIndex[] = [];
        for (const app of apps) indexes.push(await openCaughtUp(store, config, app, vectors));
        // Reads are governed: only scopes the acting actor (--as) may read under the policy (MEMLEDGER_POLICY,
        // else the built-in default), as the command service's search answers.
        const [{ resolvePolicy }, { readableTopK }, { ScopeReader, SessionDirectory, loadSessionWith }, { CommandHandler }] = await Promise.all([
          import("../../auth/load.js"),
          import("../../auth/guard.js"),
          import("../../auth/sessions.js"),
          import("../../command-handler.js"),
        ]);
        const { policy } = await resolvePolicy(undefined, io.env);
        const fetch = (k: number) => retrieve(indexes, query, defined({ k, mode, scope: opts.scope, kind: opts.kind }));
        // Session candidates: their sessions are read from the log, as the service does (services/auth/sessions.ts).
        const reader = new ScopeReader(policy, g.as, g.app, new SessionDirectory(loadSessionWith(new CommandHandler(store))), g.session);
        return reader.twoPass((r) => readableTopK(fetch, opts.k ?? 10, (hit) => r.mayRead(hit.scope)));
      });
      for (const [rank, hit] of hits.entries()) {
        if (g.json) printJson(io, { rank: rank + 1, ...hit });
        else printLine(io, describeHit(rank + 1, hit, opts.explain === true));
      }
      if (hits.length === 0 && !g.json) printLine(io, "no matching memory");
    });
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
