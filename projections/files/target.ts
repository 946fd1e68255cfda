import { closeSync, openSync, readSync, writeFileSync } from "node:fs";
import { mkdir, open, readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { ConflictReason, conflict, internal } from "../../schemas/errors.js";
import { isUnusableState, unusableState } from "../unusable.js";
import type { Checkpoint, ProjectedEvent, ProjectionTarget } from "../projection.js";
import { isNotFound, readTextIfExists, removeLeftoverTemps, writeFileAtomic } from "./fs.js";
import { scratchpadIndexPath, scratchpadOwner, type AppLayout } from "./layout.js";
import { applyEvent, emptyRecord, indexEntryOf, isMemoryEvent, type IndexEntry, type MemoryRecord } from "./model.js";
import { CHECKPOINT_FILE, INDEX_FILE, STATE_DIR, memoryFilePath, memoryStatePath, resolveInside } from "./paths.js";
import { renderMemoryFile, renderMemoryIndex, renderScratchpadIndex } from "./render.js";
import { FileWriter } from "./writer.js";

/** The on-disk form of one memory's record (`.state/<id>.json`). */
interface StoredRecord extends MemoryRecord {
  format: 1;
}

export interface FilesTargetOptions {
  /** fsync every file before its rename (survives an OS crash; much slower). Default false. */
  sync?: boolean;
  /**
   * Test hook: the target fails (as a crash would) once it has written this many files, so tests can
   * leave a commit half-written and check that resuming from the checkpoint still converges.
   */
  failAfterWrites?: number;
  /**
   * Set by `openFresh`: the generation is invisible until promoted and never resumed (a failed rebuild
   * starts another), so files are written in place rather than through a temporary and a rename, and
   * each commit writes the state of every memory it touched as one bundle file instead of one file per
   * memory (see STATE_BUNDLE). Readers never see the directory before the commit that precedes promote.
   */
  fresh?: boolean;
  /**
   * Fresh targets only: once this many memories were touched since the last commit, `apply` writes the
   * files and one state bundle of the half touched least recently and drops them from memory (default
   * 4096). This bounds what a rebuild holds however long the log is (at 1M events it held every memory
   * until its one commit), and starts writing files while the log is still being read. A memory touched
   * again after a spill is read back (from the previous spill, kept in memory, or from its bundle) and
   * written again.
   */
  spillRecords?: number;
}

const DEFAULT_SPILL_RECORDS = 4096;

/**
 * `.state/bundle-<seq>.jsonl`: the records a fresh target's commit at `seq` wrote, one JSON line each.
 * Loading applies bundles in sequence order, then the per-memory files, which only a live target writes
 * (after promote), so they are always newer than any bundle.
 */
/**
 * A session's candidates get no file: the tree is read by every agent on the machine and carries no
 * reader's identity, while a candidate is its session's agent's alone (docs/candidates.md). They are read
 * through the governed service (show, search, hydrate); their state is still kept, like every memory's.
 */
const hasFile = (record: MemoryRecord): boolean => !(record.state.scope ?? "app").startsWith("session:");

const BUNDLE = /^bundle-([0-9]+)\.jsonl$/;
const bundleName = (seq: number) => `bundle-${seq}.jsonl`;

/** Where a memory's record sits inside a bundle file. */
interface BundledRecord {
  file: string;
  offset: number;
  length: number;
}

/** A stored record as far as loading relies on it (its memory id and the fields the index entry reads). */
function checkRecord(file: string, parsed: unknown): StoredRecord {
  const record = parsed as Partial<StoredRecord> | null;
  const state = record?.state as { id?: unknown } | undefined;
  if (record === null || typeof record !== "object" || record.format !== 1 || !state || typeof state !== "object" || !("id" in state)) {
    throw unusableState(`file store state ${file}`, file, "it holds no memory record of format 1");
  }
  return record as StoredRecord;
}

/** Files read or written at once: enough to keep libuv's thread pool busy, few enough to bound open files. */
const IO_CONCURRENCY = 32;

/** Runs `run` over `items`, a chunk at a time; a failure surfaces only after its whole chunk has settled,
 * so no write is still in flight when a commit rejects and the target is reopened. */
async function inChunks<T>(items: readonly T[], run: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += IO_CONCURRENCY) {
    const results = await Promise.allSettled(items.slice(i, i + IO_CONCURRENCY).map(run));
    const failure = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failure) throw failure.reason;
  }
}

