import { createHash } from "node:crypto";
import { gunzipSync, gzipSync } from "node:zlib";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Objm, type ObjectStore } from "@nats-io/obj";
import { applyEvent, emptyRecord, type MemoryRecord as FilesRecord } from "../../projections/files/model.js";
import { readSnapshot, writeSnapshot } from "../../projections/search/snapshot.js";
import { evolveMemoryRecord } from "../../projections/search/memory-records.js";
import type { SearchIndex } from "../../projections/search/index.js";
import type { MemoryEvent } from "../../schemas/events.js";
import { ORG_APP } from "../../events/subjects.js";
import type { EventStore, StoredEvent } from "../event-store.js";
import {
  AS_OF_GENERATION,
  emptyFoldedState,
  emptyHydrationFold,
  exportHydrationFold,
  foldEvent,
  foldHydrationEvent,
  readBounded,
  restoreHydrationFold,
  type FoldedState,
  type HydrationFold,
  type HydrationFoldState,
  type Models,
} from "./as-of-state.js";
import type { AsOf } from "./history.js";
import { createJetStreamResource } from "../nats.js";

/**
 * As-of snapshots: the folded memory records of an app (as-of-state.ts) at checkpoints, every `every`
 * events of its stream, in the object store bucket `<prefix>_asof`. An as-of read loads the newest
 * snapshot at or below its bound and folds only the events after it, so it costs a snapshot load and at
 * most one interval of events instead of the whole stream.
 *
 * A snapshot is a cache of the log, never an authority over it. Before one is used:
 *   - its header names this prefix, app and stream, this format, and a sequence inside the bound (for a
 *     time bound: every event it folded is at or before that time);
 *   - the SHA-256 of its body matches the header (a damaged or cut object);
 *   - the event at its sequence in the log has the id and chain hash it was tagged with (a snapshot of a
 *     stream that was since deleted and recreated, or of another ledger, does not match);
 *   - a sample of its memories (up to SAMPLE) is folded again from their own subjects up to its sequence
 *     and must equal what it holds, in both models.
 * Anything wrong: the read folds from the stream's first event, and says why in `FoldReport`.
 *
 * A third part (`<name>.hydration`, since the header's `hydrationDigest`) holds what hydrate folds besides
 * the records: hydration's catalog and the claims (as-of-state.ts `HydrationFold`). It is checked by its
 * own header (the same snapshot's), its digest and the tagged event (the main object's check); a snapshot
 * without it (written before it existed) or with a damaged one still serves the other parts, and hydrate
 * then folds the catalog and claims from the stream's first event (`hydrationProblem` says why). A forgery by
 * someone who may write the bucket and recomputes every digest is not caught by these checks (only the
 * service and operators may; the auditor and agents may not): `--no-snapshot` folds from the log alone.
 */

export const SNAPSHOT_FORMAT = "memledger-asof-snapshot";
export const SNAPSHOT_VERSION = 1;
/** Events between checkpoints: an as-of read folds at most this many after the snapshot it loads. */
export const DEFAULT_SNAPSHOT_EVERY = 10_000;
/** Memories of a snapshot checked against the log before it is used. */
export const SAMPLE = 16;

export interface SnapshotHeader {
  format: typeof SNAPSHOT_FORMAT;
  version: typeof SNAPSHOT_VERSION;
  prefix: string;
  app: string;
  stream: string;
  seq: number;
  eventId: string | null;
  eventHash: string | null;
  maxTime: string | null;
  memories: number;
  /** sha256 hex of the files records (everything after the header line). */
  digest: string;
  /**
   * sha256 hex of the search index text in the second object (`<name>.search`: the same header line, then
   * that text), read only by reads that rank; search alone reads only that one.
   */
  searchDigest: string;
  /** sha256 hex of the hydration part's JSON (`<name>.hydration`); absent in snapshots written before it existed. */
  hydrationDigest?: string;
  savedAt: string;
}

/** Where in the bucket: sortable by sequence, one prefix per app; the search part beside it. */
export const snapshotName = (app: string, seq: number): string => `${app}/${String(seq).padStart(12, "0")}`;
const searchPartOf = (name: string): string => `${name}.search`;
const hydrationPartOf = (name: string): string => `${name}.hydration`;
const isPart = (name: string): boolean => name.endsWith(".search") || name.endsWith(".hydration");

const sha256 = (bytes: Uint8Array | string): string => createHash("sha256").update(bytes).digest("hex");

