import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { MemledgerError } from "../../schemas/errors.js";
import type { Checkpoint, OpenOptions, OpenProgress, PortableDefinition, ProjectedEvent, ProjectionDefinition, ProjectionScope, ProjectionTarget } from "../projection.js";
import { isUnusableState, needsOperator, setAside, unusableFile } from "../unusable.js";
import { SearchIndex } from "./search-index.js";
import { attachVectorChannel, saveVectorChannel, type VectorSetup, type VectorSource } from "./vector-setup.js";
import type { VectorSink } from "./vector-channel.js";
import {
  appDir,
  newGeneration,
  readCurrentGeneration,
  readSnapshot,
  snapshotFile,
  type SnapshotSummary,
  vectorsDir,
  writeCurrentGeneration,
  writeSnapshot,
} from "./snapshot.js";
import { internal } from "../../schemas/errors.js";

export const DEFAULT_SEARCH_DIR = ".memledger/search";

export interface SearchProjectionOptions {
  /** Where snapshots live; one subdirectory per app. */
  dir?: string;
  /**
   * A snapshot costs about 1.8 s at 10k memories (Orama's save plus the write), so `commit` writes
   * one only when this many events were applied since the last one, or when `snapshotIntervalMs` has
   * passed. Between snapshots the durable checkpoint stays at the last snapshot; after a restart the
   * runner replays from there, and `apply` skips what the snapshot already holds.
   */
  snapshotEveryEvents?: number;
  snapshotIntervalMs?: number;
  /** The clock for the interval; tests pass their own. */
  now?: () => number;
  /**
   * The vector channel: the embedder and where vectors live. A function is called once, on the first
   * target opened (opening the embedding cache needs a NATS connection). Without it, BM25 only.
   */
  vectors?: VectorSetup | (() => Promise<VectorSetup>) | undefined;
  /**
   * For fresh targets only, when `vectors` is given: where their vector changes are written (a VectorSink).
   * Given by a definition whose fresh targets nobody searches before they are promoted and served
   * elsewhere (a rebuild worker's: services/search-definition.ts), so that vectors are read and stored
   * on a thread of their own while BM25 is indexed on this one.
   */
  freshVectors?: (at: { app: string; generation: string }) => Promise<VectorSink>;
  /** Told how each opened index got its vectors (loaded with the snapshot, or derived again). */
  onVectors?: (app: string, generation: string, source: VectorSource) => void;
  /**
   * How to make this same definition again in a worker thread (see PortableDefinition): set by whoever
   * can describe the options above as plain data (services/search-definition.ts), so that a rebuild
   * folds and indexes on a core of its own. The worker's promote writes the snapshot and CURRENT as
   * this thread's would. Used only while no live index is open in this process (see `portable` below).
   */
  portable?: PortableDefinition;
}

export interface SearchProjection extends ProjectionDefinition {
  readonly name: "search";
  readonly dir: string;
  /** The index readers in this process query: the one last opened live or promoted for `app`. */
  index(app: string): SearchIndex | undefined;
}

/** A commit on a target whose generation was replaced by a rebuild: the runner must reopen the live target. */
export class StaleGenerationError extends Error {
  constructor(
    readonly generation: string,
    readonly current: string | null,
  ) {
    super(`search index generation ${generation} was replaced by ${current ?? "nothing"}; reopen the live target`);
    this.name = "StaleGenerationError";
  }
}

interface SnapshotPolicy {
  everyEvents: number;
  intervalMs: number;
  now: () => number;
}

class SearchTarget implements ProjectionTarget {
  private durable: Checkpoint;
  private lastSnapshotAt: number;
  private committedSeq: number;
  private writing = false;
  private closed = false;

  constructor(
    private readonly dir: string,
    readonly index: SearchIndex,
    /** Live targets are what readers see; a fresh one is invisible until promoted. */
    public role: "live" | "fresh",
    private readonly policy: SnapshotPolicy,
  ) {
    this.durable = { seq: index.appliedSeq, generation: index.generation };
    this.committedSeq = index.appliedSeq;
    this.lastSnapshotAt = policy.now();
  }

  get checkpoint(): Checkpoint {
    return this.durable;
  }

