import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { randomBytes } from "node:crypto";
import { ChunkAssembler, chunkLines } from "./chunked-json.js";
import type { SavedFullTextIndex } from "./fulltext-channel.js";
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
 *   3. the saved Orama index as chunked JSON lines (no line holds more than a small piece)
 *   4. trailer: {"end":true,"lines":N}, so a file cut short is refused rather than half-loaded.
 */
const FORMAT = "memledger-search-snapshot";
const FORMAT_VERSION = 3;
/**
 * Version 1 had no branch lines; it is read as a snapshot without branches. Versions 1 and 2 name no
 * tokenizer: their BM25 index holds unstemmed tokens (tokenizer 1). Version 3 exists so that a build
 * older than the stemming tokenizer refuses a snapshot whose tokens it would not produce.
 */
const READABLE_VERSIONS = [1, 2, 3];

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
const currentFile = (dir: string, app: string): string => join(appDir(dir, app), "CURRENT");

export const newGeneration = (): string => `g${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`;

/** Writes `path` so that readers see the old content or the new, never a part: temp file, fsync, rename. */
async function writeAtomically(path: string, body: (emit: (chunk: string) => Promise<void>) => Promise<void>): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const temp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  const handle = await open(temp, "w");
  try {
    // Buffer small lines into ~1 MiB writes: one syscall per record line would dominate.
    let pending: string[] = [];
    let pendingLength = 0;
    const flush = async () => {
      if (pending.length === 0) return;
      const text = pending.join("");
      pending = [];
      pendingLength = 0;
      await handle.write(text);
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
}

export interface SnapshotStats {
  bytes: number;
  lines: number;
}

/**
 * Writes a snapshot of `index` at its applied sequence. The index must not change until the returned
 * promise resolves (the saved Orama index shares structures with the live one).
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
  let bytes = 0;
  let lines = 0;
  await writeAtomically(file, async (emit) => {
    const line = async (text: string) => {
      lines += 1;
      bytes += Buffer.byteLength(text) + 1;
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

/** Reads a snapshot line by line (no line is large) and rebuilds the index it holds. */
export async function readSnapshot(file: string): Promise<SearchIndex> {
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
      if (ended) throw new Error(`search snapshot ${file}: data after the trailer`);
      if (!header) {
        header = JSON.parse(line) as SnapshotHeader;
        if (header.format !== FORMAT || !READABLE_VERSIONS.includes(header.version)) {
          throw new Error(`search snapshot ${file}: unknown format ${header.format} v${header.version}`);
        }
      } else if (records.length < header.records) {
        records.push(JSON.parse(line) as MemoryRecord);
      } else if (branches.length < (header.branches ?? 0)) {
        branches.push(JSON.parse(line) as [string, number, string]);
      } else if (line.startsWith("{")) {
        const trailer = JSON.parse(line) as { end?: boolean; lines?: number };
        if (trailer.end !== true || trailer.lines !== count) throw new Error(`search snapshot ${file}: bad trailer`);
        ended = true;
      } else {
        fullText.add(line);
      }
    }
  } catch (error) {
    if (error instanceof SyntaxError) throw new Error(`search snapshot ${file}: unreadable line ${count}: ${error.message}`);
    throw error;
  } finally {
    lines.close();
    input.destroy();
    await handle.close().catch(() => undefined);
  }
  if (!header || !ended) throw new Error(`search snapshot ${file}: incomplete (no trailer)`);
  // A BM25 index built by another tokenizer holds tokens that queries no longer produce, and removing a
  // memory re-tokenizes its text: the saved index is dropped and BM25 rebuilt from the records instead.
  const sameTokens = (header.tokenizer ?? 1) === TOKENIZER_VERSION;
  return SearchIndex.restore({
    app: header.app,
    generation: header.generation,
    seq: header.seq,
    records,
    branches,
    fullText: sameTokens ? (fullText.value as SavedFullTextIndex | undefined) : undefined,
  });
}

export async function readCurrentGeneration(dir: string, app: string): Promise<string | null> {
  try {
    const text = (await readFile(currentFile(dir, app), "utf8")).trim();
    return text.length > 0 ? text : null;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw error;
  }
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
