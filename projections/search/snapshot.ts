import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { randomBytes } from "node:crypto";
import type { MemledgerError } from "../../schemas/errors.js";
import { isUnusableState as isUnusableSnapshot, unusableState } from "../unusable.js";
import { ChunkAssembler, chunkLines } from "./chunked-json.js";
import { isSavedFullTextIndex, type SavedFullTextIndex } from "./fulltext-channel.js";
import type { MemoryRecord } from "./memory-records.js";
import { SearchIndex } from "./search-index.js";
import { TOKENIZER_VERSION } from "./tokenizer.js";
import { syncDirectory } from "../durable-fs.js";

/**
 * Files of the search projection, per app:
 *
 *   <dir>/<app>/CURRENT                 the generation readers use (one line)
 *   <dir>/<app>/<generation>.snapshot   that generation's model and checkpoint, in one file
 *   <dir>/<app>/<generation>.vectors/   its vector channel (embedded indexes only), see vector-snapshot.ts
 *
 * A snapshot carries its checkpoint in its first line, so the model and the checkpoint can never
 * disagree: it is written to a temporary file, fsynced, and renamed over the previous one. A crash
 * leaves either the old snapshot or the new one. Lines:
 *   1. header: format, app, generation, checkpoint seq, number of records, (v3) tokenizer version
 *   2. one line per memory record
 *   2b. (v2) one line per [memoryId, version, branch] of versions proposed on a git branch
 *   3. the saved BM25 index as chunked JSON lines (no line holds more than a small piece): (v4) the
 *      compact index's internal ids and average lengths; (v1-v3) Orama's saved index
 *   4. trailer: {"end":true,"lines":N}, so a file cut short is refused rather than half-loaded.
 */
const FORMAT = "memledger-search-snapshot";
const FORMAT_VERSION = 4;
/**
 * Version 1 had no branch lines; it is read as a snapshot without branches. Versions 1 and 2 name no
 * tokenizer: their BM25 index holds unstemmed tokens (tokenizer 1). Version 3 exists so that a build
 * older than the stemming tokenizer refuses a snapshot whose tokens it would not produce. Version 4
 * saves the compact BM25 index (compact-bm25.ts) instead of Orama's: a v1-v3 snapshot's saved index is
 * dropped and BM25 rebuilt from its records, and builds that read only Orama's refuse a v4 file.
 */
const READABLE_VERSIONS = [1, 2, 3, 4];

interface SnapshotHeader {
  format: typeof FORMAT;
  version: number;
  app: string;
  generation: string;
  seq: number;
  records: number;
  /** Number of branch lines (v2). */
  branches?: number;
  /** The TOKENIZER_VERSION the saved BM25 index was built with (v3; 1 before). */
  tokenizer?: number;
  savedAt: string;
}

export const appDir = (dir: string, app: string): string => join(dir, app);
export const snapshotFile = (dir: string, app: string, generation: string): string => join(appDir(dir, app), `${generation}.snapshot`);
export const vectorsDir = (dir: string, app: string, generation: string): string => join(appDir(dir, app), `${generation}.vectors`);
export const currentFile = (dir: string, app: string): string => join(appDir(dir, app), "CURRENT");

export const newGeneration = (): string => `g${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`;

/**
 * Writes `path` so that readers see the old content or the new, never a part: temp file, fsync, rename.
 * Returns the bytes written.
 */
async function writeAtomically(path: string, body: (emit: (chunk: string) => Promise<void>) => Promise<void>): Promise<number> {
  await mkdir(dirname(path), { recursive: true });
  const temp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  const handle = await open(temp, "w");
  let written = 0;
  try {
    // Buffer small lines into ~1 MiB writes: one syscall per record line would dominate. The lines are
    // encoded straight into one reused buffer and written as bytes: joining them first copied every
    // byte once more, and a string write encoded it again in the thread pool at about a third of the
    // speed (a 1M-event rebuild's promote spent seconds writing its snapshot).
    let pending: string[] = [];
    let pendingLength = 0;
    let buffer = Buffer.alloc(0);
    const flush = async () => {
      if (pending.length === 0) return;
      // A UTF-16 code unit never takes more than 3 bytes in UTF-8.
      if (buffer.length < pendingLength * 3) buffer = Buffer.allocUnsafeSlow(pendingLength * 3);
      let length = 0;
      for (const chunk of pending) length += buffer.write(chunk, length, "utf8");
      pending = [];
      pendingLength = 0;
      written += length;
      // A write may take fewer bytes than it was given; the rest follows.
      for (let at = 0; at < length; ) at += (await handle.write(buffer, at, length - at)).bytesWritten;
    };
    await body(async (chunk) => {
      pending.push(chunk);
      pendingLength += chunk.length;
      if (pendingLength >= 1 << 20) await flush();
    });
    await flush();
    await handle.sync();
  } catch (error) {
    await handle.close().catch(() => undefined);
    await rm(temp, { force: true });
    throw error;
  }
  await handle.close();
  await rename(temp, path);
  await syncDirectory(dirname(path));
  return written;
}