  async apply(events: readonly ProjectedEvent[]): Promise<void> {
    this.assertUsable("apply");
    // BM25 at once, then every memory of the batch whose active version changed embedded in one call.
    await this.index.ingest(events);
  }

  async commit(seq: number): Promise<void> {
    this.assertUsable("commit");
    // The runner may commit past events it did not hand over (other subjects): they changed nothing here.
    this.index.advanceTo(seq);
    // A fresh index defers its channels to here: each memory's final version indexed once.
    await this.index.materialize();
    // Left queued only by a failed embed; the checkpoint must not pass vectors that were not written.
    await this.index.flushVectors();
    this.committedSeq = Math.max(this.committedSeq, seq);
    // A fresh target is invisible and never resumed (a failed rebuild starts a new generation from 0),
    // so snapshots before its promote would only be thrown away: promote writes the one that counts.
    // Skipping them saves a full Orama save + write + fsync per commit (seconds each at 100k memories).
    if (this.role === "fresh") return;
    const pending = this.index.appliedSeq - this.durable.seq;
    const due = pending >= this.policy.everyEvents || this.policy.now() - this.lastSnapshotAt >= this.policy.intervalMs;
    if (pending > 0 && due) await this.snapshot();
  }

  async currentGeneration(): Promise<string> {
    return (await readCurrentGeneration(this.dir, this.index.app)) ?? this.index.generation;
  }

  /**
   * A graceful close keeps what was committed. If events were applied after the last commit, the
   * in-memory model is ahead of what the runner acknowledged, so nothing is written: like a crash,
   * the runner replays from the durable checkpoint.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      const committedAndUnsaved =
        this.index.appliedSeq === this.committedSeq && this.committedSeq > this.durable.seq && this.index.pendingVectorCount === 0;
      if (committedAndUnsaved && (this.role === "fresh" || (await this.isCurrent()))) await this.snapshot();
    } finally {
      this.closed = true;
      // A sink's thread ends with its target, saved or not.
      await this.index.vectorSink?.close();
    }
  }

  /** Writes the model and its checkpoint in one file; only then does the durable checkpoint move. */
  async snapshot(): Promise<void> {
    if (this.role === "live" && !(await this.isCurrent())) {
      throw new StaleGenerationError(this.index.generation, await readCurrentGeneration(this.dir, this.index.app));
    }
    this.writing = true;
    try {
      const seq = this.index.appliedSeq;
      const vectors = () => saveVectorChannel(this.index, vectorsDir(this.dir, this.index.app, this.index.generation));
      const records = () => writeSnapshot(snapshotFile(this.dir, this.index.app, this.index.generation), this.index);
      if (this.role === "fresh") {
        // Not current until promote writes CURRENT after this: the order of the two writes is free,
        // and a sink stores and saves its vectors on its own thread while this one writes the records.
        // Both settled before either's failure is thrown: the records are written from the live index.
        const settled = await Promise.allSettled([vectors(), records()]);
        for (const result of settled) if (result.status === "rejected") throw result.reason;
      } else {
        // Vectors first, labelled with this checkpoint: a crash before the snapshot below leaves vectors
        // whose label does not match the older snapshot, and they are derived again on load.
        await vectors();
        await records();
      }
      this.durable = { seq, generation: this.index.generation };
      this.lastSnapshotAt = this.policy.now();
    } finally {
      this.writing = false;
    }
  }

  private async isCurrent(): Promise<boolean> {
    return (await readCurrentGeneration(this.dir, this.index.app)) === this.index.generation;
  }

  private assertUsable(operation: string): void {
    if (this.closed) throw internal(`search target ${this.index.generation}: ${operation} after close`);
    // The saved Orama index shares structures with the live one while a snapshot is written.
    if (this.writing) throw internal(`search target ${this.index.generation}: ${operation} while a snapshot is being written`);
  }
}

/**
 * The `search` projection: a BM25 index over the active version of every memory of one app, for
 * `memledger search` and for agents' recall. See search-index.ts for the model and snapshot.ts for
 * the files.
 */
