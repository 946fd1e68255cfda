import { InvalidArgumentError, type Command } from "commander";
import { RETRIEVAL_MODES, type RetrievalMode } from "../../../schemas/retrieval.js";
import { embedderFromEnv } from "../../embeddings/config.js";
import { DEFAULT_FIELDS, loadDataset, type FieldNames } from "../../eval/dataset.js";
import { METRIC_NAMES, type MetricSummary } from "../../eval/metrics.js";
import type { EvalResult } from "../../eval/run.js";
import { printJson, printLine } from "../io.js";
import type { CliContext } from "../context.js";
import { commaList, wholeNumber } from "../options.js";

interface EvalCliOptions {
  corpus: string;
  queries: string;
  qrels: string;
  idField?: string;
  textField?: string;
  queryField?: string;
  scopeField?: string;
  categoryField?: string;
  mode: RetrievalMode | "all";
  excludeCategory?: string[];
  k?: number;
  keepCache: boolean;
  cachePrefix?: string;
  contextFields?: string[];
  previous?: number;
  titleField?: string;
  rrfK?: number;
  bm25Weight?: number;
  vectorWeight?: number;
  concurrency?: number;
}

const evalMode = (value: string): RetrievalMode | "all" => {
  if (value === "all" || (RETRIEVAL_MODES as readonly string[]).includes(value)) return value as RetrievalMode | "all";
  throw new InvalidArgumentError(`use ${RETRIEVAL_MODES.join(", ")} or all`);
};

const nonNegative = (value: string): number => {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError("expected a number >= 0");
  return n;
};

const HELP = `
Loads the corpus as memories through the real pipeline (propose + approve through a command service,
events on JetStream, the search projection with its vector channel) under a temporary prefix that is
removed afterwards, then searches each query within its scope (team:<scope-field value>).

Metrics, averaged over queries that have at least one relevant doc (the others are counted as skipped):
  recall@k  fraction of the query's relevant docs found in the top k
  ndcg@10   DCG@10 / ideal DCG@10, gains from the qrels score, discount log2(rank + 1)
  mrr       1 / rank of the first relevant doc in the top max(k, 10), 0 when none
"overall" leaves out --exclude-category; per-category figures list every category.

The embedding cache (KV bucket <cache-prefix>_embeddings, keyed by model and text) is kept by default,
so a second run embeds nothing; --no-keep-cache puts it under the temporary prefix and removes it too.`;

