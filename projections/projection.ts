import type { AggregateKind } from "../events/subjects.js";
import type { LedgerEvent } from "../schemas/events.js";

/**
 * A projection turns one stream's events into a read model. The log is the truth: any read model can be
 * thrown away and rebuilt from sequence 0 to the same state.
 *
 * Split of duties:
 * - the definition's pure `evolve` decides what the model becomes (no I/O, unit-testable);
 * - the target persists the model and its checkpoint (files, Redis, an index snapshot);
 * - the runner (services/projection-runner.ts) feeds batches from a durable pull consumer, calls `apply`
 *   then `commit`, and acks only after `commit` resolves. It never asks a target to commit a checkpoint
 *   past an event it has not applied.
 *
 * Delivery is at-least-once: `apply` must be idempotent (an event at or below the checkpoint, or applied
 * twice, leaves the same state).
 */
export interface ProjectedEvent {
  /** Stream sequence: the position checkpoints are made of. */
  seq: number;
  subject: string;
  event: LedgerEvent;
}

/** Where a target stands: the last stream sequence whose effects are durably in the read model. */
export interface Checkpoint {
  seq: number;
  /** Changes on every rebuild; a runner whose generation is no longer current must reopen the target. */
  generation: string;
}

export interface ProjectionTarget {
  /** What the target has durably applied; 0 for a fresh target. */
  readonly checkpoint: Checkpoint;
  /** Applies events in stream order (seq ascending). Effects may stay buffered until `commit`. */
  apply(events: readonly ProjectedEvent[]): Promise<void>;
  /** Makes everything applied so far durable, together with the checkpoint `seq`. */
  commit(seq: number): Promise<void>;
  /** The generation readers are using now (the live target's may have been replaced by a rebuild). */
  currentGeneration(): Promise<string>;
  close(): Promise<void>;
}

/** Context shared by every projection of one app (or of the org stream). */
export interface ProjectionScope {
  prefix: string;
  /** The app, or "org" for the org stream. */
  app: string;
  stream: string;
}

/**
 * What a projection tells the operator while it opens, so a slow start never looks like a hang:
 * `loading` (reading saved state), `set-aside` (saved state that could not be used was renamed and the
 * model starts again from the log), `note` (anything else worth a line, e.g. vectors derived again).
 */
export interface OpenProgress {
  phase: "loading" | "set-aside" | "note";
  message: string;
}

/**
 * What a runner reports for one projection of one stream while it opens and catches up: the open's own
 * lines (`OpenProgress`), then `catching-up` (done/total: stream sequences) until `caught-up`.
 */
export interface ProjectionProgress {
  projection: string;
  app: string;
  stream: string;
  phase: OpenProgress["phase"] | "catching-up" | "caught-up";
  message: string;
  /** For catching-up: the sequence applied, and the stream's last sequence when the catch-up began. */
  done?: number;
  total?: number;
}

export interface OpenOptions {
  onProgress?: (progress: OpenProgress) => void;
}

/**
 * How to make the same definition again in a worker thread: an ES module (compiled JavaScript: a worker
 * cannot load TypeScript sources), the name of the function it exports, and that function's argument,
 * which must survive structured cloning. A rebuild runs a portable projection's fresh target there,
 * fed the log's raw bytes, so that its folding and writing use another core (services/rebuild-worker.ts).
 */
export interface PortableDefinition {
  module: string;
  factory: string;
  options: unknown;
}

export interface ProjectionDefinition {
  /** Stable name: durable consumer name, CLI name (`memledger rebuild NAME`), status key. */
  readonly name: string;
  /**
   * The aggregate kinds whose events can change this read model; absent: any event may. A rebuild
   * decodes only events of a kind some projection it feeds consumes (a claims-only rebuild never parses
   * a memory's body).
   */
  readonly consumes?: readonly AggregateKind[];
  /** Set when the definition can be made again in a worker thread (see PortableDefinition). */
  readonly portable?: PortableDefinition;
  /**
   * A live target far behind its stream catches up faster through a rebuild (a fresh target fed the whole
   * log in one pass, then promoted) than one live commit at a time (services/projection-runner.ts,
   * RunnerOptions.rebuildWhenBehind). Set by read models whose readers are better served by the old
   * generation until the new one is whole; absent, a runner always catches up live.
   */
  readonly catchUpByRebuild?: boolean;
  /**
   * Opens the live target (resuming from its checkpoint). Saved state that cannot be used (cut short,
   * damaged, of an unknown format) is set aside and the target starts from sequence 0; state that
   * needs the operator (unreadable, in the way) fails with an error naming the file and what to do.
   */
  openLive(scope: ProjectionScope, options?: OpenOptions): Promise<ProjectionTarget>;
  /** Opens an empty target that readers do not see until `promote`. */
  openFresh(scope: ProjectionScope): Promise<ProjectionTarget>;
  /** Atomically makes a caught-up fresh target the one readers see; the old generation is discarded. */
  promote(scope: ProjectionScope, fresh: ProjectionTarget): Promise<void>;
}
