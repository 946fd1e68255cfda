import { randomUUID } from "node:crypto";
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import { z } from "zod";
import { memoryDecider, memoryStatus, memoryView, type MemoryState } from "../commands/memory.js";
import { sessionDecider, type SessionState } from "../commands/session.js";
import { claimDecider, claimIdOf, claimView, type ClaimState } from "../commands/claim.js";
import { promotionDecider, promotionView, type PromotableMemoryState, type PromotionView } from "../commands/promotion.js";
import type { ClaimsReader } from "../projections/claims/reader.js";
import { COMMAND_QUEUE, ORG_APP, naming, type Naming } from "../events/subjects.js";
import {
  REQUESTS,
  type AppendOutcome,
  type ClaimOutcome,
  type ParsedRequestOf,
  type PromoteOutcome,
  type Reply,
  type SessionOutcome,
  type Verb,
  APPENDING_VERBS,
} from "../schemas/commands.js";
import { ErrorCode, MemledgerError, forbidden, internal, invalid, notFound, unavailable } from "../schemas/errors.js";
import { maxPayloadOf, replyRefusal } from "./nats.js";
import { quarantineMessage } from "./ledger-admin.js";
import type { ClaimEvent, MemoryPromotionAccepted, MemoryPromotionRejected } from "../schemas/events.js";
import { Actor, AppName } from "../schemas/primitives.js";
import { CommandHandler, idForKey, newAggregateId, type CommandContext, type CommandHandlerOptions } from "./command-handler.js";
import { EventStore, type EventStoreOptions, type StoredEvent } from "./event-store.js";
import { PolicyGuard, SessionFactsNeeded, readableTopK, type GovernedCheck } from "./auth/guard.js";
import { loadSessionWith, type ScopeReader } from "./auth/sessions.js";
import { sessionOfScope } from "../schemas/policy.js";
import { Hydrator, type HydrationOptions } from "./hydration/service.js";
import { refuseSecrets } from "./secrets-gate.js";
import { retrieve, type RetrievedMemory, type SearchIndex } from "../projections/search/index.js";
import { PERMISSIVE_POLICY, type Policy } from "../schemas/policy.js";
import type { ObjectStore } from "@nats-io/obj";
import { checkTranscript, openTranscripts } from "./transcripts.js";
import { ExposureRecorder } from "./audit/exposure.js";
import { memoryHistory } from "./audit/history.js";
import { memoizedTokens, o200kTokens } from "./hydration/tokens.js";
import type { ExposureReceipt } from "../schemas/events.js";
import { acceptProposals, listRuns, rejectProposals, revertRun, showRun, type ReviewDeps, type RunView } from "./dream/review.js";

export interface CommandServiceOptions extends EventStoreOptions, CommandHandlerOptions {
  prefix?: string;
  /** Called for failures that are not the sender's fault, for the operator's log. */
  onError?: (err: unknown, subject: string) => void;
  /** Read side of the `claims` and `tasks` queries (the Redis claims projection); without it they answer `unavailable`. */
  claims?: ClaimsReader;
  /** Who may do what (schemas/policy.ts); without one every actor may do everything, as before policies. */
  policy?: Policy;
  /**
   * Where `hydrate` finds MEMORY.md and the live search index (`search` answers from the same index);
   * claims and the clock come from above.
   */
  hydration?: Omit<HydrationOptions, "claims" | "now">;
  /**
   * Waits until this process's read models of `app` (search index, files, claims) have applied stream
   * sequence `seq`, for at most `timeoutMs`; answers whether they did and where they are. Queries that
   * carry `minSeq` (hydrate, search, claims, tasks) wait on it; without it they answer at once (a service
   * without projections reads nothing that lags: hydrate catches up from the log itself).
   */
  readModelsAt?: (app: string, seq: number, timeoutMs: number) => Promise<ReadModelsPosition>;
  /** How long a query with `minSeq` waits for the read models before answering `unavailable` (default 5 s). */
  readWaitMs?: number;
  /** Exposure receipts (services/audit/exposure.ts): how long one waits to share an event (default 25 ms). */
  exposureFlushMs?: number;
}

export interface ReadModelsPosition {
  reached: boolean;
  /** The lowest sequence every read model of the app has applied. */
  position: number;
}

export const DEFAULT_READ_WAIT_MS = 5000;

/** MEMLEDGER_READ_WAIT_MS: how long `up` lets a query with minSeq wait for its read models (default 5 s). */
export function readWaitMsFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.MEMLEDGER_READ_WAIT_MS?.trim();
  if (!raw) return DEFAULT_READ_WAIT_MS;
  const ms = Number(raw);
  if (!Number.isInteger(ms) || ms < 0 || ms > 600_000) throw invalid(`bad MEMLEDGER_READ_WAIT_MS '${raw}': whole milliseconds from 0 to 600000`);
  return ms;
}