export function register(program: Command, { io, globals }: CliContext): void {
  program
    .command("eval")
    .description("retrieval quality on a corpus with queries and qrels: recall@5, recall@10, nDCG@10 and MRR per mode and category")
    .requiredOption("--corpus <file>", "documents, JSON lines")
    .requiredOption("--queries <file>", "queries, JSON lines")
    .requiredOption("--qrels <file>", "relevance, TSV: query-id corpus-id score")
    .option("--id-field <name>", `id field of docs and queries (default ${DEFAULT_FIELDS.id})`)
    .option("--text-field <name>", `doc text field (default ${DEFAULT_FIELDS.text})`)
    .option("--query-field <name>", `query text field (default ${DEFAULT_FIELDS.query})`)
    .option("--scope-field <name>", `field of docs and queries that scopes a search (default ${DEFAULT_FIELDS.scope})`)
    .option("--category-field <name>", `query category field (default ${DEFAULT_FIELDS.category})`)
    .option("--mode <mode>", `${RETRIEVAL_MODES.join(", ")} or all`, evalMode, "all")
    .option("--exclude-category <c>", "leave this category out of the overall figures (repeat or comma-separate)", commaList)
    .option("--k <n>", "results retrieved per query (at least 10)", wholeNumber(1))
    .option("--keep-cache", "keep the embedding cache across runs (default)", true)
    .option("--no-keep-cache", "remove the embedding cache with the temporary prefix")
    .option("--cache-prefix <prefix>", "prefix of the kept embedding cache bucket (default memledger_eval)")
    .option("--context-fields <a,b>", "doc fields indexed with the text as context (e.g. speaker,timestamp)", commaList)
    .option("--previous <n>", "index each doc with the text of the n docs before it in its scope", wholeNumber(0))
    .option("--title-field <name>", "doc field that becomes the memory title (default: the first line of the text)")
    .option("--rrf-k <n>", "RRF rank constant for hybrid (default the search default, 20)", nonNegative)
    .option("--bm25-weight <w>", "RRF weight of the BM25 channel (default the search default, 2)", nonNegative)
    .option("--vector-weight <w>", "RRF weight of the vector channel (default the search default, 1)", nonNegative)
    .option("--concurrency <n>", "commands in flight while loading (default 64)", wholeNumber(1))
    .addHelpText("after", HELP)
    .action(async (opts: EvalCliOptions, cmd: Command) => {
      const g = globals(cmd);
      const fields: FieldNames = {
        id: opts.idField ?? DEFAULT_FIELDS.id,
        text: opts.textField ?? DEFAULT_FIELDS.text,
        query: opts.queryField ?? DEFAULT_FIELDS.query,
        scope: opts.scopeField ?? DEFAULT_FIELDS.scope,
        category: opts.categoryField ?? DEFAULT_FIELDS.category,
      };
      const dataset = await loadDataset({ corpus: opts.corpus, queries: opts.queries, qrels: opts.qrels }, fields);
      const weights = opts.bm25Weight !== undefined || opts.vectorWeight !== undefined ? { bm25: opts.bm25Weight, vector: opts.vectorWeight } : undefined;
      const { runEval } = await import("../../eval/run.js");
      const result = await runEval(dataset, {
        servers: g.nats,
        modes: opts.mode === "all" ? RETRIEVAL_MODES : [opts.mode],
        k: opts.k,
        excludeCategories: opts.excludeCategory ?? [],
        keepCache: opts.keepCache,
        cachePrefix: opts.cachePrefix,
        // The model of MEMLEDGER_EMBEDDER (default USE-lite), built only when a mode needs vectors.
        embedder: () => embedderFromEnv(io.env),
        context: { contextFields: opts.contextFields ?? [], previous: opts.previous ?? 0, ...(opts.titleField !== undefined ? { titleField: opts.titleField } : {}) },
        rrfK: opts.rrfK,
        weights,
        concurrency: opts.concurrency,
        onProgress: (line) => io.stderr.write(`eval: ${line}\n`),
      });
      if (g.json) printJson(io, result.report);
      else for (const line of formatReport(result, opts.excludeCategory ?? [])) printLine(io, line);
    });
}

const fixed = (n: number) => n.toFixed(3).padStart(10);

function row(label: string, m: MetricSummary): string {
  return `${label.padEnd(22)}${String(m.n).padStart(6)}${METRIC_NAMES.map((name) => fixed(m[name])).join("")}`;
}

export function formatReport(result: EvalResult, excluded: readonly string[]): string[] {
  const lines: string[] = [];
  for (const [mode, report] of Object.entries(result.report)) {
    lines.push(`${mode}${" ".repeat(Math.max(1, 22 - mode.length))}${"n".padStart(6)}${METRIC_NAMES.map((name) => name.padStart(10)).join("")}`);
    for (const [category, m] of Object.entries(report.byCategory)) lines.push(row(`  category ${category}${excluded.includes(category) ? " (excl.)" : ""}`, m));
    lines.push(row(excluded.length > 0 ? `  overall (excl. ${excluded.join(",")})` : "  overall", report.overall));
    if (excluded.length > 0) lines.push(row("  overall (all)", report.all));
    lines.push("");
  }
  const t = result.timings;
  const searches = Object.entries(t.searchSeconds).map(([mode, s]) => `${mode} ${s.toFixed(1)} s`).join(", ");
  lines.push(`${result.docs} docs, ${result.queries} scored queries (${Object.values(result.report)[0]?.skipped ?? 0} without relevant docs skipped)`);
  lines.push(`load ${t.loadSeconds.toFixed(1)} s, project ${t.projectSeconds.toFixed(1)} s, search ${searches}; total ${t.totalSeconds.toFixed(1)} s`);
  if (result.embedding) lines.push(`embedding cache: ${result.embedding.hits} hits, ${result.embedding.misses} embedded`);
  return lines;
}
