import { AckPolicy, DeliverPolicy, JetStreamApiError, type JsMsg } from "@nats-io/jetstream";
import { nanos, type NatsConnection } from "@nats-io/transport-node";
import { hostname } from "node:os";
import { memoryDecider, memoryStatus, type MemoryState } from "../../commands/memory.js";
import { runDecider } from "../../commands/run.js";
import { naming, ORG_APP, type Naming } from "../../events/subjects.js";
import type { ProjectionScope } from "../../projections/projection.js";
import { isMemoryEvent } from "../../schemas/events.js";
import { internal } from "../../schemas/errors.js";
import { POLICY_ACTOR } from "../../schemas/policy.js";
import { CommandHandler } from "../command-handler.js";
import { consumeLoop } from "../consume-loop.js";
import { watchScopes, type ScopeWatch } from "../discovery.js";
import { EventStore, type EventStoreOptions } from "../event-store.js";
import type { Component } from "../runtime.js";
import { candidatesPhase } from "./phases/candidates.js";
import { acceptProposals, showRun, type ItemOutcome } from "./review.js";
import { derivedEventId, runDream, type DreamResult } from "./runner.js";

/**
 * The session-end review (issue 13 item 1, docs/candidates.md): follows every app stream for
 * `session.ended` and, for a session that left candidates (`session:<id>` memories in force), runs a
 * consolidation run with trigger `session_end` and the one phase `candidates`
 * (services/dream/phases/candidates.ts): one proposal per candidate, promote or discard.
 *
 * Discards are accepted and applied at once, on behalf of the policy (actor `service:policy`, recorded on
 * the `proposal.accepted` and on the `memory.superseded` it causes): nothing is lost by them, the candidate
 * and its supersede stay in the log (`history`), and a revert reinstates it. Promotions wait for a human
 * (`memledger dream accept`), since they put speculative memory where the team reads it.
 *
 * At most one run per session: the run id is derived from the app and the session, so a redelivered
 * `session.ended`, a second instance or a restart finds the run (completed: nothing to do but finish
 * applying its discards; started: the runner resumes it) instead of starting another. A session without
 * candidates gets no run at all (nothing to review, nothing written).
 *
 * One durable pull consumer per app stream (`session-review`, filter `<prefix>.app.<app>.session.>`),
 * explicit acks: a session end is acknowledged only once its review is done, so a crash redelivers it.
 */

export const SESSION_REVIEW_DURABLE = "session-review";

/** Who applies a review's discards: the policy itself (POLICY_ACTOR), as for auto-approvals. */
export const SESSION_REVIEW_ACTOR = POLICY_ACTOR;

/** The one run id of a session's review: the same app and session always name the same run. */
export const sessionReviewRunId = (app: string, sessionId: string): string => derivedEventId("session-review", app, sessionId);


export interface SessionReviewOptions extends EventStoreOptions {
  prefix?: string;
  /** Only these apps (default: every app stream, as found). */
  apps?: readonly string[];
  /** How long a delivered session end may stay unacknowledged before JetStream redelivers it (default 60 s). */
  ackWaitMs?: number;
  /** How often to look for new app streams (default 2 s). */
  discoverEveryMs?: number;
  /** The run lock's holder (default host and pid). */
  holder?: string;
  /** How long a review waits for a consolidation run of the same app to free the lock (default 10 min). */
  lockWaitMs?: number;
  now?: () => Date;
  onError?: (err: unknown, where: string) => void;
  onProgress?: (line: string) => void;
}

export type SessionReviewOutcome =
  | { status: "no_candidates"; app: string; sessionId: string }
  | { status: "reviewed"; app: string; sessionId: string; runId: string; resumed: boolean; proposals: number; discards: ItemOutcome[] };

export class SessionReview {
  private readonly names: Naming;
  private readonly handler: CommandHandler;
  private readonly loops = new Map<string, Promise<void>>();
  private readonly stopping = new AbortController();
  private watch: ScopeWatch | undefined;
  private stopped = false;
  private readonly onError: (err: unknown, where: string) => void;
  /**
   * Per app: every session-scope memory, folded from the stream as far as `seq`, so finding whether an
   * ended session left candidates reads only what was appended since the last look, not the whole log
   * (most sessions leave none; the run itself reads the app as of its start).
   */
  private readonly candidates = new Map<string, { seq: number; memories: Map<string, MemoryState> }>();