/** A memory as `show` returns it: every version, the active one, the sequence to send back, its promotions. */
export type MemoryView = ReturnType<typeof memoryView> & { promotions: PromotionView[] };

const sessionView = (id: string, state: SessionState, seq: number) => {
  const { applied: _applied, ...rest } = state;
  return { ...rest, sessionId: id, seq };
};

const logEntry = (stored: StoredEvent) => ({ seq: stored.seq, subject: stored.subject, ...stored.event });

/** What a reply adds around its result (`{"ok":true,"result":…}`), with room to spare. */
const REPLY_ENVELOPE_BYTES = 1024;

/**
 * The bytes left in one reply as a paged read (`log`, `dream_show`) adds items to it: the server's
 * max_payload, less the envelope and what the reply holds besides its list. The first item is always
 * taken, so that a page always advances; one that alone does not fit is then the reply-size error
 * (CommandService.sendable).
 */
class ReplyBudget {
  private left: number;
  private taken = 0;

  constructor(maxPayload: number, besides = 0) {
    this.left = maxPayload - REPLY_ENVELOPE_BYTES - besides;
  }

  /** Counts `item` in (its JSON and a comma) if it fits, or it is the first; false when the page is full. */
  take(item: unknown): boolean {
    const size = Buffer.byteLength(JSON.stringify(item), "utf8") + 1;
    if (this.taken > 0 && size > this.left) return false;
    this.left -= size;
    this.taken++;
    return true;
  }
}
/** Events a `log` request fetches from the stream at a time (one consumer per request): a reply that fills early reads little more than it sends. */
const LOG_READ_CHUNK = 1000;

type Handler<V extends Verb> = (request: ParsedRequestOf<V>, ctx: CommandContext, check?: GovernedCheck) => Promise<unknown>;

/** The guard's check as the command handler runs it, on the memory state each attempt decides on. */
const onMemory = (check: GovernedCheck | undefined) => (check ? { authorize: (state: MemoryState) => check.authorize(state.scope) } : {});

const contextOf = (app: string, actor: Actor, request: Record<string, unknown>): CommandContext => ({
  app,
  actor,
  expectedSeq: request.expectedSeq as number | undefined,
  key: request.key as string | undefined,
  sessionId: request.sessionId as string | undefined,
  transcriptRef: request.transcriptRef as string | undefined,
  git: request.git as CommandContext["git"],
  causationId: request.causationId as string | undefined,
  correlationId: request.correlationId as string | undefined,
});

/**
 * Serves `<prefix>.cmd.<app>.<actorKind>.<actorId>.<verb>` in a queue group, so any number of instances
 * share the load. Every request gets exactly one JSON reply: `{ok:true,result}` or `{ok:false,error}`.
 * The actor is taken from the subject, which the broker's permissions can pin to the sender.
 */
export class CommandService {
  private subscription: Subscription | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  readonly names: Naming;
  /** The clock claims' leases are decided against (CommandHandlerOptions.now; tests inject one). */
  private clock: () => Date = () => new Date();
  private claimsReader: ClaimsReader | undefined;
  /** Apps, governed verbs and reads (services/auth/guard.ts); the permissive default without a policy. */
  private guard!: PolicyGuard;
  private hydrator!: Hydrator;
  private searchIndex: ((app: string) => SearchIndex | undefined) | undefined;
  private readModelsAt: CommandServiceOptions["readModelsAt"];
  private readWaitMs = DEFAULT_READ_WAIT_MS;
  /**
   * Promotions are decided over the memory subject with their own fold (lifecycle plus promotions), so
   * they get their own handler: the handler caches state by subject, and the two folds must not share it.
   * Either cache going stale costs a reload on the next append (10071), never a lost update.
   */
  private promotionHandler!: CommandHandler;
  /** Receipts of what hydrate and search showed a session, appended after the reply (services/audit/exposure.ts). */
  private exposure!: ExposureRecorder;
  /** A reply's receipt, found by the reply's result once it is sent; a result never sent leaves nothing behind. */
  private readonly receipts = new WeakMap<object, { sessionId: string; receipt: () => ExposureReceipt }>();

  private constructor(
    readonly nc: NatsConnection,
    readonly store: EventStore,
    readonly handler: CommandHandler,
    private readonly onError: (err: unknown, subject: string) => void,
  ) {
    this.names = store.names;
  }

