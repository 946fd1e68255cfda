import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { z } from "zod";
import { invalid } from "../../schemas/errors.js";
import { VectorPayloadSchema, type VectorPayload, type VectorSnapshotInfo } from "./vector-index.js";
import type { VectorStore } from "./vector-store.js";
import { syncDirectory } from "../durable-fs.js";

/**
 * On-disk form of a VectorStore, one directory:
 *
 *   vectors.f32     slotCount × dimensions float32, little-endian, slot order (freed slots are zeros)
 *   points.jsonl    one line per slot in use: {"slot":n,"id":"…","payload":{…}}
 *   <extras>        files an index adds (the HNSW graph), listed in the manifest like the others
 *   manifest.json   format, dimensions, counts, the caller's label, and each file's size and SHA-256
 *
 * Vectors are raw bytes rather than JSON: 100k × 512 floats is 200 MB as float32, several times that
 * as JSON text, and JSON of that size fails in V8 (Orama's persistence plugin does, at 100k).
 *
 * The directory is written beside the target under a temporary name and swapped in by rename, so a
 * reader finds the old snapshot or the new one. If the process dies between the two renames the
 * directory is missing and the projection rebuilds from the log, which is the truth.
 * Every file's digest is checked on load: a damaged snapshot is refused, never half-loaded.
 */
const FORMAT = "memledger-vectors";
const FORMAT_VERSION = 1;
const MANIFEST = "manifest.json";
const VECTORS = "vectors.f32";
const POINTS = "points.jsonl";

const Manifest = z.strictObject({
  format: z.literal(FORMAT),
  version: z.literal(FORMAT_VERSION),
  writer: z.string(),
  label: z.string(),
  dimensions: z.number().int().min(1),
  count: z.number().int().min(0),
  slotCount: z.number().int().min(0),
  littleEndian: z.literal(true),
  savedAt: z.string(),
  files: z.record(z.string(), z.strictObject({ bytes: z.number().int().min(0), sha256: z.string().regex(/^[0-9a-f]{64}$/) })),
});
type Manifest = z.infer<typeof Manifest>;

const PointLine = z.strictObject({ slot: z.number().int().min(0), id: z.string(), payload: VectorPayloadSchema });

const IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export interface SaveOptions {
  label: string;
  /** Who wrote it (the index's name), for people reading the manifest. */
  writer: string;
  /** Writes extra files into the (temporary) snapshot directory and returns their names. */
  writeExtras?: (dir: string) => Promise<string[]>;
}

export interface LoadedSnapshot {
  info: VectorSnapshotInfo;
  /** The verified snapshot directory, for an index that reads its extras from it. */
  dir: string;
  files: string[];
  slotCount: number;
  vectors: Float32Array;
  entries: { slot: number; id: string; payload: VectorPayload }[];
}

export async function saveVectorSnapshot(dir: string, store: VectorStore, options: SaveOptions): Promise<VectorSnapshotInfo> {
  if (!IS_LITTLE_ENDIAN) throw invalid("vector snapshots are written little-endian; this machine is big-endian");
  const parent = dirname(dir);
  await mkdir(parent, { recursive: true });
  const temp = join(parent, `.${basename(dir)}.${randomBytes(4).toString("hex")}.tmp`);
  await mkdir(temp);
  try {
    const files: Manifest["files"] = {};
    const vectors = store.packedVectors();
    files[VECTORS] = await writeFileDurably(join(temp, VECTORS), chunksOf(new Uint8Array(vectors.buffer, vectors.byteOffset, vectors.byteLength)));
    files[POINTS] = await writeFileDurably(join(temp, POINTS), pointLines(store));
    for (const name of (await options.writeExtras?.(temp)) ?? []) files[name] = await describeFile(join(temp, name));
    const info: VectorSnapshotInfo = { label: options.label, count: store.size, dimensions: store.dimensions, savedAt: new Date().toISOString() };
    const manifest: Manifest = {
      format: FORMAT,
      version: FORMAT_VERSION,
      writer: options.writer,
      label: info.label,
      dimensions: info.dimensions,
      count: info.count,
      slotCount: store.slotCount,
      littleEndian: true,
      savedAt: info.savedAt,
      files,
    };
    await writeFileDurably(join(temp, MANIFEST), [Buffer.from(JSON.stringify(manifest, null, 2) + "\n")]);
    await syncDirectory(temp);
    await swapIn(temp, dir);
    return info;
  } catch (error) {
    await rm(temp, { recursive: true, force: true });
    throw error;
  }
}

