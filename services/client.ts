import { randomUUID } from "node:crypto";
import { NoRespondersError, PermissionViolationError, TimeoutError, type NatsConnection } from "@nats-io/transport-node";
import type { RetrievedMemory } from "../projections/search/retrieve.js";
import { naming, type Naming } from "../events/subjects.js";
import {
  READ_MODEL_VERBS,
  REQUESTS,
  WRITE_VERBS,
  type AppendOutcome,
  type ClaimOutcome,
  type PromoteOutcome,
  type Reply,
  type RequestOf,
  type SessionOutcome,
  type Verb,
} from "../schemas/commands.js";
import type { ClaimView } from "../commands/claim.js";
import type { LiveClaim, OpenTask } from "../projections/claims/reader.js";
import type { LedgerEvent } from "../schemas/events.js";
import { ErrorCode, MemledgerError, forbidden, invalid, unavailable } from "../schemas/errors.js";
import { Actor, ActorKind } from "../schemas/primitives.js";
import type { MemoryView } from "./command-service.js";
import type { SessionState } from "../commands/session.js";
import type { MemoryVersion } from "../commands/memory.js";
import type { HistoryEntry } from "./audit/history.js";
import type { RunView } from "./dream/review.js";
import type { ContextPack } from "./hydration/pack.js";
import { causedBy, connectNats } from "./nats.js";
import type { QuarantineOutcome } from "./ledger-admin.js";

export interface MemoryClientOptions {
  app: string;
  /** `alice` (an agent) or `<kind>:<id>` such as `human:alice`. */
  as: string | Actor;
  prefix?: string;
  /** How long one request waits for its reply (default 10 s); a write that timed out is sent once more. */
  timeoutMs?: number;
  /**
   * The session this client works in: sent with every hydrate and search that names none, so the service
   * records what the session was shown (exposure receipts, services/audit/exposure.ts).
   */
  sessionId?: string;
}

export type LogEntry = LedgerEvent & { seq: number; subject: string };

/** The reply to `history`: the memory's events with their provenance, its status and every version. */
export interface MemoryHistoryView {
  memoryId: string;
  app: string;
  seq: number;
  status: string;
  entries: HistoryEntry[];
  versions: MemoryVersion[];
}

export type SessionView = Omit<SessionState, "id" | "applied"> & { sessionId: string; seq: number };

/**
 * A `log` read of up to `limit` entries through `page` (one request each). A reply must fit in one NATS
 * message (the server's max_payload), so the service may answer with fewer entries than asked: this asks
 * again from after the last one until it has `limit`, or a page comes back empty (the end of the log).
 * A request the schema refuses is sent once, as it is, for the service to refuse.
 */
export async function readLogPages(page: (request: RequestOf<"log">) => Promise<LogEntry[]>, options: RequestOf<"log">): Promise<LogEntry[]> {
  const parsed = REQUESTS.log.safeParse(options);
  if (!parsed.success) return page(options);
  const { limit } = parsed.data;
  const out: LogEntry[] = [];
  let request = options;
  for (;;) {
    const got = await page(request);
    out.push(...got);
    if (got.length === 0 || out.length >= limit) return out;
    request = { ...options, sinceSeq: got.at(-1)!.seq + 1, limit: limit - out.length };
  }
}

/**
 * A consolidation run with every proposal, through `page` (one dream_show request each): a reply holds
 * the proposals that fit in one NATS message, and this asks again from its `proposalsNext` until a page
 * ends the run. The view returned is the last page's, with every proposal read.
 */
export async function readRunPages(page: (request: RequestOf<"dream_show">) => Promise<RunView>, runId: string): Promise<RunView> {
  let last = await page({ runId, from: 0 });
  const proposals = [...last.proposals];
  // Proposals are kept in the order they were appended, so an index names the same one on every page.
  while (last.proposalsNext !== null) {
    last = await page({ runId, from: proposals.length });
    if (last.proposals.length === 0) break;
    proposals.push(...last.proposals);
  }
  return { ...last, proposals, proposalsNext: null };
}