  static async start(nc: NatsConnection, options: CommandServiceOptions = {}): Promise<CommandService> {
    const names = naming(options.prefix);
    const store = await EventStore.open(nc, names, options);
    const service = new CommandService(nc, store, new CommandHandler(store, options), options.onError ?? (() => undefined));
    service.promotionHandler = new CommandHandler(store, options);
    service.exposure = new ExposureRecorder(service.handler, { flushMs: options.exposureFlushMs, onError: (err, where) => service.onError(err, where) });
    if (options.now) service.clock = options.now;
    service.claimsReader = options.claims;
    service.searchIndex = options.hydration?.searchIndex;
    service.readModelsAt = options.readModelsAt;
    service.readWaitMs = options.readWaitMs ?? DEFAULT_READ_WAIT_MS;
    service.hydrator = new Hydrator(store, { ...options.hydration, claims: options.claims, now: () => service.clock() });
    service.guard = new PolicyGuard(options.policy ?? PERMISSIVE_POLICY, {
      approve: (request, ctx) => service.handlers.approve(request, ctx) as Promise<AppendOutcome>,
      onError: (err, where) => service.onError(err, where),
      // Session candidates' scopes are judged on the session aggregate (services/auth/sessions.ts).
      session: loadSessionWith(service.handler),
    });
    // The transcripts bucket is there before any agent stores one: agents may not create it (its
    // configuration is the service's: services/auth/broker-config.ts).
    const transcripts = await openTranscripts(nc, names, { replicas: options.replicas });
    service.transcripts = Promise.resolve(transcripts);
    service.subscription = nc.subscribe(names.allCommands(), {
      queue: COMMAND_QUEUE,
      callback: (err, msg) => {
        if (err) return;
        const task = service.serve(msg).finally(() => service.inFlight.delete(task));
        service.inFlight.add(task);
      },
    });
    // Make sure the server registered the subscription before anyone is told we are ready.
    await nc.flush();
    return service;
  }

  /** Stops taking requests, lets those under way finish and reply, then returns. */
  async stop(): Promise<void> {
    await this.subscription?.drain();
    await Promise.allSettled([...this.inFlight]);
    await this.exposure.drain();
  }

  /**
   * The run with its proposals from index `from` on, as many as fit in one reply (ReplyBudget). A run
   * of a few hundred proposals with evidence is past 1 MiB, the default max_payload: the SDK's dreamShow
   * asks again from `proposalsNext`.
   */
  private proposalsPage(run: RunView, from: number): RunView {
    const { proposals, ...rest } = run;
    const budget = new ReplyBudget(maxPayloadOf(this.nc), Buffer.byteLength(JSON.stringify(rest), "utf8"));
    const page: RunView["proposals"] = [];
    let next = from;
    for (; next < proposals.length && budget.take(proposals[next]); next++) page.push(proposals[next]!);
    return { ...rest, proposals: page, proposalsNext: next < proposals.length ? next : null };
  }

  /**
   * The reply as text, or, when it is larger than the server's max_payload, an error saying so: such a
   * reply cannot be sent, and the requester would only see its request time out. A read is `invalid`
   * (ask for less); a verb that appends (APPENDING_VERBS) was applied before its reply was built, so it
   * is `internal` and says so.
   */
  private sendable(subject: string, reply: Reply<unknown>): { reply: Reply<unknown>; text: string } {
    const text = JSON.stringify(reply);
    const max = maxPayloadOf(this.nc);
    // A UTF-16 code unit is at most 3 bytes of UTF-8: most replies need no byte count.
    if (text.length * 3 <= max) return { reply, text };
    const bytes = Buffer.byteLength(text, "utf8");
    if (bytes <= max) return { reply, text };
    const verb = this.names.parseCommand(subject)?.verb ?? "the request";
    const details = { verb, replyBytes: bytes, maxPayload: max };
    const error = APPENDING_VERBS.has(verb as Verb)
      ? internal(`${verb} was applied, but its reply (${bytes} bytes) is larger than this NATS server's max_payload (${max} bytes); read the result back`, details)
      : invalid(`the reply to ${verb} is ${bytes} bytes, larger than this NATS server's max_payload (${max} bytes); ask for less`, details);
    this.onError(error, subject);
    // Not ok: what a search or hydrate would have shown was not shown, so no exposure receipt follows.
    const refused: Reply<unknown> = { ok: false, error: { code: error.code, message: error.message, details } };
    return { reply: refused, text: JSON.stringify(refused) };
  }

  /** Appends every exposure receipt queued so far and waits for it (tests; `stop` does it too). */
  flushExposure(): Promise<void> {
    return this.exposure.drain();
  }