export function searchProjection(options: SearchProjectionOptions = {}): SearchProjection {
  const dir = options.dir ?? DEFAULT_SEARCH_DIR;
  const policy: SnapshotPolicy = {
    everyEvents: options.snapshotEveryEvents ?? 5_000,
    intervalMs: options.snapshotIntervalMs ?? 30_000,
    now: options.now ?? Date.now,
  };
  const liveIndexes = new Map<string, SearchIndex>();
  let vectorSetup: Promise<VectorSetup> | undefined;
  const setupOf = (): Promise<VectorSetup> | undefined => {
    const configured = options.vectors;
    if (!configured) return undefined;
    vectorSetup ??= typeof configured === "function" ? configured() : Promise.resolve(configured);
    vectorSetup.catch(() => (vectorSetup = undefined));
    return vectorSetup;
  };
  const withVectors = async (index: SearchIndex, savedDir: string | undefined, report: Report = () => undefined): Promise<SearchIndex> => {
    const setup = setupOf();
    if (!setup) return index;
    const source = await attachVectorChannel(index, await setup, savedDir, {
      // The next snapshot writes a good directory there: this one is kept aside for the operator.
      onUnusable: async (error) => {
        const aside = savedDir ? await setAside(savedDir) : null;
        report({ phase: "set-aside", message: `${error.message}${aside ? `; set aside as ${aside}` : ""}; deriving the vectors again` });
      },
      onDerive: (count) => report({ phase: "loading", message: `deriving vectors of ${count} memories (from the embedding cache when warm)` }),
    });
    options.onVectors?.(index.app, index.generation, source);
    return index;
  };

  /** The live target: the current snapshot, or (none, lost, unusable) an empty generation replayed from 0. */
  const openLiveTarget = async (scope: ProjectionScope, open: OpenOptions): Promise<ProjectionTarget> => {
    const report: Report = open.onProgress ?? (() => undefined);
    let index = await loadCurrent(dir, scope.app, {
      onHeader: (summary) =>
        report({ phase: "loading", message: `loading snapshot (${summary.records} memories, seq ${summary.seq}${summary.version < 4 ? `, format v${summary.version}: BM25 re-indexed` : ""})` }),
      // The log is the truth: what cannot be used is renamed for the operator and rebuilt from the log.
      onUnusable: async (error, generation) => {
        const file = unusableFile(error);
        const moved = [await setAside(file)];
        if (generation) moved.push(await setAside(vectorsDir(dir, scope.app, generation)));
        const aside = moved.filter((name) => name !== null).join(", ");
        report({ phase: "set-aside", message: `${error.message}${aside ? `; set aside as ${aside}` : ""}; rebuilding from the log` });
      },
    });
    if (index) {
      await withVectors(index, vectorsDir(dir, scope.app, index.generation), report);
    } else {
      // First start (or a CURRENT that names a lost file): an empty generation, made current at
      // once so that checkpoint, file and pointer agree from the start. The runner replays from 0.
      index = await withVectors(new SearchIndex(scope.app, newGeneration()), undefined);
      await writeSnapshot(snapshotFile(dir, scope.app, index.generation), index);
      await writeCurrentGeneration(dir, scope.app, index.generation);
    }
    liveIndexes.set(scope.app, index);
    return new SearchTarget(dir, index, "live", policy);
  };

  return {
    name: "search",
    consumes: ["memory"],
    // Portable only while no reader in this process queries an index of it: a promote on this thread
    // hands readers the new index at once, one in a worker would leave them on the old one until the
    // live runner noticed the switch.
    get portable() {
      return liveIndexes.size === 0 ? options.portable : undefined;
    },
    dir,
    index: (app) => liveIndexes.get(app),

    async openLive(scope: ProjectionScope, open: OpenOptions = {}): Promise<ProjectionTarget> {
      return openLiveTarget(scope, open).catch((error: unknown) => {
        throw needsOperator(error, `search projection cannot use ${appDir(dir, scope.app)}`, "fix the directory's permissions or free space, then start again");
      });
    },

    async openFresh(scope: ProjectionScope): Promise<ProjectionTarget> {
      // Built in memory; its file appears on its first snapshot, and readers only follow CURRENT.
      const index = new SearchIndex(scope.app, newGeneration());
      if (options.freshVectors && options.vectors) index.attachVectorSink(await options.freshVectors({ app: scope.app, generation: index.generation }));
      else await withVectors(index, undefined);
      index.deferIndexing();
      return new SearchTarget(dir, index, "fresh", policy);
    },

    async promote(scope: ProjectionScope, target: ProjectionTarget): Promise<void> {
      if (!(target instanceof SearchTarget) || target.role !== "fresh" || target.index.app !== scope.app) {
        throw internal("search promote: expected a fresh search target of the same app");
      }
      target.index.indexImmediately(); // readers may use it from now on: it must index as it folds
      await target.snapshot();
      const replaced = liveIndexes.get(scope.app);
      await writeCurrentGeneration(dir, scope.app, target.index.generation);
      target.role = "live";
      liveIndexes.set(scope.app, target.index);
      await removeOtherGenerations(dir, scope.app, target.index.generation);
      // An external vector index (a Qdrant collection) of the replaced generation is not a file here.
      const setup = setupOf();
      const old = replaced?.vectors;
      if (setup && replaced && old && replaced.generation !== target.index.generation) {
        await (await setup).dropIndex({
          prefix: (await setup).prefix,
          app: scope.app,
          generation: replaced.generation,
          modelId: old.modelId,
          dimensions: old.index.dimensions,
        });
      }
    },
  };
}