  private constructor(
    readonly nc: NatsConnection,
    readonly store: EventStore,
    private readonly options: SessionReviewOptions,
  ) {
    this.names = store.names;
    this.handler = new CommandHandler(store, { now: options.now, cacheSize: 1_000 });
    this.onError = options.onError ?? (() => undefined);
  }

  static async start(nc: NatsConnection, options: SessionReviewOptions = {}): Promise<SessionReview> {
    const store = await EventStore.open(nc, naming(options.prefix), options);
    const review = new SessionReview(nc, store, options);
    review.watch = await watchScopes(store, (scope) => review.follow(scope), {
      everyMs: options.discoverEveryMs,
      onError: (err) => review.onError(err, "session review: discovering app streams"),
    });
    return review;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopping.abort();
    await this.watch?.stop();
    await Promise.allSettled([...this.loops.values()]);
  }

  /** The apps whose session ends are followed. */
  get apps(): string[] {
    return [...this.loops.keys()].sort();
  }

  /**
   * Reviews one ended session: finds or runs its review run, then accepts and applies its discards.
   * Safe to repeat at any point (a redelivery, a crash between any two steps): it never starts a second
   * run, and every event it causes has a derived id.
   */
  async review(app: string, sessionId: string): Promise<SessionReviewOutcome> {
    const runId = sessionReviewRunId(app, sessionId);
    const existing = (await this.handler.load(runDecider, app, runId)).state;
    // Nothing to review: no run, nothing written.
    if (existing.id === null && (await this.candidatesInForce(app, sessionId)) === 0) return { status: "no_candidates", app, sessionId };
    const result: DreamResult = await runDream(
      {
        nc: this.nc,
        store: this.store,
        handler: this.handler,
        ...(this.options.now ? { now: this.options.now } : {}),
        onProgress: this.options.onProgress,
      },
      {
        app,
        trigger: { kind: "session_end", sessionId },
        phases: [candidatesPhase],
        runId,
        holder: this.options.holder ?? `${hostname()}-${process.pid}-session-review`,
        wait: true,
        waitTimeoutMs: this.options.lockWaitMs ?? 600_000,
        signal: this.stopping.signal,
      },
    );
    if (result.status !== "completed") {
      // A session-end run passes no gates; anything else is a runner that changed its contract.
      throw internal(`session review of ${sessionId} in ${app}: the run ended ${result.status}`, { runId });
    }
    // Discards still pending (or accepted by an attempt that stopped before applying): apply them now.
    const run = await showRun({ store: this.store, handler: this.handler }, app, runId);
    const discards = run.proposals.filter((p) => p.change.action === "supersede" && (p.status === "pending" || p.status === "accepted")).map((p) => p.proposalId);
    let outcomes: ItemOutcome[] = [];
    if (discards.length > 0) {
      // No access policy here: the discard is the policy's own rule, not a reviewer's decision (see the module comment).
      const accepted = await acceptProposals(
        { store: this.store, handler: this.handler },
        { app, runId, proposalIds: discards, actor: SESSION_REVIEW_ACTOR, reason: "session-end review: a discarded candidate is superseded at once; it stays in the log" },
      );
      outcomes = accepted.results;
      for (const r of outcomes) {
        // Moved since the run saw it (the agent superseded or revised it after the end): the proposal stays pending for a human.
        if (r.outcome === "refused") this.options.onProgress?.(`session review ${runId}: discard ${r.proposalId} not applied: ${r.error?.message ?? "refused"}`);
      }
    }
    this.options.onProgress?.(`session ${sessionId} of ${app} reviewed in run ${runId}: ${run.proposals.length} proposal(s), ${outcomes.filter((r) => r.outcome === "applied").length} discard(s) applied`);
    return { status: "reviewed", app, sessionId, runId, resumed: result.resumed, proposals: run.proposals.length, discards: outcomes };
  }