  private async serve(msg: Msg): Promise<void> {
    // Answer only into the sender's inbox (services/nats.ts replyRefusal): a reply aimed at a stream
    // subject would be stored as junk. Such a request is not run at all: no reply, nothing appended.
    const route = msg.reply ? this.names.parseCommand(msg.subject) : null;
    const badReply = msg.reply ? replyRefusal(msg.reply, this.names.prefix, route && { kind: route.actorKind, id: route.actorId }) : null;
    if (badReply !== null) {
      this.onError(forbidden(`refused a request on ${msg.subject} without running it: ${badReply}`, { subject: msg.subject, reply: msg.reply }), msg.subject);
      return;
    }
    let reply: Reply<unknown>;
    try {
      reply = { ok: true, result: await this.dispatch(msg.subject, msg.data) };
    } catch (err) {
      const correlationId = randomUUID();
      reply = { ok: false, error: toWireError(err, correlationId) };
      if (!(err instanceof MemledgerError) || err.code === ErrorCode.internal || err.code === ErrorCode.unavailable) {
        this.onError(err, `${msg.subject} (correlation id ${correlationId})`);
      }
    }
    if (msg.reply) {
      const sent = this.sendable(msg.subject, reply);
      reply = sent.reply;
      try {
        msg.respond(sent.text);
      } catch (err) {
        this.onError(err, msg.subject);
      }
    }
    // After the reply: what a hydrate or search showed its session (queued, appended later, batched).
    if (reply.ok && typeof reply.result === "object" && reply.result !== null) {
      const pending = this.receipts.get(reply.result);
      const sender = pending && this.names.parseCommand(msg.subject);
      if (pending && sender) {
        try {
          this.exposure.record(sender.app, { kind: sender.actorKind, id: sender.actorId } as Actor, pending.sessionId, pending.receipt());
        } catch (err) {
          this.onError(err, msg.subject);
        }
      }
    }
  }

  async dispatch(subject: string, data: Uint8Array): Promise<unknown> {
    const route = this.names.parseCommand(subject);
    if (!route) throw invalid(`not a command subject: ${subject}`);
    const app = AppName.safeParse(route.app);
    if (!app.success) throw invalid(`bad app name '${route.app}': ${app.error.issues[0]?.message}`);
    // An app the policy does not declare does not exist: nothing below may create its stream.
    this.guard.requireApp(app.data);
    const actor = Actor.safeParse({ kind: route.actorKind, id: route.actorId });
    if (!actor.success) {
      throw invalid(
        `bad actor '${route.actorKind}.${route.actorId}' in the subject: kind must be agent, human or service, and the id 1-64 of A-Z a-z 0-9 _ -`,
      );
    }
    if (!Object.hasOwn(REQUESTS, route.verb)) {
      throw invalid(`unknown verb '${route.verb}'; known: ${Object.keys(REQUESTS).join(", ")}`);
    }
    const verb = route.verb as Verb;
    const request = parseRequest(verb, data);
    const handler = this.handlers[verb] as Handler<Verb>;
    const ctx = contextOf(app.data, actor.data, request as Record<string, unknown>);
    // Authorization (services/auth/guard.ts): a governed verb is authorised inside the handler's decide
    // step, against the state it acts on; the check may follow up (auto-approve).
    const check = this.guard.prepare(verb, request as Record<string, unknown>, ctx);
    const minSeq = (request as { minSeq?: number }).minSeq;
    if (minSeq) await this.readModelsReached(ctx.app, minSeq);
    // A proposal naming a session's scope: read that session now rather than on a first refused attempt.
    const namedSession = sessionOfScope(String((request as { scope?: unknown }).scope ?? ""));
    if (check && namedSession !== null) await check.learn(namedSession);
    for (let attempt = 1; ; attempt++) {
      try {
        const result = await handler(request, ctx, check);
        return check ? check.followUp(result) : result;
      } catch (err) {
        // The memory lives in a session's scope (a revision, an approval, …): read the session, decide again.
        if (!(err instanceof SessionFactsNeeded) || !check || attempt >= 3) throw err;
        await check.learn(err.sessionId);
      }
    }
  }

  /**
   * Runs a read with the actor's scope filter for this app, and again when it met session scopes it had
   * not resolved yet (services/auth/sessions.ts ScopeReader): the filter is synchronous and closed for what
   * it does not know, so the second pass is the one that may show them. Reads only: running one twice is safe.
   */
  private readAs<T>(ctx: CommandContext, readerSession: string | undefined, run: (reader: ScopeReader) => Promise<T>): Promise<T> {
    return this.guard.reader(ctx.actor, ctx.app, readerSession).twoPass(run);
  }

  /**
   * Read-your-writes across instances: the sender has seen `minSeq` (it wrote or read it, perhaps through
   * another instance); answer only once this instance's read models have applied it.
   */
  private async readModelsReached(app: string, minSeq: number): Promise<void> {
    if (!this.readModelsAt) return;
    const started = Date.now();
    const { reached, position } = await this.readModelsAt(app, minSeq, this.readWaitMs);
    if (reached) return;
    throw unavailable(
      `the read models of ${app} on this instance are at sequence ${position}, behind the ${minSeq} you have seen (lag ${minSeq - position}); waited ${Date.now() - started} ms: retry`,
      { minSeq, position, lag: minSeq - position, waitedMs: Date.now() - started },
    );
  }