/** Opens the bucket; `create` for a writer (the service user or an operator). A reader gets null when it does not exist. */
export async function openSnapshots(store: EventStore, options: { create?: boolean } = {}): Promise<ObjectStore | null> {
  const objm = new Objm(store.nc);
  const bucket = store.names.asOfSnapshotsBucket();
  if (options.create) {
    return createJetStreamResource(`the as-of snapshots bucket ${bucket}`, () =>
      objm.create(bucket, { description: "memledger as-of snapshots: folded memory records at checkpoints (a cache of the log)" }),
    );
  }
  try {
    return await objm.open(bucket);
  } catch {
    // Missing, or not readable by this user: as-of reads then fold from the log.
    return null;
  }
}

/** The search index's own snapshot format (projections/search/snapshot.ts), as text, through a temporary file. */
async function searchSnapshotText(index: SearchIndex): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "memledger-asof-"));
  try {
    const file = join(dir, "search.snapshot");
    await writeSnapshot(file, index);
    return await readFile(file, "utf8");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function searchIndexOf(bytes: Uint8Array, app: string): Promise<SearchIndex> {
  const dir = await mkdtemp(join(tmpdir(), "memledger-asof-"));
  try {
    const file = join(dir, "search.snapshot");
    await writeFile(file, bytes);
    return await readSnapshot(file, { app });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The objects of a snapshot of `state` (folded with both models): the files records, the search part and,
 * given the hydration fold at the same sequence, the hydration part, each after the header.
 */
export async function encodeSnapshot(prefix: string, state: FoldedState, hydration?: HydrationFold): Promise<{ main: Uint8Array; search: Uint8Array; hydration: Uint8Array | null }> {
  if (!state.search || !state.files) throw new UnusableSnapshot("a snapshot needs both models folded");
  if (hydration && hydration.catalog.appliedSeq !== state.seq) throw new UnusableSnapshot(`the hydration fold is at ${hydration.catalog.appliedSeq}, the records at ${state.seq}`);
  const search = Buffer.from(await searchSnapshotText(state.search), "utf8");
  const hydrationBody = hydration ? Buffer.from(JSON.stringify(exportHydrationFold(hydration)), "utf8") : null;
  const body = JSON.stringify([...state.files.values()]);
  const header: SnapshotHeader = {
    format: SNAPSHOT_FORMAT,
    version: SNAPSHOT_VERSION,
    prefix,
    app: state.app,
    stream: state.stream,
    seq: state.seq,
    eventId: state.eventId,
    eventHash: state.eventHash,
    maxTime: state.maxTime,
    memories: state.files.size,
    digest: sha256(body),
    searchDigest: sha256(search),
    ...(hydrationBody ? { hydrationDigest: sha256(hydrationBody) } : {}),
    savedAt: new Date().toISOString(),
  };
  // Compressed: the object store client checks every object's SHA-256 in JavaScript as it reads it, which
  // was most of a snapshot load uncompressed (JSON records compress about tenfold).
  const line = Buffer.from(`${JSON.stringify(header)}\n`, "utf8");
  return {
    main: gzipSync(Buffer.concat([line, Buffer.from(body, "utf8")]), { level: 1 }),
    search: gzipSync(Buffer.concat([line, search]), { level: 1 }),
    hydration: hydrationBody ? gzipSync(Buffer.concat([line, hydrationBody]), { level: 1 }) : null,
  };
}

const gunzip = (bytes: Uint8Array, what: string): Buffer => {
  try {
    return gunzipSync(bytes);
  } catch (err) {
    throw new UnusableSnapshot(`its ${what} does not decompress: ${(err as Error).message}`);
  }
};

export class UnusableSnapshot extends Error {}

/** `writeSnapshots` stopped because its `held` said the caller is no longer the writer. */
export class NoLongerWriter extends Error {}

interface Expected {
  prefix: string;
  app: string;
  stream: string;
}

/** An object's header line (checked: format, prefix, app, stream) and the bytes after it. */
function splitHeader(bytes: Buffer, expect: Expected): { header: SnapshotHeader; rest: Buffer } {
  const cut = bytes.indexOf(0x0a);
  if (cut < 0) throw new UnusableSnapshot("no header line");
  let header: SnapshotHeader;
  try {
    header = JSON.parse(bytes.subarray(0, cut).toString("utf8")) as SnapshotHeader;
  } catch {
    throw new UnusableSnapshot("the header is not JSON");
  }
  if (header?.format !== SNAPSHOT_FORMAT || header.version !== SNAPSHOT_VERSION) throw new UnusableSnapshot(`unknown format ${String(header?.format)} v${String(header?.version)}`);
  if (header.prefix !== expect.prefix || header.app !== expect.app || header.stream !== expect.stream) {
    throw new UnusableSnapshot(`it is of ${header.prefix}/${header.app} (${header.stream}), not ${expect.prefix}/${expect.app} (${expect.stream})`);
  }
  return { header, rest: bytes.subarray(cut + 1) };
}

/** Parses and checks a snapshot's main object on its own (format, names, digest, shape); the log checks come after. */
export function decodeSnapshot(compressed: Uint8Array, expect: Expected): FoldedState & { header: SnapshotHeader } {
  const { header, rest } = splitHeader(gunzip(compressed, "records"), expect);
  const body = rest.toString("utf8");
  if (sha256(body) !== header.digest) throw new UnusableSnapshot("its records do not match their digest (damaged or edited)");
  let records: FilesRecord[];
  try {
    records = JSON.parse(body) as FilesRecord[];
  } catch {
    throw new UnusableSnapshot("its records are not JSON");
  }
  if (!Array.isArray(records) || records.length !== header.memories) throw new UnusableSnapshot("it lacks the records it announces");
  const files = new Map<string, FilesRecord>();
  for (const record of records) {
    const id = record?.state?.id;
    if (typeof id !== "string" || typeof record.seq !== "number" || record.seq > header.seq) throw new UnusableSnapshot("a files record is malformed");
    files.set(id, record);
  }
  return { header, app: header.app, stream: header.stream, seq: header.seq, eventId: header.eventId, eventHash: header.eventHash, maxTime: header.maxTime, files, search: null };
}

/** The search part of a snapshot, checked against its header (the main object's, when that was read too) and digest. */
export async function decodeSearchPart(compressed: Uint8Array, expect: Expected, main: SnapshotHeader | null): Promise<{ header: SnapshotHeader; search: SearchIndex }> {
  const { header, rest: bytes } = splitHeader(gunzip(compressed, "search part"), expect);
  if (main && !sameSnapshot(main, header)) throw new UnusableSnapshot("its two parts are of different snapshots");
  if (sha256(bytes) !== header.searchDigest) throw new UnusableSnapshot("its search part does not match its digest (damaged or edited)");
  let search: SearchIndex;
  try {
    search = await searchIndexOf(bytes, header.app);
  } catch (err) {
    throw new UnusableSnapshot(`its search part is unusable: ${(err as Error).message}`);
  }
  if (search.appliedSeq !== header.seq) throw new UnusableSnapshot(`its search part is at ${search.appliedSeq}, its header at ${header.seq}`);
  if (search.generation !== AS_OF_GENERATION) throw new UnusableSnapshot(`its search part is of generation ${search.generation}, not an as-of one`);
  return { header, search };
}

const sameSnapshot = (a: SnapshotHeader, b: SnapshotHeader): boolean =>
  a.seq === b.seq && a.eventId === b.eventId && a.digest === b.digest && a.searchDigest === b.searchDigest && a.hydrationDigest === b.hydrationDigest;

/**
 * The hydration part of a snapshot, checked against the main object's header (read and checked against
 * the log first) and its digest, then restored (the catalog's own version and shape checks).
 */
export function decodeHydrationPart(compressed: Uint8Array, expect: Expected, main: SnapshotHeader): HydrationFold {
  if (main.hydrationDigest === undefined) throw new UnusableSnapshot("it has no hydration part (written before there was one)");
  const { header, rest } = splitHeader(gunzip(compressed, "hydration part"), expect);
  if (!sameSnapshot(main, header)) throw new UnusableSnapshot("its hydration part is of a different snapshot");
  if (sha256(rest) !== header.hydrationDigest) throw new UnusableSnapshot("its hydration part does not match its digest (damaged or edited)");
  try {
    return restoreHydrationFold(JSON.parse(rest.toString("utf8")) as HydrationFoldState, header.app, header.seq);
  } catch (err) {
    throw new UnusableSnapshot(`its hydration part is unusable: ${(err as Error).message}`);
  }
}

/** Checks a decoded snapshot against the log: the tagged event, and a sample of memories folded again. */
async function checkAgainstLog(store: EventStore, state: FoldedState): Promise<void> {
  if (state.seq > 0) {
    const at = await store.eventAt(state.stream, state.seq);
    if (at === null || at.event.id !== state.eventId || (at.event.hash ?? null) !== state.eventHash) {
      throw new UnusableSnapshot(`the log's event at sequence ${state.seq} is not the one it was taken at (the stream changed since)`);
    }
  }
  const ids = state.files ? [...state.files.keys()] : state.search!.activeMemories().map((m) => m.memoryId);
  // Evenly spread over the memories (first appearance order), always including the first and last.
  const picks = ids.length <= SAMPLE ? ids : [...new Set(Array.from({ length: SAMPLE }, (_, i) => ids[Math.round((i * (ids.length - 1)) / (SAMPLE - 1))]!))];
  await Promise.all(
    picks.map(async (id) => {
      const subject = store.names.aggregate(state.app, "memory", id);
      let files = emptyRecord();
      let search: ReturnType<typeof evolveMemoryRecord>["record"] | undefined;
      for await (const stored of store.readSubject(state.stream, subject)) {
        if (stored.seq > state.seq) break;
        files = applyEvent(files, stored);
        search = evolveMemoryRecord(search, stored.event as MemoryEvent).record;
      }
      if (state.files && JSON.stringify(files) !== JSON.stringify(state.files.get(id))) throw new UnusableSnapshot(`memory ${id} differs from its events in the log`);
      if (state.search && JSON.stringify(search) !== JSON.stringify(state.search.record(id))) throw new UnusableSnapshot(`memory ${id}'s search record differs from its events in the log`);
    }),
  );
}

/** What a fold started from and how much it read. */
export interface FoldReport {
  /** The snapshot's sequence, or null when the fold started at the stream's first event. */
  snapshotSeq: number | null;
  /** Why a snapshot that was there was not used (null: none was needed, none existed, or it was used). */
  snapshotProblem: string | null;
  /** Events folded after the starting point. */
  folded: number;
  /** Reads that hydrate: the snapshot sequence the catalog and claims started from (null: the stream's first event). */
  hydrationFrom?: number | null;
  /** Why the snapshot's hydration part was not used, when the rest of it was. */
  hydrationProblem?: string | null;
}

interface Candidate {
  name: string;
  seq: number;
  maxTime: string | null;
}

/** Snapshots of the app in the bucket, newest first, from their descriptions (`{seq, maxTime}`). */
async function candidates(bucket: ObjectStore, app: string): Promise<Candidate[]> {
  const found: Candidate[] = [];
  for (const info of await bucket.list()) {
    if (info.deleted || !info.name.startsWith(`${app}/`) || isPart(info.name)) continue;
    try {
      const tag = JSON.parse(info.description ?? "") as { seq?: unknown; maxTime?: unknown };
      if (typeof tag.seq === "number") found.push({ name: info.name, seq: tag.seq, maxTime: typeof tag.maxTime === "string" ? tag.maxTime : null });
    } catch {
      // An object that is not ours: not a candidate.
    }
  }
  return found.sort((a, b) => b.seq - a.seq);
}

/** The sequence of the app's newest snapshot in the bucket (0: none), from the listing alone (nothing is checked). */
export async function newestSnapshotSeq(bucket: ObjectStore, app: string): Promise<number> {
  return (await candidates(bucket, app))[0]?.seq ?? 0;
}

const inside = (c: { seq: number; maxTime: string | null }, asOf: AsOf): boolean =>
  (asOf.seq === undefined || c.seq <= asOf.seq) && (asOf.time === undefined || c.maxTime === null || Date.parse(c.maxTime) <= Date.parse(asOf.time));

const getBlob = async (bucket: ObjectStore, name: string): Promise<Uint8Array> => {
  const bytes = await bucket.getBlob(name).catch((err: Error) => {
    throw new UnusableSnapshot(`cannot read ${name}: ${err.message}`);
  });
  if (bytes === null) throw new UnusableSnapshot(`${name} is missing`);
  return bytes;
};

/**
 * The newest usable snapshot of the app inside the bound, checked (see above), or the empty state with
 * the reason the newest candidate was refused. Only the newest candidate is tried: a wrong snapshot means
 * the cache is not to be trusted, so the read goes to the log. `models.search`: the search part too;
 * `hydration`: the hydration part too, refused on its own (`hydrationProblem`) without refusing the rest.
 */
export async function loadSnapshot(
  store: EventStore,
  app: string,
  asOf: AsOf,
  bucket: ObjectStore | null,
  models: Models,
  options: { hydration?: boolean } = {},
): Promise<{ state: FoldedState; problem: string | null; fromSnapshot: boolean; refusedSeq?: number; hydration: HydrationFold | null; hydrationProblem: string | null }> {
  const stream = app === ORG_APP ? store.names.orgStream() : store.names.appStream(app);
  const empty = () => emptyFoldedState(app, stream, models);
  const none = { hydration: null, hydrationProblem: null };
  if (!bucket) return { state: empty(), problem: null, fromSnapshot: false, ...none };
  const best = (await candidates(bucket, app).catch(() => [])).find((c) => inside(c, asOf));
  if (!best) return { state: empty(), problem: null, fromSnapshot: false, ...none };
  const expect = { prefix: store.names.prefix, app, stream };
  // Fetched beside the other parts (it is used only if they pass); a failure is kept as the value, judged below.
  const hydrationBytes = options.hydration && models.files ? getBlob(bucket, hydrationPartOf(best.name)).catch((err: unknown) => err as Error) : null;
  let state: FoldedState;
  let mainHeader: SnapshotHeader | null;
  try {
    const [main, searchBytes] = await Promise.all([models.files ? getBlob(bucket, best.name) : null, models.search ? getBlob(bucket, searchPartOf(best.name)) : null]);
    const fromMain = main ? decodeSnapshot(main, expect) : null;
    const fromSearch = searchBytes ? await decodeSearchPart(searchBytes, expect, fromMain?.header ?? null) : null;
    const header = (fromMain?.header ?? fromSearch?.header)!;
    mainHeader = fromMain?.header ?? null;
    if (!inside(header, asOf)) throw new UnusableSnapshot(`its header (seq ${header.seq}) is outside the bound its description promised`);
    state = {
      app,
      stream,
      seq: header.seq,
      eventId: header.eventId,
      eventHash: header.eventHash,
      maxTime: header.maxTime,
      files: fromMain?.files ?? null,
      search: fromSearch?.search ?? null,
    };
    await checkAgainstLog(store, state);
  } catch (err) {
    if (!(err instanceof UnusableSnapshot)) throw err;
    return { state: empty(), problem: `snapshot ${best.name}: ${err.message}`, fromSnapshot: false, refusedSeq: best.seq, ...none };
  }
  if (!options.hydration) return { state, problem: null, fromSnapshot: true, ...none };
  // The hydration part leans on the main object's checks (the tagged event, the sample): it must be of that very snapshot.
  try {
    if (!mainHeader || !hydrationBytes) throw new UnusableSnapshot("its hydration part is read only with its records");
    if (mainHeader.hydrationDigest === undefined) throw new UnusableSnapshot("it has no hydration part (written before there was one)");
    const bytes = await hydrationBytes;
    if (bytes instanceof Error) throw bytes instanceof UnusableSnapshot ? bytes : new UnusableSnapshot(bytes.message);
    const hydration = decodeHydrationPart(bytes, expect, mainHeader);
    return { state, problem: null, fromSnapshot: true, hydration, hydrationProblem: null };
  } catch (err) {
    if (!(err instanceof UnusableSnapshot)) throw err;
    return { state, problem: null, fromSnapshot: true, hydration: null, hydrationProblem: `snapshot ${best.name}: ${err.message}` };
  }
}

/**
 * The app's memory records as of the bound: from the newest usable snapshot (unless `noSnapshot`), then
 * every later event inside the bound. `search`: fold the search index too (reads that rank). `hydration`:
 * fold hydration's catalog and the claims too (hydrate): from the snapshot's hydration part when it has a
 * usable one, else from the stream's first event (reading the events before the snapshot for it alone).
 */
export async function foldAsOf(
  store: EventStore,
  app: string,
  asOf: AsOf,
  options: { files?: boolean; search?: boolean; hydration?: boolean; noSnapshot?: boolean | undefined; bucket?: ObjectStore | null } = {},
): Promise<{ state: FoldedState; hydration: HydrationFold | null; report: FoldReport }> {
  const bucket = options.noSnapshot ? null : options.bucket === undefined ? await openSnapshots(store) : options.bucket;
  const wantHydration = options.hydration === true;
  const loaded = await loadSnapshot(store, app, asOf, bucket, { files: options.files !== false || wantHydration, search: options.search === true }, { hydration: wantHydration });
  const { state, problem, fromSnapshot } = loaded;
  const start = state.seq;
  const hydration = wantHydration ? (loaded.hydration ?? emptyHydrationFold(app)) : null;
  let folded = 0;
  await readBounded(store, state.stream, hydration ? Math.min(hydration.catalog.appliedSeq, start) + 1 : start + 1, asOf, (stored) => {
    if (hydration) foldHydrationEvent(hydration, stored);
    if (stored.seq <= start) return;
    foldEvent(state, stored);
    folded++;
  });
  const report: FoldReport = { snapshotSeq: fromSnapshot ? start : null, snapshotProblem: problem, folded };
  if (wantHydration) Object.assign(report, { hydrationFrom: loaded.hydration ? start : null, hydrationProblem: loaded.hydrationProblem });
  return { state, hydration, report };
}

/**
 * Writes the missing checkpoints of the app: from the newest usable snapshot, folds the stream and saves
 * the state at each multiple of `every` it passes that has no snapshot yet (the state after the last
 * event at or below that multiple), with all three parts (the hydration fold comes from the snapshot's
 * part, or from the stream's first event when it has none). For the service user or an operator
 * (`memledger snapshot`, `memledger up`'s snapshot writer); readers never write.
 */
export async function writeSnapshots(
  store: EventStore,
  app: string,
  options: { every?: number | undefined; bucket?: ObjectStore; held?: () => boolean } = {},
): Promise<{ written: { seq: number; bytes: number }[]; lastSeq: number; report: FoldReport }> {
  const every = options.every ?? DEFAULT_SNAPSHOT_EVERY;
  const bucket = options.bucket ?? (await openSnapshots(store, { create: true }))!;
  const loaded = await loadSnapshot(store, app, {}, bucket, { files: true, search: true }, { hydration: true });
  const { state, problem, fromSnapshot, refusedSeq } = loaded;
  const hydration = loaded.hydration ?? emptyHydrationFold(app);
  // A refused snapshot is written again (same name: it replaces the bad one), from the log.
  const existing = new Set((await candidates(bucket, app)).map((c) => c.seq).filter((seq) => seq !== refusedSeq));
  const written: { seq: number; bytes: number }[] = [];
  const start = state.seq;
  let folded = 0;
  const save = async () => {
    if (state.seq === 0 || existing.has(state.seq)) return;
    // A writer that lost its lease (snapshot-writer.ts) stops before writing, so one instance writes an app's checkpoints.
    if (options.held && !options.held()) throw new NoLongerWriter(`no longer the snapshot writer of ${app}`);
    const parts = await encodeSnapshot(store.names.prefix, state, hydration);
    const name = snapshotName(app, state.seq);
    // The parts first: a main object is only listed once what it points at is there.
    await bucket.putBlob({ name: searchPartOf(name) }, parts.search);
    await bucket.putBlob({ name: hydrationPartOf(name) }, parts.hydration!);
    await bucket.putBlob({ name, description: JSON.stringify({ seq: state.seq, maxTime: state.maxTime }) }, parts.main);
    existing.add(state.seq);
    written.push({ seq: state.seq, bytes: parts.main.length + parts.search.length + parts.hydration!.length });
  };
  let boundary = (Math.floor(start / every) + 1) * every;
  await readBounded(store, state.stream, Math.min(hydration.catalog.appliedSeq, start) + 1, {}, async (stored) => {
    if (stored.seq <= start) {
      foldHydrationEvent(hydration, stored);
      return;
    }
    // A writer stopping or losing its lease does not fold on to the next checkpoint first (checked now and then: held() is cheap, not free).
    if (options.held && folded % 1_000 === 0 && !options.held()) throw new NoLongerWriter(`no longer the snapshot writer of ${app}`);
    // The state at the checkpoint is the one before the first event past it.
    if (stored.seq > boundary) {
      await save();
      boundary = Math.floor(stored.seq / every) * every + every;
    }
    foldEvent(state, stored);
    foldHydrationEvent(hydration, stored);
    folded++;
  });
  // A stream that ends exactly on a checkpoint.
  if (state.seq === boundary) await save();
  const report: FoldReport = { snapshotSeq: fromSnapshot ? start : null, snapshotProblem: problem, folded, hydrationFrom: loaded.hydration ? start : null, hydrationProblem: loaded.hydrationProblem };
  return { written, lastSeq: state.seq, report };
}
