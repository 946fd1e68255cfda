import { z } from "zod";
import type { ActorKind } from "../schemas/primitives.js";

/**
 * The only place where subjects and stream names are spelled. Everything that publishes, subscribes,
 * creates a stream or writes a broker permission asks this module.
 *
 *   <prefix>.app.<app>.memory.<memoryId>      one subject per memory aggregate (optimistic concurrency)
 *   <prefix>.app.<app>.session.<sessionId>    one subject per agent session
 *   <prefix>.app.<app>.claim.<claimId>        one subject per task or lock (claims, leases)
 *   <prefix>.app.<app>.promotion.<promotionId>  one subject per promotion: the curator's decision, written
 *                                              once (expected sequence 0), so a redelivered request is answered
 *   <prefix>.app.<app>.quarantine.<seq>       an operator's quarantine of the message at stream sequence
 *                                              <seq> (not an event): written once (expected sequence 0)
 *   <prefix>.app.<app>.run.<runId>            one consolidation run: started, each step completed, completed
 *   <prefix>.app.<app>.proposal.<proposalId>  one change a run proposed, and its review (accepted, applied,
 *                                              rejected, reverted)
 *   <prefix>.signal.<app>.<name>              core NATS signals outside every stream (never stored), e.g.
 *                                              `consolidated` when a consolidation run ends
 *   <prefix>.org.memory.<memoryId>            org memories, in the separate org stream
 *   <prefix>.org.quarantine.<seq>             a quarantine in the org stream
 *   <prefix>.cmd.<app>.<actorKind>.<actorId>.<verb>   commands and queries, served by a queue group
 */
export const Prefix = z.string().regex(/^[A-Za-z0-9_-]{1,32}$/, "letters, digits, '_' and '-' (at most 32)");

export const DEFAULT_PREFIX = "memledger";

/**
 * The org is addressed like an app named "org" (a reserved name): its stream is the org stream and its
 * aggregates live under `<prefix>.org.`, so reviewers approve, reject or roll back org memories with the
 * same commands, and readers fold the org stream with the same code.
 */
export const ORG_APP = "org";
export const COMMAND_QUEUE = "memledger-commands";

/**
 * `run`: one consolidation run (its start, steps and end); `proposal`: one change a run proposed, with its
 * evidence and the human decision on it (written first with expected sequence 0: a resumed step never
 * writes a proposal twice).
 */
export const AGGREGATE_KINDS = ["memory", "session", "claim", "quarantine", "run", "proposal"] as const;
export type AggregateKind = (typeof AGGREGATE_KINDS)[number];

/**
 * The aggregate kind of an aggregate subject (`<prefix>.app.<app>.<kind>.<id>` or `<prefix>.org.<kind>.<id>`):
 * its next-to-last token, since ids and prefixes hold no dots. Null for any other subject. A rebuild
 * reads it to skip decoding events no projection it feeds can use.
 */
export function aggregateKindOfSubject(subject: string): AggregateKind | null {
  const last = subject.lastIndexOf(".");
  const before = last > 0 ? subject.lastIndexOf(".", last - 1) : -1;
  if (before < 0) return null;
  const kind = subject.slice(before + 1, last);
  return (AGGREGATE_KINDS as readonly string[]).includes(kind) ? (kind as AggregateKind) : null;
}

export interface Naming {
  readonly prefix: string;
  appStream(app: string): string;
  orgStream(): string;
  appEvents(app: string): string;
  orgEvents(): string;
  aggregate(app: string, kind: AggregateKind, id: string): string;
  /** Every memory subject of one app: the curator's consumer filter (2.9 allows one filter subject). */
  appMemories(app: string): string;
  /** Where the curator's decision on one promotion request goes (appended with expected sequence 0). */
  promotion(app: string, promotionId: string): string;
  /** Where the quarantine of the message at `seq` of the app's (or the org's) stream is written, once. */
  quarantine(app: string, seq: number): string;
  /** Every quarantine of the app's (or the org's) stream. */
  quarantines(app: string): string;
  /** The stream an event subject belongs to (its app's, or the org's); null for a subject outside both. */
  streamOfSubject(subject: string): string | null;
  /** The app whose stream this is (ORG_APP for the org stream), or null for a stream that is not the ledger's. */
  appOfStream(stream: string): string | null;
  /** One org memory aggregate, in the org stream. */
  orgMemory(memoryId: string): string;
  command(app: string, actorKind: ActorKind, actorId: string, verb: string): string;
  allCommands(): string;
  parseCommand(subject: string): { app: string; actorKind: string; actorId: string; verb: string } | null;
  /** KV bucket of embeddings by content hash and model id, shared by every projection under the prefix. */
  embeddingCacheBucket(): string;
  /** KV bucket of projection statuses, one key per instance, projection and stream (`memledger status`). */
  projectionStatusBucket(): string;
  /** KV bucket of running instances: one key per instance id, rewritten by its heartbeat. */
  instancesBucket(): string;
  /** KV bucket of leader leases for read models in shared stores (the claims in Redis, a shared file store). */
  leasesBucket(): string;
  /** The lease key of one shared read model: projection, the store it writes (its id) and the stream. */
  projectionLease(projection: string, storeId: string, stream: string): string;
  /** Object store bucket of session transcripts, each named by its SHA-256 (services/transcripts.ts). */
  transcriptsBucket(): string;
  /** Object store bucket of as-of snapshots: folded memory records at checkpoints, a cache of the log (services/audit/snapshots.ts). */
  asOfSnapshotsBucket(): string;
  /** A core NATS signal about an app, outside every stream (not stored): e.g. `consolidated`. */
  signal(app: string, name: string): string;
  /** Every subject of one aggregate kind of an app (`<…>.<kind>.>`): a consumer filter, e.g. all runs. */
  aggregates(app: string, kind: AggregateKind): string;
  /** The key of an app's consolidation lock in the leases bucket (one dreaming runner per app at a time). */
  dreamLock(app: string): string;
  /** The key of an app's as-of snapshot writer in the leases bucket (one `up` instance writes an app's snapshots). */
  asOfSnapshotLease(app: string): string;
}