  /**
   * Hybrid retrieval over the live search indexes this process keeps (projections/search/retrieve.ts):
   * the app's, and the org's marked `origin: "org"` (an org request searches the org alone).
   */
  private async search(app: string, r: ParsedRequestOf<"search">): Promise<RetrievedMemory[]> {
    if (!this.searchIndex) throw unavailable("search needs the search projection running in this process (memledger up)");
    const apps = app === ORG_APP ? [ORG_APP] : [app, ORG_APP];
    const indexes: SearchIndex[] = [];
    for (const a of apps) {
      const index = this.searchIndex(a);
      if (index) indexes.push(index);
      // The app's stream without its index here: the projection has not loaded it (yet). An empty answer
      // would say "nothing matches", which nobody checked; say so instead (a query with minSeq waited for
      // it). The org's index only adds to an app's results: while it loads, the app's are the answer.
      else if (a === app && (await this.streamExists(a))) {
        throw unavailable(`the search index of ${a} is not loaded on this instance yet: retry, or send minSeq to wait for it`, { app: a });
      }
    }
    const mode = r.mode ?? (indexes.every((i) => i.vectors) ? "hybrid" : "bm25");
    return retrieve(indexes, r.query, { k: r.limit, mode, scope: r.scope, kind: r.kind, tags: r.tags, paths: r.paths });
  }

  private async streamExists(app: string): Promise<boolean> {
    return this.store.jsm.streams.info(this.names.appStream(app)).then(
      () => true,
      () => false,
    );
  }

  private memoryOutcome(executed: { aggregateId: string; seq: number; replayed: boolean; event: { id: string; type: string; data: unknown } }, version: number | null): AppendOutcome {
    return {
      memoryId: executed.aggregateId,
      version,
      seq: executed.seq,
      eventId: executed.event.id,
      type: executed.event.type,
      replayed: executed.replayed,
    };
  }

  /** What one claim event left: holder and expiry as that event says (also for a replayed command). */
  private claimOutcome(executed: { aggregateId: string; seq: number; replayed: boolean; event: { id: string; type: string }; state: ClaimState }): ClaimOutcome {
    const event = executed.event as ClaimEvent;
    const lease =
      event.type === "claim.claimed" || event.type === "claim.renewed"
        ? { holder: event.data.holder, expiresAt: event.data.expiresAt }
        : event.type === "claim.released"
          ? { holder: null, expiresAt: null }
          : { holder: executed.state.holder, expiresAt: executed.state.expiresAt };
    return {
      claimId: executed.aggregateId,
      kind: executed.state.kind ?? "task",
      name: executed.state.name ?? "",
      ...lease,
      takeoverOf: event.type === "claim.claimed" ? event.data.takeoverOf : null,
      done: event.type === "claim.released" ? event.data.done : executed.state.done,
      seq: executed.seq,
      eventId: event.id,
      type: event.type,
      replayed: executed.replayed,
    };
  }

  /** Each requested promotion with the curator's decision, read from the promotion's own subject. */
  private async promotionsOf(app: string, state: PromotableMemoryState): Promise<PromotionView[]> {
    const stream = this.names.appStream(app);
    return Promise.all(
      state.promotions.map(async (request) => {
        for await (const stored of this.store.readSubject(stream, this.names.promotion(app, request.promotionId))) {
          return promotionView(request, { seq: stored.seq, event: stored.event as MemoryPromotionAccepted | MemoryPromotionRejected });
        }
        return promotionView(request, null);
      }),
    );
  }

  /** What review needs: the one write path and the policy that says who may decide a run. */
  private reviewDeps(): ReviewDeps {
    return { store: this.store, handler: this.handler, policy: this.guard.policy };
  }

  private transcripts: Promise<ObjectStore> | undefined;
  /** Opened on the first session_end that names a transcript. */
  private transcriptStore(): Promise<ObjectStore> {
    this.transcripts ??= openTranscripts(this.nc, this.names).catch((err) => {
      this.transcripts = undefined;
      throw err;
    });
    return this.transcripts;
  }