/**
 * One generation directory of one app, as a projection target.
 *
 * Persisted per generation:
 *   <app>/<scope…>/<id>.md   what readers read
 *   MEMORY.md                the capped index
 *   .state/<id>.json         each memory's full record (MemoryState with pending versions, provenance, seq)
 *   .checkpoint.json         { seq, generation }, written last by every commit
 *
 * One state file per memory (rather than a state file per batch) keeps a commit proportional to what
 * the batch touched, makes the state of one memory readable and replaceable on its own, and needs no
 * compaction. In memory the target keeps only the index entries of all memories (small) and the full
 * records of the memories touched since the last commit; other records are read from disk when an event
 * touches them.
 */
export class FilesTarget implements ProjectionTarget {
  private committed: Checkpoint;
  /** Index entries of every memory with something to show, by memory id. */
  private readonly entries = new Map<string, IndexEntry>();
  /** Memories with ids on disk (with or without an index entry): their records must be read, not started afresh. */
  private readonly stored = new Set<string>();
  /** Memories whose latest record is in a bundle (no per-memory state file is newer). */
  private readonly bundled = new Map<string, BundledRecord>();
  /**
   * Records touched since the last commit: written once each by the next commit (or spill). In the order
   * they were last touched, least recently first (a spill writes the coldest).
   */
  private readonly touched = new Map<string, MemoryRecord>();
  private indexOnDisk = false;
  private readonly knownDirs = new Set<string>();
  private writes = 0;
  private closed = false;
  /** Set by `fence`: the leader token this target writes under (services/leader-lease.ts). */
  private fenceToken: number | undefined;
  /** Fresh targets: writes go to a worker thread, in order (see writer.ts); commit drains it. */
  private readonly writer: FileWriter | undefined;
  /** Fresh targets: descriptors of the bundles read back so far, open until close. */
  private readonly bundleFds = new Map<string, number>();
  /** Fresh targets: the records the last spill wrote, so that a memory touched again soon is not read back from disk. */
  private spilled = new Map<string, MemoryRecord>();
  /** The sequence of the last state bundle written: bundles are named by it and loaded in its order. */
  private lastBundleSeq = 0;
  /** The highest sequence applied (a spill names its bundle by it). */
  private appliedSeq = 0;
  /** Scratchpad owners of memories spilled since the last commit: their indexes are the commit's to write. */
  private readonly spilledOwners = new Set<string>();
  private spilledSinceCommit = false;

  private constructor(
    readonly layout: AppLayout,
    readonly generation: string,
    readonly dir: string,
    private readonly options: FilesTargetOptions,
  ) {
    this.committed = { seq: 0, generation };
    if (options.fresh && !options.sync) this.writer = new FileWriter(dir);
  }

  /** Opens a generation directory that exists, resuming from its checkpoint and state files. */
  static async open(layout: AppLayout, generation: string, options: FilesTargetOptions = {}): Promise<FilesTarget> {
    const target = new FilesTarget(layout, generation, layout.generationDir(generation), options);
    await target.load();
    return target;
  }

  get checkpoint(): Checkpoint {
    return { ...this.committed };
  }

  /** True when events were applied since the last commit (promote refuses such a target). */
  get hasUncommitted(): boolean {
    return this.touched.size > 0 || this.spilledSinceCommit;
  }