/** Reads and verifies a snapshot; throws `invalid` when it is missing, damaged or of other dimensions. */
export async function loadVectorSnapshot(dir: string, dimensions: number): Promise<LoadedSnapshot> {
  let manifest: Manifest;
  try {
    manifest = Manifest.parse(JSON.parse(await readFile(join(dir, MANIFEST), "utf8")));
  } catch (error) {
    throw invalid(`no readable vector snapshot in ${dir} (${MANIFEST}: ${error instanceof SyntaxError || (error as NodeJS.ErrnoException).code ? (error as Error).message : `not a ${FORMAT} v${FORMAT_VERSION} manifest`})`, { dir, cause: String(error) });
  }
  if (manifest.dimensions !== dimensions) {
    throw invalid(`vector snapshot has ${manifest.dimensions} dimensions, the index has ${dimensions}`, { dir });
  }
  for (const name of [VECTORS, POINTS]) if (!manifest.files[name]) throw invalid(`vector snapshot lists no ${name}`, { dir });
  for (const [name, expected] of Object.entries(manifest.files)) {
    if (name !== basename(name)) throw invalid(`vector snapshot names a file outside its directory: ${name}`, { dir });
    const actual = await describeFile(join(dir, name)).catch(() => null);
    if (!actual || actual.bytes !== expected.bytes || actual.sha256 !== expected.sha256) {
      throw invalid(`vector snapshot file ${name} is missing or damaged`, { dir });
    }
  }
  if (manifest.files[VECTORS]!.bytes !== manifest.slotCount * dimensions * 4) {
    throw invalid("vector snapshot's vector file does not match its slot count", { dir });
  }
  const vectors = new Float32Array(manifest.slotCount * dimensions);
  await readInto(join(dir, VECTORS), new Uint8Array(vectors.buffer));
  const entries: LoadedSnapshot["entries"] = [];
  const seenIds = new Set<string>();
  const seenSlots = new Set<number>();
  const lines = createInterface({ input: createReadStream(join(dir, POINTS), "utf8"), crlfDelay: Infinity });
  for await (const line of lines) {
    if (line.length === 0) continue;
    const entry = parsePointLine(line, dir);
    if (entry.slot >= manifest.slotCount || seenSlots.has(entry.slot) || seenIds.has(entry.id)) {
      throw invalid("vector snapshot has a point out of range or twice", { dir, id: entry.id });
    }
    seenSlots.add(entry.slot);
    seenIds.add(entry.id);
    entries.push(entry);
  }
  if (entries.length !== manifest.count) throw invalid("vector snapshot's point count does not match its manifest", { dir });
  return {
    info: { label: manifest.label, count: manifest.count, dimensions: manifest.dimensions, savedAt: manifest.savedAt },
    dir,
    files: Object.keys(manifest.files),
    slotCount: manifest.slotCount,
    vectors,
    entries,
  };
}

/** One line of points.jsonl; `invalid` (which loaders treat as "derive the vectors again") when it is not one. */
function parsePointLine(line: string, dir: string): z.infer<typeof PointLine> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch (error) {
    throw invalid(`vector snapshot in ${dir} has a line that is not JSON`, { dir, cause: String(error) });
  }
  const entry = PointLine.safeParse(parsed);
  if (!entry.success) throw invalid(`vector snapshot in ${dir} has a point line of the wrong shape`, { dir });
  return entry.data;
}

function* pointLines(store: VectorStore): Iterable<Buffer> {
  let batch: string[] = [];
  for (const slot of store.slots()) {
    batch.push(JSON.stringify({ slot, id: store.idAt(slot), payload: store.payloadAt(slot) }) + "\n");
    if (batch.length === 1000) {
      yield Buffer.from(batch.join(""));
      batch = [];
    }
  }
  if (batch.length > 0) yield Buffer.from(batch.join(""));
}

function* chunksOf(bytes: Uint8Array, size = 1 << 22): Iterable<Uint8Array> {
  for (let offset = 0; offset < bytes.length; offset += size) yield bytes.subarray(offset, Math.min(bytes.length, offset + size));
}

async function writeFileDurably(path: string, chunks: Iterable<Uint8Array>): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash("sha256");
  let bytes = 0;
  const handle = await open(path, "w");
  try {
    for (const chunk of chunks) {
      hash.update(chunk);
      bytes += chunk.length;
      await handle.write(chunk);
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
  return { bytes, sha256: hash.digest("hex") };
}

async function describeFile(path: string): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 22 })) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { bytes, sha256: hash.digest("hex") };
}

async function readInto(path: string, target: Uint8Array): Promise<void> {
  const handle = await open(path, "r");
  try {
    let offset = 0;
    while (offset < target.length) {
      const { bytesRead } = await handle.read(target, offset, Math.min(1 << 22, target.length - offset), offset);
      if (bytesRead === 0) throw invalid(`vector snapshot file ${path} ended early`);
      offset += bytesRead;
    }
  } finally {
    await handle.close();
  }
}

/** Puts `temp` at `dir`, replacing an older snapshot there. */
async function swapIn(temp: string, dir: string): Promise<void> {
  const existing = await stat(dir).catch(() => null);
  let old: string | null = null;
  if (existing) {
    old = `${temp}.old`;
    await rename(dir, old);
  }
  await rename(temp, dir);
  await syncDirectory(dirname(dir));
  if (old) await rm(old, { recursive: true, force: true });
}