  private readonly handlers: { [V in Verb]: Handler<V> } = {
    propose: async (r, ctx, check) => {
      // The org stream holds org memories only: whatever lands there is in scope org.
      if (ctx.app === ORG_APP && r.scope !== undefined && r.scope !== "org") {
        throw invalid(`the org holds only scope org, not ${r.scope}; propose app memories in their app and promote them`);
      }
      const scope = ctx.app === ORG_APP ? "org" : r.scope;
      const memoryId = r.memoryId ?? (ctx.key !== undefined ? idForKey(ctx, "memory", ctx.key) : newAggregateId());
      // Nothing credential-shaped enters the permanent log, in any scope (services/secrets-gate.ts).
      await refuseSecrets(this.guard.policy, {
        content: r,
        actor: ctx.actor,
        // Only a memory that may exist already (a revision, a keyed retry) needs its stored scope read.
        scope: async () =>
          ctx.app === ORG_APP || (r.memoryId === undefined && ctx.key === undefined)
            ? (scope ?? "app")
            : ((await this.handler.load(memoryDecider, ctx.app, memoryId)).state.scope ?? scope ?? "app"),
      });
      // A generated id, or one derived from a key, most likely has no history yet (a retry's has: the
      // append expecting an empty subject then fails and the handler reloads and replays).
      const isNew = r.memoryId === undefined;
      const executed = await this.handler.execute(
        memoryDecider,
        memoryId,
        {
          type: "propose",
          revision: r.memoryId !== undefined && r.expectedSeq !== 0,
          scope,
          title: r.title,
          body: r.body,
          kind: r.kind,
          tags: r.tags,
          paths: r.paths,
          importance: r.importance,
        },
        ctx,
        { isNew, ...onMemory(check) },
      );
      return this.memoryOutcome(executed, versionOf(executed.event));
    },
    approve: async (r, ctx, check) => {
      const executed = await this.handler.execute(memoryDecider, r.memoryId, { type: "approve", version: r.version }, ctx, onMemory(check));
      return this.memoryOutcome(executed, versionOf(executed.event));
    },
    reject: async (r, ctx, check) => {
      const executed = await this.handler.execute(memoryDecider, r.memoryId, { type: "reject", version: r.version, reason: r.reason }, ctx, onMemory(check));
      return this.memoryOutcome(executed, versionOf(executed.event));
    },
    supersede: async (r, ctx, check) => {
      const executed = await this.handler.execute(memoryDecider, r.memoryId, { type: "supersede", by: r.by ?? null, reason: r.reason }, ctx, onMemory(check));
      return this.memoryOutcome(executed, executed.state.activeVersion);
    },
    rollback: async (r, ctx, check) => {
      const executed = await this.handler.execute(memoryDecider, r.memoryId, { type: "rollback", toVersion: r.toVersion }, ctx, onMemory(check));
      return this.memoryOutcome(executed, versionOf(executed.event));
    },
    promote: async (r, ctx, check): Promise<PromoteOutcome> => {
      // Governed on the promoted memory's own scope (the curator refuses scratchpads whoever asks).
      const authorize = check ? (state: PromotableMemoryState) => check.authorize(state.memory.scope) : undefined;
      const executed = await this.promotionHandler.execute(promotionDecider, r.memoryId, { type: "promote", reason: r.reason ?? null }, ctx, { authorize });
      const data = executed.event.data as { promotionId: string; version: number };
      return {
        memoryId: executed.aggregateId,
        promotionId: data.promotionId,
        version: data.version,
        seq: executed.seq,
        eventId: executed.event.id,
        type: executed.event.type,
        replayed: executed.replayed,
      };
    },
    // An admin sets aside a message that is not an event (services/ledger-admin.ts), once, audited.
    quarantine: async (r, ctx) => quarantineMessage(this.store, this.handler, this.guard.policy, r, ctx),
    session_start: async (r, ctx): Promise<SessionOutcome> => {
      const sessionId = r.sessionId ?? (ctx.key !== undefined ? idForKey(ctx, "session", ctx.key) : newAggregateId());
      const executed = await this.handler.execute(
        sessionDecider,
        sessionId,
        { type: "start", agentId: ctx.actor.id, task: r.task, branch: r.branch ?? null, worktree: r.worktree ?? null },
        { ...ctx, sessionId },
        { isNew: r.sessionId === undefined },
      );
      return { sessionId, seq: executed.seq, eventId: executed.event.id, type: executed.event.type, replayed: executed.replayed };
    },
    session_end: async (r, ctx): Promise<SessionOutcome> => {
      // The transcript is stored before the event that references it, and proved to be there (services/transcripts.ts).
      if (r.transcript) await checkTranscript(await this.transcriptStore(), r.transcript);
      const executed = await this.handler.execute(sessionDecider, r.sessionId, { type: "end", summary: r.summary ?? null, transcript: r.transcript ?? null }, ctx);
      return { sessionId: r.sessionId, seq: executed.seq, eventId: executed.event.id, type: executed.event.type, replayed: executed.replayed };
    },
    show: async (r, ctx): Promise<MemoryView> => {
      const loaded = await this.promotionHandler.load(promotionDecider, ctx.app, r.memoryId);
      if (loaded.state.memory.id === null) throw notFound(`no memory ${r.memoryId} in app ${ctx.app}`);
      await this.guard.reader(ctx.actor, ctx.app, ctx.sessionId).require(loaded.state.memory.scope ?? "app", `show ${r.memoryId}`);
      return { ...memoryView(r.memoryId, loaded.state.memory, loaded.seq), promotions: await this.promotionsOf(ctx.app, loaded.state) };
    },
    session_show: async (r, ctx) => {
      const loaded = await this.handler.load(sessionDecider, ctx.app, r.sessionId);
      if (loaded.state.id === null) throw notFound(`no session ${r.sessionId} in app ${ctx.app}`);
      // A session belongs to its agent's scratchpad (its events' scope).
      this.guard.requireRead(ctx.actor, `agent:${loaded.state.agentId}`, `session_show ${r.sessionId}`);
      return sessionView(r.sessionId, loaded.state, loaded.seq);
    },
    // A memory's history from the log (services/audit/history.ts), for those who may read its scope.
    history: async (r, ctx) => {
      const history = await memoryHistory(this.store, ctx.app, r.memoryId);
      await this.guard.reader(ctx.actor, ctx.app, ctx.sessionId).require(history.state.scope ?? "app", `history ${r.memoryId}`);
      return { memoryId: r.memoryId, app: ctx.app, seq: history.seq, status: memoryStatus(history.state), entries: history.entries, versions: history.state.versions };
    },
    log: async (r, ctx) => {
      const stream = this.names.appStream(ctx.app);
      const filterSubject = r.memoryId ? this.names.aggregate(ctx.app, "memory", r.memoryId) : undefined;
      // Only events in scopes the actor may read; reads on until `limit` of those, or the end, or until
      // the reply would not fit in one NATS message: the page then ends early, and the SDK's log() asks
      // again from where it ended (10,000 events of ~600 bytes are 6 MB; the default max_payload is 1 MiB).
      const reader = this.guard.reader(ctx.actor, ctx.app, ctx.sessionId);
      const budget = new ReplyBudget(maxPayloadOf(this.nc));
      const out: ReturnType<typeof logEntry>[] = [];
      await this.store.scanLog(stream, { filterSubject, sinceSeq: r.sinceSeq, batchSize: Math.min(r.limit, LOG_READ_CHUNK) }, async (batch) => {
        // A batch's session scopes are resolved before it is filtered (closed for what is not known).
        await reader.resolve(batch.map((stored) => sessionOfScope(stored.event.scope)).filter((id): id is string => id !== null));
        for (const stored of batch) {
          if (!reader.mayRead(stored.event.scope)) {
            if (r.memoryId) await reader.require(stored.event.scope, `log of memory ${r.memoryId}`);
            continue;
          }
          const entry = logEntry(stored);
          if (!budget.take(entry)) return false;
          out.push(entry);
          if (out.length >= r.limit) return false;
        }
        return true;
      });
      return out;
    },
    open_task: async (r, ctx) =>
      this.claimOutcome(await this.handler.execute(claimDecider, claimIdOf("task", r.name), { type: "open", name: r.name, title: r.title ?? null, priority: r.priority }, ctx)),
    claim: async (r, ctx) => {
      const command = { type: "claim", kind: r.kind, name: r.name, agentId: ctx.actor.id, ttlMs: r.ttlMs, now: this.clock().getTime(), priority: r.priority } as const;
      return this.claimOutcome(await this.handler.execute(claimDecider, claimIdOf(r.kind, r.name), command, ctx));
    },
    renew: async (r, ctx) => {
      const command = { type: "renew", kind: r.kind, name: r.name, agentId: ctx.actor.id, ttlMs: r.ttlMs ?? null, now: this.clock().getTime() } as const;
      return this.claimOutcome(await this.handler.execute(claimDecider, claimIdOf(r.kind, r.name), command, ctx));
    },
    release: async (r, ctx) => {
      const command = { type: "release", kind: r.kind, name: r.name, agentId: ctx.actor.id, done: r.done, now: this.clock().getTime() } as const;
      return this.claimOutcome(await this.handler.execute(claimDecider, claimIdOf(r.kind, r.name), command, ctx));
    },
    claim_show: async (r, ctx) => {
      const loaded = await this.handler.load(claimDecider, ctx.app, claimIdOf(r.kind, r.name));
      const view = claimView(loaded.state, this.clock().getTime());
      if (view === null) throw notFound(`no ${r.kind} ${r.name} in app ${ctx.app}`, { kind: r.kind, name: r.name });
      return { ...view, seq: loaded.seq };
    },
    claims: async (r, ctx) => {
      if (!this.claimsReader) throw unavailable("the claims query needs the Redis claims projection (CommandServiceOptions.claims)");
      return this.claimsReader.liveClaims(ctx.app, { agent: r.agent, now: this.clock().getTime() });
    },
    tasks: async (r, ctx) => {
      if (!this.claimsReader) throw unavailable("the tasks query needs the Redis claims projection (CommandServiceOptions.claims)");
      return this.claimsReader.openTasks(ctx.app, { now: this.clock().getTime(), limit: r.limit, unclaimed: r.unclaimed });
    },
    hydrate: async (r, ctx) => {
      const agent = r.agent ?? ctx.actor.id;
      // Someone else's pack shows that agent's scratchpad: only for those who may read it.
      if (agent !== ctx.actor.id) this.guard.requireRead(ctx.actor, `agent:${agent}`, `hydrate --agent ${agent}`);
      const { pack, shown } = await this.readAs(ctx, r.sessionId, (reader) => this.hydrator.hydrateShown(ctx.app, {
        agent,
        // The pack holds the agent's own scratchpad, its own sessions' candidates (of this worktree, from a
        // session) and shared scopes, and only what the sender may read.
        visible: (scope) =>
          reader.mayRead(scope) && (!scope.startsWith("agent:") || scope === `agent:${agent}`) && (sessionOfScope(scope) === null || reader.sessionAgent(scope) === agent),
        task: r.task,
        branch: r.branch ?? ctx.git?.branch ?? null,
        paths: r.paths,
        budget: r.budget,
        sessionId: r.sessionId,
      }));
      // A receipt says which memories were shown: a pack that showed none leaves none.
      if (r.sessionId !== undefined && shown.length > 0) {
        const time = this.clock().toISOString();
        this.receipts.set(pack, { sessionId: r.sessionId, receipt: () => ({ verb: "hydrate", time, tokens: pack.tokens, memories: shown }) });
      }
      return pack;
    },
    // Consolidation review (services/dream/review.ts): reads need scope app; decisions the policy's `dream` verb.
    dream_show: async (r, ctx) => {
      this.guard.requireRead(ctx.actor, "app", `dream show ${r.runId}`);
      const run = await showRun(this.reviewDeps(), ctx.app, r.runId);
      // A session-end review shows that session's candidates: read as they are (docs/candidates.md).
      if (run.trigger?.kind === "session_end") await this.guard.reader(ctx.actor, ctx.app).require(`session:${run.trigger.sessionId}`, `dream show ${r.runId}`);
      return this.proposalsPage(run, r.from);
    },
    dream_list: async (r, ctx) => {
      this.guard.requireRead(ctx.actor, "app", "dream list");
      return listRuns(this.reviewDeps(), ctx.app, r.limit);
    },
    dream_accept: async (r, ctx) =>
      acceptProposals(this.reviewDeps(), { app: ctx.app, runId: r.runId, proposalIds: r.proposalIds, actor: ctx.actor, reason: r.reason ?? null }),
    dream_reject: async (r, ctx) => rejectProposals(this.reviewDeps(), { app: ctx.app, runId: r.runId, proposalIds: r.proposalIds, actor: ctx.actor, reason: r.reason }),
    dream_revert: async (r, ctx) => revertRun(this.reviewDeps(), { app: ctx.app, runId: r.runId, actor: ctx.actor, reason: r.reason }),
    // Only memories in scopes the sender may read; asks for more when the filter took some away.
    search: async (r, ctx) => {
      const hits = await this.readAs(ctx, r.sessionId, (reader) =>
        readableTopK((k) => this.search(ctx.app, { ...r, limit: k }), r.limit, (hit) => reader.mayRead(hit.scope)),
      );
      if (r.sessionId !== undefined && hits.length > 0) {
        const time = this.clock().toISOString();
        // Built once the reply is sent: counting the hits' tokens is not the sender's wait.
        this.receipts.set(hits, { sessionId: r.sessionId, receipt: () => searchReceipt(hits, time) });
      }
      return hits;
    },
  };
}