export interface SnapshotStats {
  bytes: number;
  lines: number;
}

/**
 * Writes a snapshot of `index` at its applied sequence. The index must not change until the returned
 * promise resolves (the saved index shares its id list with the live one).
 */
export async function writeSnapshot(file: string, index: SearchIndex): Promise<SnapshotStats> {
  const state = index.exportState();
  const records = [...state.records];
  const header: SnapshotHeader = {
    format: FORMAT,
    version: FORMAT_VERSION,
    app: index.app,
    generation: index.generation,
    seq: state.seq,
    records: records.length,
    branches: state.branches.length,
    tokenizer: TOKENIZER_VERSION,
    savedAt: new Date().toISOString(),
  };
  let lines = 0;
  const bytes = await writeAtomically(file, async (emit) => {
    const line = async (text: string) => {
      lines += 1;
      await emit(`${text}\n`);
    };
    await line(JSON.stringify(header));
    for (const record of records) await line(JSON.stringify(record));
    for (const branch of state.branches) await line(JSON.stringify(branch));
    for (const chunk of chunkLines(state.fullText)) await line(chunk);
    await line(JSON.stringify({ end: true, lines: lines + 1 }));
  });
  return { bytes, lines };
}

/**
 * A snapshot (or CURRENT pointer) that exists but cannot be used: cut short, damaged, of a format this
 * build does not read, or of another app or generation than expected. See projections/unusable.ts: the
 * live projection sets it aside and rebuilds from the log. I/O failures keep their own error.
 */
export const unusableSnapshot = (file: string, problem: string): MemledgerError => unusableState(`search snapshot ${file}`, file, problem);

/** What the first line promises, read before the rest (to say how much is being loaded). */
export interface SnapshotSummary {
  version: number;
  app: string;
  generation: string;
  seq: number;
  records: number;
}

const wholeNumber = (value: unknown): value is number => typeof value === "number" && Number.isInteger(value) && value >= 0;

function checkHeader(file: string, parsed: unknown): SnapshotHeader {
  const header = parsed as Partial<SnapshotHeader> | null;
  if (header === null || typeof header !== "object") throw unusableSnapshot(file, "its first line is not a header");
  if (header.format !== FORMAT || !READABLE_VERSIONS.includes(header.version as number)) {
    throw unusableSnapshot(file, `unknown format ${String(header.format)} v${String(header.version)} (this build reads ${FORMAT} v${READABLE_VERSIONS.join(", v")})`);
  }
  const fieldsOk =
    typeof header.app === "string" &&
    typeof header.generation === "string" &&
    wholeNumber(header.seq) &&
    wholeNumber(header.records) &&
    (header.branches === undefined || wholeNumber(header.branches)) &&
    (header.tokenizer === undefined || wholeNumber(header.tokenizer));
  if (!fieldsOk) throw unusableSnapshot(file, "its header lacks the app, generation, sequence or counts");
  return header as SnapshotHeader;
}

/**
 * Reads a snapshot line by line (no line is large) and rebuilds the index it holds. A missing file fails
 * with ENOENT, an unreadable one with its I/O error; anything wrong with the content is
 * {@link unusableSnapshot}. `onHeader` hears what the file holds before the (possibly long) load.
 */
