import { readFile } from "node:fs/promises";
import { invalid } from "../../schemas/errors.js";
import { LIMITS } from "../../schemas/primitives.js";

/**
 * An evaluation set in the BEIR-like layout of eval/locomo: a corpus (JSON lines, one document each), queries
 * (JSON lines) and qrels (TSV `query-id corpus-id score`, an optional header). Parsing is pure (strings in,
 * values out); `loadDataset` only reads the files.
 */

export interface FieldNames {
  /** The document's and the query's id (default `id`). */
  id: string;
  /** The document text (default `text`). */
  text: string;
  /** The query text (default `question`). */
  query: string;
  /** Present on documents and queries; a query only searches documents of its own value (default `conv_id`). */
  scope: string;
  /** The query's category (default `category`); queries without one are category `all`. */
  category: string;
}

export const DEFAULT_FIELDS: FieldNames = { id: "id", text: "text", query: "question", scope: "conv_id", category: "category" };

export interface CorpusDoc {
  id: string;
  text: string;
  /** The scope-field value, as written. */
  scope: string;
  /** The whole record, for context fields. */
  fields: Record<string, unknown>;
}

export interface EvalQuery {
  id: string;
  text: string;
  scope: string;
  category: string;
}

export interface Dataset {
  corpus: CorpusDoc[];
  queries: EvalQuery[];
  /** query id → (doc id → graded relevance > 0). */
  qrels: Map<string, Map<string, number>>;
}

const asText = (value: unknown): string | undefined =>
  typeof value === "string" ? value : typeof value === "number" || typeof value === "boolean" ? String(value) : undefined;