/** Counts of the same bodies are remembered across receipts, as hydration's are. */
const receiptTokens = memoizedTokens(o200kTokens);

function searchReceipt(hits: RetrievedMemory[], time: string): ExposureReceipt {
  return {
    verb: "search",
    time,
    tokens: hits.reduce((sum, h) => sum + receiptTokens.count(h.title) + receiptTokens.count(h.body), 0),
    memories: hits.map((h, i) => ({
      memoryId: h.memoryId,
      version: h.version,
      rank: i + 1,
      channel: (["bm25", "vector"] as const).filter((c) => h.channels[c] !== undefined).join("+") || "boost",
      origin: h.origin,
    })),
  };
}

const versionOf = (event: { data: unknown }): number | null => {
  const data = event.data as { version?: number; toVersion?: number };
  return data.version ?? data.toVersion ?? null;
};

function parseRequest<V extends Verb>(verb: V, data: Uint8Array): ParsedRequestOf<V> {
  let raw: unknown = {};
  if (data.length > 0) {
    try {
      raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data));
    } catch {
      throw invalid(`the ${verb} request is not valid UTF-8 JSON`);
    }
  }
  const result = (REQUESTS[verb] as z.ZodType).safeParse(raw);
  if (!result.success) {
    const first = result.error.issues[0];
    const where = first?.path.length ? first.path.join(".") : "request";
    throw invalid(`${verb}: ${where}: ${first?.message ?? "invalid"}`, {
      issues: result.error.issues.map((i) => ({ path: i.path.map(String), message: i.message })),
    });
  }
  return result.data as ParsedRequestOf<V>;
}

/**
 * What a client is told of a failure. Its own input's errors (invalid, conflict, forbidden, not_found)
 * and unavailability are told in full; an internal failure is not (its text may hold paths, hosts or
 * state the sender has no business seeing): only a correlation id, under which the operator's log has it.
 */
export function toWireError(err: unknown, correlationId: string = randomUUID()): { code: string; message: string; details?: Record<string, unknown> } {
  if (err instanceof MemledgerError && err.code !== ErrorCode.internal) return { code: err.code, message: err.message, details: err.details };
  return { code: ErrorCode.internal, message: `internal error; the service's log has the details under correlation id ${correlationId}`, details: { correlationId } };
}