export async function readSnapshot(
  file: string,
  options: { app?: string; generation?: string; onHeader?: (summary: SnapshotSummary) => void } = {},
): Promise<SearchIndex> {
  // Opened first so that a missing file fails here with ENOENT (readline does not surface stream errors well).
  const handle = await open(file, "r");
  const input = handle.createReadStream({ encoding: "utf8" });
  const lines = createInterface({ input, crlfDelay: Infinity });
  let header: SnapshotHeader | undefined;
  const records: MemoryRecord[] = [];
  const branches: [string, number, string][] = [];
  const fullText = new ChunkAssembler();
  let count = 0;
  let ended = false;
  try {
    for await (const line of lines) {
      count += 1;
      if (ended) throw unusableSnapshot(file, "data after the trailer");
      if (!header) {
        header = checkHeader(file, JSON.parse(line));
        // A file copied or renamed from elsewhere would pair this checkpoint with another model.
        if (options.app !== undefined && header.app !== options.app) throw unusableSnapshot(file, `it holds app ${header.app}, not ${options.app}`);
        if (options.generation !== undefined && header.generation !== options.generation) {
          throw unusableSnapshot(file, `it holds generation ${header.generation}, not ${options.generation}`);
        }
        options.onHeader?.({ version: header.version, app: header.app, generation: header.generation, seq: header.seq, records: header.records });
      } else if (records.length < header.records) {
        const record = JSON.parse(line) as MemoryRecord | null;
        if (record === null || typeof record !== "object" || Array.isArray(record)) throw unusableSnapshot(file, `line ${count} is not a memory record`);
        records.push(record);
      } else if (branches.length < (header.branches ?? 0)) {
        const branch = JSON.parse(line) as unknown;
        if (!Array.isArray(branch) || branch.length !== 3) throw unusableSnapshot(file, `line ${count} is not a branch entry`);
        branches.push(branch as [string, number, string]);
      } else if (line.startsWith("{")) {
        const trailer = JSON.parse(line) as { end?: boolean; lines?: number };
        if (trailer.end !== true || trailer.lines !== count) throw unusableSnapshot(file, `bad trailer at line ${count}`);
        ended = true;
      } else {
        fullText.add(line);
      }
    }
  } catch (error) {
    if (isUnusableSnapshot(error) || (error as NodeJS.ErrnoException).code !== undefined) throw error;
    // JSON that does not parse, or chunked JSON whose paths do not fit together.
    throw unusableSnapshot(file, `line ${count}: ${error instanceof Error ? error.message : String(error)}`);
  } finally {
    lines.close();
    input.destroy();
    await handle.close().catch(() => undefined);
  }
  if (!header) throw unusableSnapshot(file, "it is empty");
  if (!ended) throw unusableSnapshot(file, `it was cut short after line ${count} (no trailer)`);
  // A BM25 index built by another tokenizer holds tokens that queries no longer produce, and one saved by
  // Orama (before v4) is not this index: either is dropped and BM25 rebuilt from the records instead.
  const sameTokens = (header.tokenizer ?? 1) === TOKENIZER_VERSION && header.version >= 4;
  try {
    return SearchIndex.restore({
      app: header.app,
      generation: header.generation,
      seq: header.seq,
      records,
      branches,
      fullText: sameTokens ? savedIndexOf(file, fullText.value) : undefined,
    });
  } catch (error) {
    // Lines that parse but do not fit together (records and saved index disagree, a record of the wrong shape).
    throw unusableSnapshot(file, error instanceof Error ? error.message : String(error));
  }
}

function savedIndexOf(file: string, value: unknown): SavedFullTextIndex | undefined {
  if (value === undefined) return undefined;
  if (!isSavedFullTextIndex(value)) throw unusableSnapshot(file, "its saved BM25 index is not a compact index");
  return value;
}

/** Generation names `newGeneration` makes (older builds made the same), checked before they become paths. */
const GENERATION = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * The generation CURRENT names, or null when there is no CURRENT. A CURRENT that names no possible
 * generation (damaged) is {@link unusableSnapshot}, about the CURRENT file.
 */
export async function readCurrentGeneration(dir: string, app: string): Promise<string | null> {
  let text: string;
  try {
    text = (await readFile(currentFile(dir, app), "utf8")).trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw error;
  }
  if (!GENERATION.test(text)) {
    throw unusableState(`search pointer ${currentFile(dir, app)}`, currentFile(dir, app), `it names no generation (${JSON.stringify(text.slice(0, 40))})`);
  }
  return text;
}

export async function writeCurrentGeneration(dir: string, app: string, generation: string): Promise<void> {
  await writeAtomically(currentFile(dir, app), async (emit) => emit(`${generation}\n`));
}

export async function fileExists(path: string): Promise<boolean> {
  try {
    await (await open(path, "r")).close();
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw error;
  }
}