  /** How many memories of `session:<sessionId>` are in force (active, or proposed awaiting approval) at the stream's end. */
  private async candidatesInForce(app: string, sessionId: string): Promise<number> {
    let fold = this.candidates.get(app);
    if (!fold) this.candidates.set(app, (fold = { seq: 0, memories: new Map() }));
    const folding = fold;
    // Two looks at once fold some events twice: evolve applies an event once (by its id), and seq only grows.
    const reached = await this.store.replay(this.names.appStream(app), { fromSeq: folding.seq + 1 }, (batch) => {
      for (const { event } of batch) {
        // A memory's events all carry its scope: only session candidates are kept.
        if (!isMemoryEvent(event) || !event.scope.startsWith("session:")) continue;
        const state = folding.memories.get(event.aggregateId) ?? memoryDecider.initialState();
        folding.memories.set(event.aggregateId, memoryDecider.evolve(state, event));
      }
    });
    folding.seq = Math.max(folding.seq, reached);
    const scope = `session:${sessionId}`;
    return [...folding.memories.values()].filter((m) => m.scope === scope && ["active", "proposed"].includes(memoryStatus(m))).length;
  }

  private async follow(scope: ProjectionScope): Promise<void> {
    if (this.stopped || scope.app === ORG_APP || scope.stream === this.names.orgStream() || this.loops.has(scope.app)) return;
    if (this.options.apps && !this.options.apps.includes(scope.app)) return;
    await this.ensureConsumer(scope.stream, scope.app);
    this.loops.set(scope.app, this.consume(scope.app, scope.stream));
  }

  private async ensureConsumer(stream: string, app: string): Promise<void> {
    const config = {
      durable_name: SESSION_REVIEW_DURABLE,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      filter_subject: this.names.aggregates(app, "session"),
      ack_wait: nanos(this.options.ackWaitMs ?? 60_000),
      max_ack_pending: 64,
    };
    try {
      await this.store.jsm.consumers.add(stream, config);
    } catch (err) {
      // It exists with other settings: keep its position, take the new settings.
      if (!(err instanceof JetStreamApiError)) throw err;
      await this.store.jsm.consumers.update(stream, SESSION_REVIEW_DURABLE, { ack_wait: config.ack_wait, max_ack_pending: config.max_ack_pending });
    }
  }

  private consume(app: string, stream: string): Promise<void> {
    return consumeLoop({
      consumer: () => this.store.js.consumers.get(stream, SESSION_REVIEW_DURABLE),
      maxMessages: 64,
      // One session end at a time: each is acknowledged (or nakked) on its own.
      maxBatch: 1,
      handle: async ([m]) => {
        await this.handle(app, m!);
        return true;
      },
      onFailure: async (err) => this.onError(err, `session review consumer on ${stream}`),
      backoffMs: (attempts) => Math.min(30_000, 200 * 2 ** Math.min(attempts, 8)),
      signal: this.stopping.signal,
      halted: () => this.nc.isClosed(),
    });
  }

  private async handle(app: string, m: JsMsg): Promise<void> {
    let stored;
    try {
      // Quarantined messages are skipped without a word, as every reader does.
      stored = await this.store.decodeStored(this.names.appStream(app), m);
    } catch (err) {
      this.onError(err, `session review: unreadable event at ${this.names.appStream(app)} seq ${m.seq}`);
      m.term();
      return;
    }
    const event = stored?.event;
    if (event?.type !== "session.ended") {
      m.ack();
      return;
    }
    // A review may wait for a dream run's lock longer than the ack wait: tell JetStream it is still being worked on.
    const ackWaitMs = this.options.ackWaitMs ?? 60_000;
    const working = setInterval(() => m.working(), Math.max(500, Math.floor(ackWaitMs / 2)));
    try {
      await this.review(app, event.aggregateId);
      m.ack();
    } catch (err) {
      if (this.nc.isClosed() || this.stopping.signal.aborted) return; // JetStream redelivers after ack_wait
      this.onError(err, `session review of ${event.aggregateId} in ${app}`);
      m.nak(Math.min(60_000, 1_000 * 2 ** Math.min(m.info.deliveryCount, 6)));
    } finally {
      clearInterval(working);
    }
  }
}

/** `memledger up`'s session-end review (on unless `--no-session-review`). */
export const sessionReviewComponent = (options: Omit<SessionReviewOptions, "prefix" | "replicas" | "onError"> = {}): Component => ({
  name: "session-review",
  async start(ctx) {
    return SessionReview.start(ctx.nc, { ...options, prefix: ctx.prefix, replicas: ctx.replicas, onError: (err, where) => ctx.onError(err, where) });
  },
});