  /**
   * Reads the checkpoint and every state record. Content that does not parse or does not fit (a file cut
   * short, a checkpoint of another generation) is `unusableState` naming the file (the projection sets
   * the generation aside and starts again from the log); I/O errors are thrown as they are.
   */
  private async load(): Promise<void> {
    let file = this.dir;
    try {
      await this.loadFrom((next) => (file = next));
    } catch (error) {
      if (isUnusableState(error) || (error as NodeJS.ErrnoException).code !== undefined) throw error;
      throw unusableState(`file store state ${file}`, file, error instanceof Error ? error.message : String(error));
    }
  }

  private async loadFrom(reading: (file: string) => void): Promise<void> {
    await removeLeftoverTemps(this.dir);
    const checkpointFile = path.join(this.dir, CHECKPOINT_FILE);
    reading(checkpointFile);
    const checkpointText = await readTextIfExists(checkpointFile);
    if (checkpointText !== null) {
      let saved: Partial<Checkpoint> | null;
      try {
        saved = JSON.parse(checkpointText) as Partial<Checkpoint> | null;
      } catch (error) {
        throw unusableState(`file store checkpoint ${checkpointFile}`, checkpointFile, (error as Error).message);
      }
      if (saved === null || typeof saved !== "object" || !Number.isInteger(saved.seq) || (saved.seq as number) < 0) {
        throw unusableState(`file store checkpoint ${checkpointFile}`, checkpointFile, "it holds no sequence");
      }
      if (saved.generation !== this.generation) {
        throw unusableState(`file store checkpoint ${checkpointFile}`, checkpointFile, `it is the checkpoint of generation ${String(saved.generation)}, not ${this.generation}`);
      }
      this.committed = { seq: saved.seq as number, generation: this.generation };
    }
    this.indexOnDisk = (await readTextIfExists(path.join(this.dir, INDEX_FILE))) !== null;
    let stateFiles: string[] = [];
    try {
      stateFiles = (await readdir(path.join(this.dir, STATE_DIR))).filter((name) => !name.startsWith(".") && name.endsWith(".json"));
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const bundles = await this.bundleFiles();
    for (const { name } of bundles) {
      const file = path.join(this.dir, STATE_DIR, name);
      reading(file);
      const bytes = await readFile(file);
      let offset = 0;
      while (offset < bytes.length) {
        let end = bytes.indexOf(10, offset);
        if (end < 0) end = bytes.length;
        const record = checkRecord(file, JSON.parse(bytes.toString("utf8", offset, end)));
        this.remember(record);
        if (record.state.id !== null) this.bundled.set(record.state.id, { file, offset, length: end - offset });
        offset = end + 1;
      }
    }
    const perMemory = stateFiles.filter((name) => !BUNDLE.test(name));
    await inChunks(perMemory, async (name) => {
      const file = path.join(this.dir, STATE_DIR, name);
      let record: StoredRecord;
      try {
        record = checkRecord(file, JSON.parse(await readFile(file, "utf8")));
      } catch (error) {
        if (error instanceof SyntaxError) throw unusableState(`file store state ${file}`, file, error.message);
        throw error;
      }
      this.remember(record);
      if (record.state.id !== null) this.bundled.delete(record.state.id);
    });
  }

  private async bundleFiles(): Promise<{ name: string; seq: number }[]> {
    let names: string[] = [];
    try {
      names = await readdir(path.join(this.dir, STATE_DIR));
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    return names
      .map((name) => ({ name, seq: Number(BUNDLE.exec(name)?.[1] ?? -1) }))
      .filter((b) => b.seq >= 0)
      .sort((a, b) => a.seq - b.seq);
  }

  private async readRecord(id: string): Promise<MemoryRecord> {
    const kept = this.spilled.get(id);
    if (kept) return kept;
    const at = this.bundled.get(id);
    if (at && this.writer) {
      // A fresh target reading back what it spilled: once the writer has written that bundle (not the
      // whole queue), one positioned read on a descriptor kept open. At 1M events most memory events
      // touch a memory spilled earlier; each used to drain the writer's queue, then open, read and close
      // the bundle (three thread-pool round trips).
      await this.writer.whenWritten(at.file);
      return JSON.parse(this.readBundled(at)) as StoredRecord;
    }
    if (!at) return JSON.parse(await readFile(resolveInside(this.dir, memoryStatePath(id)), "utf8")) as StoredRecord;
    const handle = await open(at.file, "r");
    try {
      const buffer = Buffer.alloc(at.length);
      await handle.read(buffer, 0, at.length, at.offset);
      return JSON.parse(buffer.toString("utf8")) as StoredRecord;
    } finally {
      await handle.close();
    }
  }

  /** One record of a bundle, read synchronously: a bundle was written moments ago, its pages are cached, and a rebuild's files target runs on a thread of its own. */
  private readBundled(at: BundledRecord): string {
    let fd = this.bundleFds.get(at.file);
    if (fd === undefined) {
      fd = openSync(at.file, "r");
      this.bundleFds.set(at.file, fd);
    }
    const buffer = Buffer.allocUnsafe(at.length);
    let read = 0;
    while (read < at.length) {
      const n = readSync(fd, buffer, read, at.length - read, at.offset + read);
      if (n === 0) throw internal(`files target ${this.generation}: ${at.file} ends before the record at ${at.offset} (${at.length} bytes)`);
      read += n;
    }
    return buffer.toString("utf8");
  }

  private remember(record: MemoryRecord): void {
    const id = record.state.id;
    if (id === null) return;
    this.stored.add(id);
    const entry = indexEntryOf(record);
    if (entry) this.entries.set(id, entry);
  }

  private assertOpen(): void {
    if (this.closed) throw internal(`the files target of generation ${this.generation} is closed`);
  }

  async apply(events: readonly ProjectedEvent[]): Promise<void> {
    this.assertOpen();
    // Before this batch, so that a spill's bundle is named by a sequence no later commit reuses: the
    // commit after the last batch writes what is still touched at that batch's sequence or later. Never
    // twice at one sequence (bundles are loaded in the order of their names).
    const bound = this.options.spillRecords ?? DEFAULT_SPILL_RECORDS;
    if (this.writer && this.touched.size >= bound && this.appliedSeq > this.lastBundleSeq) this.spill();
    // Events at or below the checkpoint are already durable: skipping them is what makes redelivery harmless.
    const fresh = events.filter((e) => e.seq > this.committed.seq && isMemoryEvent(e.event));
    const toLoad = [...new Set(fresh.map((e) => e.event.aggregateId))].filter((id) => !this.touched.has(id) && this.stored.has(id));
    const loaded = new Map<string, MemoryRecord>();
    try {
      await inChunks(toLoad, async (id) => {
        loaded.set(id, await this.readRecord(id));
      });
    } catch (err) {
      await this.assertStillMine(); // a promoted rebuild deleted this generation: say so, not "file not found"
      throw err;
    }
    for (const projected of fresh) {
      const id = projected.event.aggregateId;
      const record = this.touched.get(id) ?? loaded.get(id) ?? emptyRecord();
      // Marked touched even when the record already holds the event: after a crash in the middle of a
      // commit, state files may be ahead of the checkpoint, and the redelivered events must still cause
      // the memory's file and MEMORY.md to be rewritten. Deleted first, so that it moves to the end of
      // the map's order (most recently touched).
      this.touched.delete(id);
      this.touched.set(id, applyEvent(record, projected));
    }
    const last = events.at(-1)?.seq ?? 0;
    if (last > this.appliedSeq) this.appliedSeq = last;
  }

  /**
   * Fresh targets: writes the files and one state bundle of the coldest half of the touched memories
   * now, without MEMORY.md or the checkpoint (those are the commit's), and forgets their records. The
   * generation is invisible and never resumed, so files ahead of the checkpoint harm nobody; a
   * re-touched memory is written again.
   *
   * Why the coldest half and not every touched memory: a memory's events sit close together in the log
   * (its proposal, its review, a revision), so the memories touched last are the ones still in play.
   * Writing them all at each spill wrote those again at the next one: at 1M events (100k memories)
   * 116k records were written and 16k read back; the coldest half, replayed over the same log, writes
   * each memory once and reads none back (docs/benchmarks.md, eighth round).
   */
  private spill(): void {
    const keep = Math.floor((this.options.spillRecords ?? DEFAULT_SPILL_RECORDS) / 2);
    const cold: string[] = [];
    for (const id of this.touched.keys()) {
      if (this.touched.size - cold.length <= keep) break;
      cold.push(id);
    }
    const records: MemoryRecord[] = [];
    for (const id of cold) {
      const record = this.touched.get(id)!;
      this.touched.delete(id);
      if (record.state.id !== null) records.push(record);
    }
    for (const record of records) this.queueMemoryFile(record);
    if (records.length > 0) this.queueBundle(this.appliedSeq, records);
    for (const record of records) {
      this.remember(record);
      const owner = scratchpadOwner(record.state.scope ?? "app");
      if (owner !== null) this.spilledOwners.add(owner);
    }
    this.spilled = new Map(records.map((r) => [r.state.id!, r]));
    this.spilledSinceCommit = true;
  }

  private queueMemoryFile(record: MemoryRecord): void {
    const markdown = hasFile(record) ? renderMemoryFile(this.layout.app, record) : undefined;
    if (markdown !== undefined) this.writer!.enqueue(this.prepare(memoryFilePath(record.state.scope ?? "app", record.state.id!)), markdown);
  }

  /**
   * Writes as the leader holding `token`, for a file store other instances may write too (a shared
   * disk): records the token in `<root>.gen/<app>/.fence`, or throws `conflict` when a newer leader's
   * is there already. Every later commit checks the fence before its first write and again before the
   * checkpoint. A file system has no compare-and-set over a set of files, so this narrows rather than
   * closes the window: a former leader that passed the check and is paused before one of its writes
   * may still land that write after the new leader's (files of the same memory, rendered from the same
   * log, but possibly from an older position). The lease makes such a pause rare (a leader stops
   * committing once its lease lapsed by its own clock); a rebuild (`memledger rebuild files`) repairs it.
   */
  async fence(token: number): Promise<void> {
    this.assertOpen();
    const recorded = await this.recordedFence();
    if (recorded > token) throw this.fenced(token, recorded);
    await writeFileAtomic(this.fenceFile, `${JSON.stringify({ token })}\n`);
    this.fenceToken = token;
  }

  private get fenceFile(): string {
    return path.join(this.layout.generationsDir, ".fence");
  }

  private async recordedFence(): Promise<number> {
    const text = await readTextIfExists(this.fenceFile);
    if (text === null) return 0;
    try {
      return Number((JSON.parse(text) as { token?: unknown }).token) || 0;
    } catch {
      return 0; // cut short by a crash mid-write: whoever fences next rewrites it
    }
  }

  private fenced(token: number, recorded: number) {
    return conflict(`file store ${this.layout.app}: fenced: leader token ${token} was superseded by token ${recorded} (another instance took the lease over)`, {
      reason: ConflictReason.fenced,
      token,
      fence: recorded,
    });
  }

  private async assertFence(): Promise<void> {
    if (this.fenceToken === undefined) return;
    const recorded = await this.recordedFence();
    if (recorded !== this.fenceToken) throw this.fenced(this.fenceToken, recorded);
  }

  async commit(seq: number): Promise<void> {
    this.assertOpen();
    await this.assertStillMine();
    await this.assertFence();
    if (this.touched.size === 0 && !this.spilledSinceCommit && seq <= this.committed.seq && this.indexOnDisk) return;

    // Write order is the crash-safety argument:
    // 1. each touched memory's file, then its state (a crash here leaves the checkpoint behind: the
    //    runner redelivers these events, they mark the memories touched again, and they are rewritten);
    // 2. MEMORY.md, after the files it links to exist (readers following a link never find nothing);
    // 3. the checkpoint, last: it promises that everything up to `seq` is on disk.
    const records = [...this.touched.values()].filter((r) => r.state.id !== null);
    if (this.writer) {
      for (const record of records) this.queueMemoryFile(record);
      if (records.length > 0) this.queueBundle(Math.max(seq, this.appliedSeq), records);
      this.spilled.clear();
    } else if (this.options.fresh) {
      await inChunks(records, async (record) => {
        const markdown = hasFile(record) ? renderMemoryFile(this.layout.app, record) : undefined;
        if (markdown !== undefined) await this.write(memoryFilePath(record.state.scope ?? "app", record.state.id!), markdown);
      });
      if (records.length > 0) await this.writeBundle(seq, records);
    } else {
      await inChunks(records, async (record) => {
        const id = record.state.id!;
        const markdown = hasFile(record) ? renderMemoryFile(this.layout.app, record) : undefined;
        if (markdown !== undefined) await this.write(memoryFilePath(record.state.scope ?? "app", id), markdown);
        await this.write(memoryStatePath(id), JSON.stringify({ format: 1, ...record } satisfies StoredRecord));
        this.bundled.delete(id);
      });
    }
    for (const record of records) this.remember(record);

    if (records.length > 0 || this.spilledSinceCommit || !this.indexOnDisk) {
      await this.write(INDEX_FILE, renderMemoryIndex(this.layout.app, this.entries.values()));
      this.indexOnDisk = true;
    }
    // Each scratchpad a record of this commit belongs to gets its own index again (a scope never changes).
    const agents = new Set(records.map((r) => scratchpadOwner(r.state.scope ?? "app")).filter((a): a is string => a !== null));
    for (const owner of this.spilledOwners) agents.add(owner);
    if (agents.size > 0) {
      const byAgent = new Map<string, IndexEntry[]>([...agents].map((a) => [a, []]));
      for (const entry of this.entries.values()) {
        const owner = scratchpadOwner(entry.scope);
        if (owner !== null) byAgent.get(owner)?.push(entry);
      }
      for (const [agent, own] of [...byAgent].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
        await this.write(scratchpadIndexPath(agent), renderScratchpadIndex(this.layout.app, agent, own));
      }
    }

    const checkpoint: Checkpoint = { seq: Math.max(seq, this.committed.seq), generation: this.generation };
    await this.assertFence();
    await this.write(CHECKPOINT_FILE, `${JSON.stringify(checkpoint)}\n`);
    // Queued in order after every file and bundle of this commit: the checkpoint is on disk last.
    await this.writer?.drain();
    this.committed = checkpoint;
    this.spilledOwners.clear();
    this.spilledSinceCommit = false;
    this.touched.clear();
  }

  /**
   * A target may write while its generation is the one readers see, or is newer (a rebuild not promoted
   * yet). Once a newer generation was promoted, the old directory is being deleted: a live target still
   * holding it must not write there (and must not recreate it); the runner reopens on this error.
   */
  private async assertStillMine(): Promise<void> {
    const current = await this.layout.current();
    const replaced = current !== null && Number(current) > Number(this.generation);
    const present = await stat(this.dir).then(
      () => true,
      () => false,
    );
    if (replaced || !present) {
      throw conflict(`generation ${this.generation} of ${this.layout.app} was replaced by ${current ?? "nothing"}: reopen the target`, {
        reason: ConflictReason.generation_replaced,
      });
    }
  }

  /** The records as one bundle queued in the writer, remembering where each one will sit. */
  private queueBundle(seq: number, records: readonly MemoryRecord[]): void {
    // Loading applies bundles in the order of their sequence, so each must be named after the previous.
    if (seq <= this.lastBundleSeq) throw internal(`files target ${this.generation}: bundle at seq ${seq} after one at ${this.lastBundleSeq}`);
    this.lastBundleSeq = seq;
    const relative = `${STATE_DIR}/${bundleName(seq)}`;
    const file = this.prepare(relative);
    const lines: string[] = [];
    let offset = 0;
    for (const record of records) {
      const line = JSON.stringify({ format: 1, ...record } satisfies StoredRecord);
      const length = Buffer.byteLength(line, "utf8");
      lines.push(line);
      this.bundled.set(record.state.id!, { file, offset, length });
      offset += length + 1;
    }
    this.writer!.enqueue(file, `${lines.join("\n")}\n`, true);
  }

  /** The absolute path of a file for the writer (which creates its folders), counted against `failAfterWrites`. */
  private prepare(relative: string): string {
    if (this.options.failAfterWrites !== undefined && this.writes >= this.options.failAfterWrites) {
      throw internal(`simulated crash after ${this.writes} writes`);
    }
    this.writes++;
    return resolveInside(this.dir, relative);
  }

  /** The touched records as one bundle (fresh targets only), remembering where each one sits. */
  private async writeBundle(seq: number, records: readonly MemoryRecord[]): Promise<void> {
    const relative = `${STATE_DIR}/${bundleName(seq)}`;
    const file = resolveInside(this.dir, relative);
    const lines: string[] = [];
    const places: [string, number, number][] = [];
    let offset = 0;
    for (const record of records) {
      const line = JSON.stringify({ format: 1, ...record } satisfies StoredRecord);
      const length = Buffer.byteLength(line, "utf8");
      lines.push(line);
      places.push([record.state.id!, offset, length]);
      offset += length + 1;
    }
    await this.write(relative, `${lines.join("\n")}\n`);
    for (const [id, at, length] of places) this.bundled.set(id, { file, offset: at, length });
  }

  private async write(relative: string, content: string): Promise<void> {
    if (this.writer) return this.writer.enqueue(this.prepare(relative), content);
    // Counted when started, so that with concurrent writes exactly `failAfterWrites` of them happen.
    if (this.options.failAfterWrites !== undefined && this.writes >= this.options.failAfterWrites) {
      throw internal(`simulated crash after ${this.writes} writes`);
    }
    this.writes++;
    const file = resolveInside(this.dir, relative);
    await this.ensureParent(relative);
    // A fresh generation's files are written in place and synchronously: on these machines a
    // synchronous write of a small file took ~0.1 ms against ~0.9 ms through fs/promises (open, write
    // and close are three thread-pool round trips each, which queue behind each other under load), and
    // a rebuild's commit has nothing else for the event loop to do meanwhile but Redis replies.
    if (this.options.fresh && !this.options.sync) writeFileSync(file, content, "utf8");
    else await writeFileAtomic(file, content, this.options.sync);
  }

  /**
   * Creates the folders between the generation directory and a file, one level at a time and never the
   * generation directory itself: if a promote deleted it, writing fails instead of resurrecting it.
   */
  private async ensureParent(relative: string): Promise<void> {
    const segments = relative.split("/").slice(0, -1);
    for (let depth = 1; depth <= segments.length; depth++) {
      const dir = resolveInside(this.dir, segments.slice(0, depth).join("/"));
      if (this.knownDirs.has(dir)) continue;
      await mkdir(dir).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== "EEXIST") throw err;
      });
      this.knownDirs.add(dir);
    }
  }

  async currentGeneration(): Promise<string> {
    return (await this.layout.current()) ?? "";
  }

  async close(): Promise<void> {
    this.closed = true;
    this.touched.clear();
    this.spilled.clear();
    for (const fd of this.bundleFds.values()) {
      try {
        closeSync(fd);
      } catch {
        // Nothing was written through it: a failed close loses nothing.
      }
    }
    this.bundleFds.clear();
    await this.writer?.close();
  }
}