export function parseActor(spec: string | Actor): Actor {
  if (typeof spec !== "string") return Actor.parse(spec);
  const [kind, id] = spec.includes(":") ? spec.split(":", 2) : ["agent", spec];
  const parsed = Actor.safeParse({ kind, id });
  if (!parsed.success) {
    throw invalid(`bad actor '${spec}': use <id> or <kind>:<id> with kind one of ${ActorKind.options.join(", ")}`);
  }
  return parsed.data;
}

type Without<T, K extends keyof any> = Omit<T, K>;

/**
 * The typed way to talk to memledger: every method is one request to the command service and either
 * resolves with its result or rejects with a MemledgerError carrying the reply's code.
 */
export class MemoryClient {
  readonly actor: Actor;
  private readonly names: Naming;
  private readonly timeoutMs: number;
  private seen = 0;

  constructor(readonly nc: NatsConnection, readonly options: MemoryClientOptions) {
    this.actor = parseActor(options.as);
    this.names = naming(options.prefix);
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  /**
   * Replies arrive under `inboxPrefix`; by default the user's own `_INBOX_<user>` when the URL logs in as
   * a user (what `memledger auth config` permits), else the shared `_INBOX` (services/nats.ts).
   */
  static async connect(options: MemoryClientOptions & { servers?: string; inboxPrefix?: string }): Promise<MemoryClient> {
    const nc = await connectNats({ servers: options.servers, name: `memledger-client-${options.app}`, reconnect: false, inboxPrefix: options.inboxPrefix });
    return new MemoryClient(nc, options);
  }

  async close(): Promise<void> {
    await this.nc.close();
  }

  subjectFor(verb: string): string {
    return this.names.command(this.options.app, this.actor.kind, this.actor.id, verb);
  }

  /**
   * The highest stream sequence of this app this client has written or read. Queries answered from read
   * models (hydrate, search, claims, tasks) send it as `minSeq`, so whichever instance answers has applied
   * this client's own writes first.
   */
  get seenSeq(): number {
    return this.seen;
  }

  /** Counts a sequence learnt elsewhere (another client of the same agent, a handed-over session) as seen. */
  observe(seq: number): void {
    if (Number.isInteger(seq) && seq > this.seen) this.seen = seq;
  }

  /**
   * One request and its reply. Writes get an idempotency key unless the caller gave one (a fresh UUID per
   * call), and a write whose reply timed out is sent once more with the same key: it may have landed, and
   * the retry is then answered as a replay instead of appending twice.
   */
  async request<V extends Verb, R>(verb: V, payload: RequestOf<V>): Promise<R> {
    const subject = this.subjectFor(verb);
    const isWrite = WRITE_VERBS.has(verb);
    const fields = payload as Record<string, unknown>;
    // A payload that is not an object is sent as it is, for the service to refuse.
    const isObject = typeof payload === "object" && payload !== null && !Array.isArray(payload);
    const body = !isObject
      ? payload
      : isWrite
        ? { ...fields, key: fields.key ?? randomUUID() }
        : READ_MODEL_VERBS.has(verb) && fields.minSeq === undefined && this.seen > 0
          ? { ...fields, minSeq: this.seen }
          : fields;
    const data = JSON.stringify(body);
    let raw: string | undefined;
    for (let attempt = 1; raw === undefined; attempt++) {
      try {
        raw = (await this.nc.request(subject, data, { timeout: this.timeoutMs })).string();
      } catch (err) {
        if (isWrite && attempt === 1 && isTimeout(err)) continue;
        throw this.transportError(err, verb, subject);
      }
    }
    const reply = JSON.parse(raw) as Reply<R>;
    if (reply.ok) {
      this.observeResult(reply.result);
      return reply.result;
    }
    const code = Object.values(ErrorCode).includes(reply.error.code as ErrorCode) ? (reply.error.code as ErrorCode) : ErrorCode.internal;
    throw new MemledgerError(code, reply.error.message, reply.error.details ?? {});
  }

  /** Every reply that names a stream sequence (outcomes, show, log entries) moves what this client has seen. */
  private observeResult(result: unknown): void {
    const items = Array.isArray(result) ? result : [result];
    for (const item of items) {
      const seq = (item as { seq?: unknown } | null)?.seq;
      if (typeof seq === "number") this.observe(seq);
    }
  }

  private transportError(err: unknown, verb: Verb, subject: string): MemledgerError {
    const message = (err as Error).message ?? String(err);
    if (causedBy(err, NoRespondersError)) {
      return unavailable(`no memledger service answers on ${subject}: is 'memledger up' running?`, undefined, err);
    }
    // An auth-enabled broker lets a user publish only as itself (memledger auth config).
    if (causedBy(err, PermissionViolationError)) {
      return forbidden(`the broker refused ${verb} on ${subject}: this connection's user may not act as ${this.actor.kind}:${this.actor.id}`, { subject }, err);
    }
    return unavailable(`request ${verb} failed: ${message}`, undefined, err);
  }

  propose(input: RequestOf<"propose">): Promise<AppendOutcome> {
    return this.request("propose", input);
  }

  approve(memoryId: string, options: Without<RequestOf<"approve">, "memoryId"> = {}): Promise<AppendOutcome> {
    return this.request("approve", { ...options, memoryId });
  }

  reject(memoryId: string, reason: string, options: Without<RequestOf<"reject">, "memoryId" | "reason"> = {}): Promise<AppendOutcome> {
    return this.request("reject", { ...options, memoryId, reason });
  }

  supersede(memoryId: string, reason: string, options: Without<RequestOf<"supersede">, "memoryId" | "reason"> = {}): Promise<AppendOutcome> {
    return this.request("supersede", { ...options, memoryId, reason });
  }

  rollback(memoryId: string, toVersion: number, options: Without<RequestOf<"rollback">, "memoryId" | "toVersion"> = {}): Promise<AppendOutcome> {
    return this.request("rollback", { ...options, memoryId, toVersion });
  }

  /**
   * Asks the curator to make the memory's active, approved version org knowledge. Resolves once the request
   * is stored; the curator's decision (accepted, merged or rejected, with reasons) appears in `show`'s
   * `promotions`. Promoting the same version twice is a `conflict` (details.promotionId).
   */
  promote(memoryId: string, options: Without<RequestOf<"promote">, "memoryId"> = {}): Promise<PromoteOutcome> {
    return this.request("promote", { ...options, memoryId });
  }

  /**
   * Admins only: sets aside the message at stream sequence `seq` of this client's app (the org stream
   * for app `org`), which is not a valid event and blocks the projections. Appends an audited
   * `ledger.quarantined` event, once per sequence; history is not edited (services/ledger-admin.ts).
   */
  quarantine(seq: number, reason: string, options: Without<RequestOf<"quarantine">, "seq" | "reason"> = {}): Promise<QuarantineOutcome> {
    return this.request("quarantine", { ...options, seq, reason });
  }

  show(memoryId: string): Promise<MemoryView> {
    return this.request("show", { memoryId });
  }

  /** A memory's history from the log (services/audit/history.ts): every event with its provenance, and every version. */
  history(memoryId: string): Promise<MemoryHistoryView> {
    return this.request("history", { memoryId });
  }

  /**
   * The app's events from `sinceSeq` on (or one memory's), oldest first: up to `limit` of those the
   * actor may read, every one of them if the log holds fewer (see readLogPages).
   */
  log(options: RequestOf<"log"> = {}): Promise<LogEntry[]> {
    return readLogPages((request) => this.request("log", request), options);
  }

  /** A consolidation run with its proposals, their evidence and status: every page of them (readRunPages). */
  dreamShow(runId: string): Promise<RunView> {
    return readRunPages((request) => this.request("dream_show", request), runId);
  }

  startSession(input: RequestOf<"session_start"> = {}): Promise<SessionOutcome> {
    return this.request("session_start", input);
  }

  /**
   * Ends a session. With `transcriptFile` (or `transcriptBytes`), stores the transcript in the transcripts
   * object store first (digest-addressed, services/transcripts.ts) and the session.ended event references it.
   */
  async endSession(
    sessionId: string,
    options: Without<RequestOf<"session_end">, "sessionId"> & { transcriptFile?: string; transcriptBytes?: Uint8Array } = {},
  ): Promise<SessionOutcome> {
    const { transcriptFile, transcriptBytes, ...request } = options;
    if (transcriptFile !== undefined || transcriptBytes !== undefined) {
      const transcripts = await import("./transcripts.js");
      const store = await transcripts.useTranscripts(this.nc, this.names);
      request.transcript =
        transcriptBytes !== undefined ? await transcripts.putTranscript(store, transcriptBytes) : await transcripts.putTranscriptFile(store, transcriptFile!);
    }
    return this.request("session_end", { ...request, sessionId });
  }

  showSession(sessionId: string): Promise<SessionView> {
    return this.request("session_show", { sessionId });
  }

  /** Opens a task (name: an id) that agents can claim; priority 1 is the most urgent (default 3). */
  openTask(name: string, options: Without<RequestOf<"open_task">, "name"> = {}): Promise<ClaimOutcome> {
    return this.request("open_task", { ...options, name });
  }

  /**
   * Claims a task (default) or a lock (`kind: "lock"`, name: a module or file path) for `ttlMs`
   * (default 10 minutes). Rejects with `conflict` (details.holder, details.expiresAt) while another
   * agent holds a live lease, or while you hold it yourself (reason `already_held`: renew instead).
   */
  claim(name: string, options: Without<RequestOf<"claim">, "name"> = {}): Promise<ClaimOutcome> {
    return this.request("claim", { ...options, name });
  }

  /** Extends your live lease by `ttlMs` from now (default: the last lease length). */
  renew(name: string, options: Without<RequestOf<"renew">, "name"> = {}): Promise<ClaimOutcome> {
    return this.request("renew", { ...options, name });
  }

  /** Lets go of a task or lock you hold; `done: true` finishes a task for good. */
  release(name: string, options: Without<RequestOf<"release">, "name"> = {}): Promise<ClaimOutcome> {
    return this.request("release", { ...options, name });
  }

  /** One task or lock as its own events say (read-your-writes). */
  showClaim(name: string, options: Without<RequestOf<"claim_show">, "name"> = {}): Promise<ClaimView & { seq: number }> {
    return this.request("claim_show", { ...options, name });
  }

  /** Live claims of the app, or of one agent, from the Redis claims projection (eventually consistent). */
  claims(options: RequestOf<"claims"> = {}): Promise<LiveClaim[]> {
    return this.request("claims", options);
  }

  /** Tasks not done, most urgent first, from the Redis claims projection. */
  tasks(options: RequestOf<"tasks"> = {}): Promise<OpenTask[]> {
    return this.request("tasks", options);
  }

  /**
   * One markdown context pack for starting a session (fragile memories on `paths`, others' claims,
   * memories relevant to `task`, MEMORY.md, changes since your last session), never over `budget`
   * tokens (default 4000), with per-section metadata. `agent` defaults to this client's actor id.
   */
  hydrate(input: RequestOf<"hydrate"> = {}): Promise<ContextPack> {
    return this.request("hydrate", this.options.sessionId !== undefined && input.sessionId === undefined ? { ...input, sessionId: this.options.sessionId } : input);
  }

  /**
   * Hybrid (BM25 + vector) search over the app's and the org's active memories, best first (`limit`,
   * default 10; `mode` bm25, vector or hybrid; `scope`, `kind`, `tags`, `paths` narrow it). Answered from
   * the serving instance's live search index once it has applied this client's writes.
   */
  search(query: string, options: Without<RequestOf<"search">, "query"> = {}): Promise<RetrievedMemory[]> {
    return this.request("search", { sessionId: this.options.sessionId, ...options, query });
  }
}

/** The request's reply did not come in time (nats.js's TimeoutError, or a request error caused by one). */
const isTimeout = (err: unknown): boolean => causedBy(err, TimeoutError);