/**
 * Whether a JetStream stream belongs to `prefix`: its event streams (`<prefix>_...`), its KV buckets
 * (`KV_<prefix>_...`) and its object stores (`OBJ_<prefix>_...`, the transcripts). Whoever removes a
 * prefix's streams asks this, so that a new kind of bucket is not left behind.
 */
export const isStreamOfPrefix = (prefix: string, stream: string): boolean =>
  stream.startsWith(`${prefix}_`) || stream.startsWith(`KV_${prefix}_`) || stream.startsWith(`OBJ_${prefix}_`);

export function naming(prefix: string = DEFAULT_PREFIX): Naming {
  Prefix.parse(prefix);
  return {
    prefix,
    appStream: (app) => (app === ORG_APP ? `${prefix}_org` : `${prefix}_app_${app}`),
    orgStream: () => `${prefix}_org`,
    appEvents: (app) => (app === ORG_APP ? `${prefix}.org.>` : `${prefix}.app.${app}.>`),
    orgEvents: () => `${prefix}.org.>`,
    aggregate: (app, kind, id) => (app === ORG_APP ? `${prefix}.org.${kind}.${id}` : `${prefix}.app.${app}.${kind}.${id}`),
    appMemories: (app) => `${prefix}.app.${app}.memory.>`,
    promotion: (app, promotionId) => `${prefix}.app.${app}.promotion.${promotionId}`,
    quarantine: (app, seq) => (app === ORG_APP ? `${prefix}.org.quarantine.${seq}` : `${prefix}.app.${app}.quarantine.${seq}`),
    quarantines: (app) => (app === ORG_APP ? `${prefix}.org.quarantine.>` : `${prefix}.app.${app}.quarantine.>`),
    streamOfSubject: (subject) => {
      const parts = subject.split(".");
      if (parts[0] !== prefix) return null;
      if (parts[1] === "org") return `${prefix}_org`;
      return parts[1] === "app" && parts[2] ? `${prefix}_app_${parts[2]}` : null;
    },
    appOfStream: (stream) => {
      if (stream === `${prefix}_org`) return ORG_APP;
      const app = stream.startsWith(`${prefix}_app_`) ? stream.slice(`${prefix}_app_`.length) : "";
      return /^[a-z0-9][a-z0-9_-]*$/.test(app) ? app : null;
    },
    orgMemory: (memoryId) => `${prefix}.org.memory.${memoryId}`,
    command: (app, actorKind, actorId, verb) => `${prefix}.cmd.${app}.${actorKind}.${actorId}.${verb}`,
    allCommands: () => `${prefix}.cmd.>`,
    embeddingCacheBucket: () => `${prefix}_embeddings`,
    projectionStatusBucket: () => `${prefix}_projections`,
    instancesBucket: () => `${prefix}_instances`,
    leasesBucket: () => `${prefix}_leases`,
    projectionLease: (projection, storeId, stream) => `${projection}.${storeId}.${stream}`,
    transcriptsBucket: () => `${prefix}_transcripts`,
    asOfSnapshotsBucket: () => `${prefix}_asof`,
    signal: (app, name) => `${prefix}.signal.${app}.${name}`,
    aggregates: (app, kind) => (app === ORG_APP ? `${prefix}.org.${kind}.>` : `${prefix}.app.${app}.${kind}.>`),
    dreamLock: (app) => `dream.${app}`,
    asOfSnapshotLease: (app) => `asof.${app}`,
    parseCommand(subject) {
      const parts = subject.split(".");
      if (parts.length !== 6 || parts[0] !== prefix || parts[1] !== "cmd") return null;
      const [, , app, actorKind, actorId, verb] = parts as [string, string, string, string, string, string];
      return { app, actorKind, actorId, verb };
    },
  };
}