type Report = (progress: OpenProgress) => void;

interface LoadHooks {
  onHeader?: (summary: SnapshotSummary) => void;
  /**
   * The snapshot (or CURRENT) is unusable (see projections/unusable.ts). Without this hook it is treated
   * as absent (a reader replays the log instead); the live projection sets it aside here.
   */
  onUnusable?: (error: MemledgerError, generation: string | null) => Promise<void>;
}

/**
 * The current generation's index, or undefined when there is none, its file is gone, or it (or CURRENT)
 * is unusable. I/O errors other than a missing file are thrown: they need the operator, and the error
 * names the file.
 */
async function loadCurrent(dir: string, app: string, hooks: LoadHooks = {}): Promise<SearchIndex | undefined> {
  // A promote in another process may replace CURRENT and delete the file it named between our two reads.
  for (let attempt = 0; attempt < 3; attempt++) {
    let generation: string | null = null;
    try {
      generation = await readCurrentGeneration(dir, app);
      if (!generation) return undefined;
      return await readSnapshot(snapshotFile(dir, app, generation), { app, generation, onHeader: hooks.onHeader });
    } catch (error) {
      if (isUnusableState(error)) {
        await hooks.onUnusable?.(error, generation);
        return undefined;
      }
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw operatorError(error, generation ? snapshotFile(dir, app, generation) : join(appDir(dir, app), "CURRENT"));
      if ((await readCurrentGeneration(dir, app).catch(() => null)) === generation) return undefined;
    }
  }
  throw internal(`search index of ${app}: CURRENT kept changing while it was being read`);
}

/** An I/O failure on read-model state, said with the file and what to do. */
function operatorError(error: unknown, file: string): unknown {
  return needsOperator(error, `cannot read search snapshot ${file}`, "fix its permissions or storage, or move the search directory away to rebuild it from the log");
}

async function removeOtherGenerations(dir: string, app: string, keep: string): Promise<void> {
  for (const name of await readdir(appDir(dir, app))) {
    const generation = name.endsWith(".snapshot") ? name.slice(0, -".snapshot".length) : name.endsWith(".vectors") ? name.slice(0, -".vectors".length) : null;
    if (generation !== null && generation !== keep) await rm(join(appDir(dir, app), name), { recursive: true, force: true });
  }
}

/**
 * For readers outside `up` (the CLI): the latest snapshot of `app`'s search index, or an empty index at
 * sequence 0 when there is none. The caller catches up from `index.appliedSeq + 1` with `index.ingest`.
 * With `vectors`, the index gets a private vector channel (pass an embedded backend: a reader catching
 * up must not write into the live projection's Qdrant collection), loaded from the saved vectors or
 * derived through the embedder's cache.
 */
export async function openSearchIndex(dir: string, app: string, options: { vectors?: VectorSetup } = {}): Promise<SearchIndex> {
  // An unusable snapshot is read as none: the caller replays the whole log (`up` sets the file aside).
  const loaded = await loadCurrent(dir, app);
  const index = loaded ?? new SearchIndex(app, "none");
  if (options.vectors) await attachVectorChannel(index, options.vectors, loaded ? vectorsDir(dir, app, loaded.generation) : undefined);
  return index;
}