function jsonLines(content: string, what: string): Record<string, unknown>[] {
  const rows: Record<string, unknown>[] = [];
  content.split("\n").forEach((line, i) => {
    if (line.trim() === "") return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (error) {
      throw invalid(`${what} line ${i + 1}: not JSON (${(error as Error).message})`);
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw invalid(`${what} line ${i + 1}: not a JSON object`);
    rows.push(parsed as Record<string, unknown>);
  });
  return rows;
}

function required(row: Record<string, unknown>, field: string, what: string, line: number): string {
  const value = asText(row[field]);
  if (value === undefined || value.trim() === "") throw invalid(`${what} record ${line}: field '${field}' is missing or empty`);
  return value;
}

export function parseCorpus(content: string, fields: FieldNames = DEFAULT_FIELDS): CorpusDoc[] {
  const seen = new Set<string>();
  return jsonLines(content, "corpus").map((row, i) => {
    const id = required(row, fields.id, "corpus", i + 1);
    if (seen.has(id)) throw invalid(`corpus: doc id '${id}' appears twice`);
    seen.add(id);
    return { id, text: required(row, fields.text, "corpus", i + 1), scope: required(row, fields.scope, "corpus", i + 1), fields: row };
  });
}

export function parseQueries(content: string, fields: FieldNames = DEFAULT_FIELDS): EvalQuery[] {
  return jsonLines(content, "queries").map((row, i) => ({
    id: required(row, fields.id, "queries", i + 1),
    text: required(row, fields.query, "queries", i + 1),
    scope: required(row, fields.scope, "queries", i + 1),
    category: asText(row[fields.category]) ?? "all",
  }));
}

/** `query-id corpus-id score` separated by tabs or spaces; a first line whose score is not a number is a header. Score <= 0 is not relevant. */
export function parseQrels(content: string): Map<string, Map<string, number>> {
  const qrels = new Map<string, Map<string, number>>();
  content.split("\n").forEach((line, i) => {
    if (line.trim() === "") return;
    const parts = line.trim().split(/\s+/);
    const score = Number(parts[2]);
    if (parts.length < 3 || !Number.isFinite(score)) {
      if (i === 0) return;
      throw invalid(`qrels line ${i + 1}: expected 'query-id corpus-id score'`);
    }
    if (score <= 0) return;
    const [queryId, docId] = parts as [string, string];
    let relevant = qrels.get(queryId);
    if (!relevant) qrels.set(queryId, (relevant = new Map()));
    relevant.set(docId, Math.max(relevant.get(docId) ?? 0, score));
  });
  return qrels;
}

async function readText(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    throw invalid(`cannot read ${what} ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

export async function loadDataset(files: { corpus: string; queries: string; qrels: string }, fields: FieldNames = DEFAULT_FIELDS): Promise<Dataset> {
  const [corpus, queries, qrels] = await Promise.all([
    readText(files.corpus, "--corpus").then((c) => parseCorpus(c, fields)),
    readText(files.queries, "--queries").then((c) => parseQueries(c, fields)),
    readText(files.qrels, "--qrels").then(parseQrels),
  ]);
  return { corpus, queries, qrels };
}

/**
 * The memory scope of a scope-field value: `team:<value>`, with characters a team name may not hold
 * replaced by `-` and the name cut to 64. Distinct values that collide after that are refused by
 * `scopeMapping`, never merged silently.
 */
export const memoryScopeOf = (value: string): string => `team:${value.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 64) || "-"}`;

export function scopeMapping(values: Iterable<string>): Map<string, string> {
  const mapping = new Map<string, string>();
  const owner = new Map<string, string>();
  for (const value of values) {
    if (mapping.has(value)) continue;
    const scope = memoryScopeOf(value);
    const other = owner.get(scope);
    if (other !== undefined) throw invalid(`scope values '${other}' and '${value}' both become ${scope}`);
    owner.set(scope, value);
    mapping.set(value, scope);
  }
  return mapping;
}

/** How documents become memories (the indexed text); see `memoryOfDoc`. */
export interface DocContextOptions {
  /** Fields of the doc put before its text on a first line, e.g. `speaker,timestamp`. */
  contextFields?: readonly string[];
  /** How many earlier docs of the same scope (in corpus order) are added to the body as context. */
  previous?: number;
  /** The doc field that becomes the memory's title; default the context line, else the text's first line. */
  titleField?: string;
}

export interface DocMemory {
  /** The idempotency key of its proposal: the doc id. */
  key: string;
  scope: string;
  title: string;
  body: string;
}

const TITLE_MAX = 120;

/** The first line of `text`, cut at a word boundary to fit a title. */
export function titleOf(text: string): string {
  const line = text.split("\n").find((l) => l.trim() !== "")?.trim().replace(/\s+/g, " ") ?? "";
  if (line.length <= TITLE_MAX) return line;
  const cut = line.slice(0, TITLE_MAX - 1);
  const space = cut.lastIndexOf(" ");
  return `${space > TITLE_MAX / 2 ? cut.slice(0, space) : cut}…`;
}

const clipBytes = (text: string, bytes: number): string => {
  if (Buffer.byteLength(text, "utf8") <= bytes) return text;
  return Buffer.from(text, "utf8").subarray(0, bytes).toString("utf8").replace(/\uFFFD+$/, "");
};

/**
 * The memory a corpus doc becomes. Context comes from the corpus only, at index time: the named fields of
 * the doc itself, and the text of the `previous` docs before it in the same scope (`previousTexts`, oldest
 * first). The doc id is the proposal's key, so its memory id is derived from it (`idForKey`).
 */
export function memoryOfDoc(doc: CorpusDoc, scope: string, options: DocContextOptions = {}, previousTexts: readonly string[] = []): DocMemory {
  if (Buffer.byteLength(doc.id, "utf8") > LIMITS.keyLength || /[\r\n]/.test(doc.id)) throw invalid(`doc id '${doc.id.slice(0, 40)}…' cannot be an idempotency key (one line, at most ${LIMITS.keyLength} bytes)`);
  const context = (options.contextFields ?? [])
    .map((field) => asText(doc.fields[field])?.trim())
    .filter((value): value is string => value !== undefined && value !== "")
    .join(", ");
  const previous = options.previous ?? 0;
  const parts = [...(previous > 0 ? previousTexts.slice(-previous) : []), doc.text];
  const body = clipBytes(parts.filter((p) => p.trim() !== "").join("\n"), LIMITS.bodyBytes);
  const named = options.titleField !== undefined ? asText(doc.fields[options.titleField])?.trim() : undefined;
  const title = titleOf(named || (context !== "" ? context : doc.text));
  return { key: doc.id, scope, title, body: context !== "" && named ? clipBytes(`${context}\n${body}`, LIMITS.bodyBytes) : body };
}
