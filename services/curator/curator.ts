import { AckPolicy, DeliverPolicy, JetStreamApiError, type JsMsg } from "@nats-io/jetstream";
import { nanos, type NatsConnection } from "@nats-io/transport-node";
import { v5 as uuidv5 } from "uuid";
import { activeVersionOf, contentOfVersion, memoryDecider, type MemoryState } from "../../commands/memory.js";
import { naming, type Naming } from "../../events/subjects.js";
import { orgMemoryDecider, promotionDecisionDecider, type PromotionDecisionCommand, type PromotionDecisionEvent } from "../../commands/org-memory.js";
import type { DomainEventOf, MemoryPromotionRequested, OrgProvenance } from "../../schemas/events.js";
import { MemledgerError, forbidden, internal } from "../../schemas/errors.js";
import { PERMISSIVE_POLICY, authorize, type Policy } from "../../schemas/policy.js";
import type { Actor } from "../../schemas/primitives.js";
import { EventStore, WrongLastSequenceError, type EventStoreOptions } from "../event-store.js";
import { CommandHandler, type CommandContext, type CommandTarget, type Loaded } from "../command-handler.js";
import { ORG_APP } from "../../events/subjects.js";
import { consumeLoop } from "../consume-loop.js";
import { watchScopes, type ScopeWatch } from "../discovery.js";
import type { ProjectionScope } from "../../projections/projection.js";
import { OrgView, type OrgEffect } from "./org-view.js";
import { CuratorPolicy, assessCandidate, decidePromotion, type CuratorPolicyInput, type PromotedContent, type PromotionCandidate, type PromotionDecision } from "./policy.js";
import { scanSecrets } from "./secrets.js";

/** The curator acts as this actor; the access policy must let it propose and approve in scope org. */
export const CURATOR_ACTOR: Actor = Object.freeze({ kind: "service", id: "curator" });
export const CURATOR_DURABLE = "curator";

export interface CuratorOptions extends EventStoreOptions {
  prefix?: string;
  /** How the curator decides (policy.ts); default: nothing auto-approved, thresholds as documented. */
  policy?: CuratorPolicyInput;
  /** Who may write what (schemas/policy.ts): the curator refuses to write the org unless it allows service:curator. */
  access?: Policy;
  /** Only these apps; default every app stream under the prefix, found as they appear. */
  apps?: string[];
  discoverEveryMs?: number;
  /** How long a delivered request may stay unacknowledged before JetStream redelivers it (a crashed curator's). */
  ackWaitMs?: number;
  now?: () => Date;
  onError?: (err: unknown, where: string) => void;
  /** Test hooks: run between the steps of one promotion, to crash the curator there. */
  hooks?: { afterOrgAppend?: (promotionId: string) => void | Promise<void> };
}

// Namespace for the ids the curator derives from a promotion id (a fixed, random UUID).
const CURATOR_NAMESPACE = "8d3b1f5a-2c7e-4e9b-a6d1-3f0c9b7e5a24";
const derivedId = (promotionId: string, what: "org-memory" | "org-proposal" | "org-approval" | "decision") => uuidv5(`${promotionId}\u0000${what}`, CURATOR_NAMESPACE);

/** The org memory a promotion creates: derived from the promotion id, so a second attempt finds the first. */
export const orgMemoryIdOf = (promotionId: string): string => derivedId(promotionId, "org-memory");

type SourceMemory = Pick<Loaded<MemoryState>, "state" | "seqOf">;

/**
 * Turns promotion requests into org knowledge, exactly once.
 *
 * One durable pull consumer per app stream (filter `<prefix>.app.<app>.memory.>`: 2.9 takes one filter
 * subject, and the requests live on the memory subjects), started as apps appear. Requests are handled one
 * at a time across apps, against an org view caught up first, so two decisions never race each other here.
 *
 * Steps of one promotion, each safe to repeat after a crash anywhere (the request is acknowledged only at
 * the end, so a crash means redelivery):
 *   1. a decision already on `<prefix>.app.<app>.promotion.<id>`: finish what it promised (an approval), done;
 *   2. the org already holds this promotion's proposal (its provenance names the promotion): accepted;
 *      that is not decided again, since the content in the org is what was decided;
 *   3. otherwise decide (policy.ts) and write the org proposal: a new org memory whose id derives from the
 *      promotion id, first event expected at sequence 0 (a second writer gets 10071 and reads it back), or
 *      the next version of the near-duplicate, expected at that memory's sequence, its event id derived
 *      from the promotion id (a retry finds it applied);
 *   4. the decision, on the promotion's own subject, expected at sequence 0 (a second one is refused);
 *   5. the approval, when the policy auto-approves, again with a derived event id.
 *
 * The curator appends through the command handler (the one write path: envelope, chain, idempotency by
 * event id, retry) but not through the command service: provenance must not be something an agent can
 * send in a command (only commands/org-memory.ts attaches it), and the org stream is not an app stream. It
 * checks the access policy itself before every org write, as the command service would.
 */
export class Curator {
  private readonly names: Naming;
  private readonly policy: CuratorPolicy;
  private readonly access: Policy;
  private readonly org: OrgView;
  private readonly loops = new Map<string, Promise<void>>();
  /** Aborted by stop(): ends every consumer's pull and cuts a backoff short. */
  private readonly stopping = new AbortController();
  private serial: Promise<unknown> = Promise.resolve();
  private watch: ScopeWatch | undefined;
  private stopped = false;
  private readonly now: () => Date;
  private readonly handler: CommandHandler;
  private readonly onError: (err: unknown, where: string) => void;

  private constructor(
    readonly store: EventStore,
    private readonly options: CuratorOptions,
  ) {
    this.names = store.names;
    this.policy = CuratorPolicy.parse(options.policy ?? {});
    this.access = options.access ?? PERMISSIVE_POLICY;
    this.org = new OrgView(store);
    this.now = options.now ?? (() => new Date());
    this.onError = options.onError ?? (() => undefined);
    this.handler = new CommandHandler(store, { now: this.now, cacheSize: 1_000 });
  }

  static async start(nc: NatsConnection, options: CuratorOptions = {}): Promise<Curator> {
    const store = await EventStore.open(nc, naming(options.prefix), options);
    const curator = new Curator(store, options);
    await store.ensureOrgStream();
    curator.watch = await watchScopes(store, (scope) => curator.follow(scope), {
      everyMs: options.discoverEveryMs,
      onError: (err) => curator.onError(err, "discovering app streams"),
    });
    return curator;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopping.abort();
    await this.watch?.stop();
    await Promise.allSettled([...this.loops.values()]);
    await this.serial.catch(() => undefined);
  }

  /** The apps whose promotion requests are being consumed. */
  get apps(): string[] {
    return [...this.loops.keys()].sort();
  }

  /** Consumes the promotion requests of an app stream watchScopes found (the org's own stream has none). */
  private async follow(scope: ProjectionScope): Promise<void> {
    if (this.stopped || scope.stream === this.names.orgStream() || this.loops.has(scope.app)) return;
    if (this.options.apps && !this.options.apps.includes(scope.app)) return;
    await this.ensureConsumer(scope.stream, scope.app);
    this.loops.set(scope.app, this.consume(scope.app, scope.stream));
  }

  private async ensureConsumer(stream: string, app: string): Promise<void> {
    const config = {
      durable_name: CURATOR_DURABLE,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      filter_subject: this.names.appMemories(app),
      ack_wait: nanos(this.options.ackWaitMs ?? 30_000),
      max_ack_pending: 256,
    };
    try {
      await this.store.jsm.consumers.add(stream, config);
    } catch (err) {
      // It exists with other settings (another ack wait): keep its position, take the new settings.
      if (!(err instanceof JetStreamApiError)) throw err;
      await this.store.jsm.consumers.update(stream, CURATOR_DURABLE, { ack_wait: config.ack_wait, max_ack_pending: config.max_ack_pending });
    }
  }

  private consume(app: string, stream: string): Promise<void> {
    return consumeLoop({
      consumer: () => this.store.js.consumers.get(stream, CURATOR_DURABLE),
      maxMessages: 64,
      // One request at a time: each is acknowledged (or nakked) on its own.
      maxBatch: 1,
      handle: async ([m]) => {
        await this.handle(app, m!);
        return true;
      },
      onFailure: async (err) => this.onError(err, `curator consumer on ${stream}`),
      backoffMs: (attempts) => Math.min(30_000, 200 * 2 ** Math.min(attempts, 8)),
      signal: this.stopping.signal,
      halted: () => this.store.nc.isClosed(),
    });
  }

  private async handle(app: string, m: JsMsg): Promise<void> {
    let stored;
    try {
      // An operator set it aside (memledger quarantine): skipped without a word, as every reader does.
      stored = await this.store.decodeStored(this.names.appStream(app), m);
    } catch (err) {
      // A damaged event is not a promotion we can ever read: say so loudly, do not block the others.
      this.onError(err, `curator: unreadable event at ${this.names.appStream(app)} seq ${m.seq}`);
      m.term();
      return;
    }
    const event = stored?.event;
    if (event?.type !== "memory.promotion_requested") {
      m.ack();
      return;
    }
    try {
      // One promotion at a time across apps: each decides against an org view nobody else is changing here.
      const run = this.serial.then(() => this.promote(app, m.seq, event));
      this.serial = run.catch(() => undefined);
      await run;
      m.ack();
    } catch (err) {
      if (this.store.nc.isClosed()) return; // crashed or stopped: JetStream redelivers after ack_wait
      this.onError(err, `curator: promotion ${event.data.promotionId} of ${app}`);
      m.nak(Math.min(60_000, 1_000 * 2 ** Math.min(m.info.deliveryCount, 6)));
    }
  }

  /** Steps 1–5 of the class comment, for the request stored at `requestSeq` of the app stream. */
  async promote(app: string, requestSeq: number, request: MemoryPromotionRequested): Promise<void> {
    const { promotionId } = request.data;
    const appStream = this.names.appStream(app);
    const decisionSubject = this.names.promotion(app, promotionId);

    // 1. Decided before (a redelivery, a second curator, a restart after step 4).
    for await (const stored of this.store.readSubject(appStream, decisionSubject)) {
      const decided = stored.event;
      if (decided.type === "memory.promotion_accepted" && decided.data.approved) {
        await this.ensureApproved(decided.data.orgMemoryId, decided.data.orgVersion, promotionId, request);
      }
      return;
    }

    await this.org.catchUp();
    const source = await this.loadSource(app, request.aggregateId);
    const candidate = await this.candidateOf(app, source, request);

    // 2. Already applied to the org (a crash between steps 3 and 4): accepted, as it was decided then.
    let effect = this.org.effectOf(promotionId);
    let decision: Exclude<PromotionDecision, { type: "reject" }>;
    if (effect) {
      const { flags } = assessCandidate(candidate, this.policy);
      const approve = this.policy.autoApprove && flags.length === 0;
      const created = effect.orgMemoryId === orgMemoryIdOf(promotionId);
      decision = created
        ? { type: "accept", content: candidate.content, flags, approve }
        : { type: "merge", into: effect.orgMemoryId, intoVersion: effect.orgVersion, similarity: 1, content: candidate.content, flags, approve };
    } else {
      // 3. Decide, and write the org proposal.
      const outcome = await this.decideAndPropose(app, candidate, source, requestSeq, request);
      if (outcome.decision.type === "reject") {
        await this.appendDecision(app, request, { type: "memory.promotion_rejected", data: { promotionId, version: request.data.version, reasons: outcome.decision.reasons } });
        return;
      }
      decision = outcome.decision;
      effect = outcome.effect!;
      await this.options.hooks?.afterOrgAppend?.(promotionId);
    }

    // 4. The decision, once.
    await this.appendDecision(app, request, {
      type: "memory.promotion_accepted",
      data: {
        promotionId,
        version: request.data.version,
        outcome: decision.type === "merge" ? "merged" : "created",
        orgMemoryId: effect.orgMemoryId,
        orgVersion: effect.orgVersion,
        approved: decision.approve,
        reasons: decision.flags,
      },
    });

    // 5. The approval it promised.
    if (decision.approve) await this.ensureApproved(effect.orgMemoryId, effect.orgVersion, promotionId, request);
  }

  private async loadSource(app: string, memoryId: string): Promise<SourceMemory> {
    return this.handler.load(memoryDecider, app, memoryId);
  }

  private async candidateOf(app: string, source: SourceMemory, request: MemoryPromotionRequested): Promise<PromotionCandidate> {
    const version = source.state.versions.find((v) => v.version === request.data.version);
    if (!version) throw internal(`promotion ${request.data.promotionId} names version ${request.data.version} of ${request.aggregateId}, which does not exist`);
    const content: PromotedContent = contentOfVersion(version);
    const active = activeVersionOf(source.state);
    return {
      app,
      memoryId: request.aggregateId,
      scope: source.state.scope ?? request.scope,
      version: version.version,
      content,
      active: active?.version === version.version && source.state.superseded === null,
      approvedBy: version.status === "approved" ? version.decidedBy : null,
      secrets: await scanSecrets(content),
    };
  }

  private provenanceOf(app: string, source: SourceMemory, requestSeq: number, request: MemoryPromotionRequested): OrgProvenance {
    const version = source.state.versions.find((v) => v.version === request.data.version)!;
    return {
      promotionId: request.data.promotionId,
      source: {
        app,
        stream: this.names.appStream(app),
        memoryId: request.aggregateId,
        version: version.version,
        seq: source.seqOf.get(version.eventId) ?? 0,
        eventId: version.eventId,
        actor: version.proposedBy,
        sessionId: version.proposedInSession,
      },
      request: { seq: requestSeq, eventId: request.id, actor: request.actor, sessionId: request.sessionId },
    };
  }

  /**
   * Decides and appends the org proposal. A merge target that moved (another revision landed) is
   * reloaded and proposed again; one that cannot take a revision any more (superseded meanwhile) makes
   * the curator catch up and decide again.
   */
  private async decideAndPropose(
    app: string,
    candidate: PromotionCandidate,
    source: SourceMemory,
    requestSeq: number,
    request: MemoryPromotionRequested,
  ): Promise<{ decision: PromotionDecision; effect?: OrgEffect }> {
    const { promotionId } = request.data;
    const provenance = this.provenanceOf(app, source, requestSeq, request);
    const eventId = derivedId(promotionId, "org-proposal");
    for (let attempt = 0; attempt < 20; attempt++) {
      const view = await this.org.viewFor(`${candidate.content.title}\n${candidate.content.body}`, this.policy.candidates);
      const decision = decidePromotion(candidate, view, this.policy);
      if (decision.type === "reject") return { decision };
      this.requireOrgPermission("propose");
      const orgMemoryId = decision.type === "merge" ? decision.into : orgMemoryIdOf(promotionId);
      let executed;
      try {
        executed = await this.handler.execute(
          orgMemoryDecider,
          orgMemoryId,
          { type: "propose", revision: decision.type === "merge", ...decision.content, provenance },
          this.contextOf(request),
          // A lost race is not proposed again as it was: the policy decides again against the moved org.
          { target: this.orgTarget(orgMemoryId), eventId, retry: { shouldRetry: () => false } },
        );
      } catch (err) {
        // Another writer got there first: our own earlier attempt (found by its event id next round), or
        // another revision of the merge target (propose again on top of it); or the target cannot take a
        // revision any more (superseded): decide again.
        if (!(err instanceof WrongLastSequenceError) && !isDecisionRefusal(err)) throw err;
        await this.org.catchUp();
        continue;
      }
      const applied = executed.state.applied[eventId];
      if (!applied) throw internal(`org append of ${eventId} is not on ${this.names.orgMemory(orgMemoryId)}`);
      if (!executed.replayed) await this.org.catchUp();
      return { decision, effect: { orgMemoryId, orgVersion: applied.version!, eventId } };
    }
    throw internal(`promotion ${promotionId}: the org memory kept changing; will retry`);
  }

  private async appendDecision(app: string, request: MemoryPromotionRequested, decided: DomainEventOf<PromotionDecisionEvent>): Promise<void> {
    const { promotionId } = request.data;
    try {
      await this.handler.execute(promotionDecisionDecider, request.aggregateId, { ...decided, scope: request.scope } as PromotionDecisionCommand, this.contextOf(request, app), {
        target: { stream: this.names.appStream(app), subject: this.names.promotion(app, promotionId) },
        eventId: derivedId(promotionId, "decision"),
        isNew: true,
        retry: { shouldRetry: () => false },
      });
    } catch (err) {
      // Decided already (by us before a crash, or another curator): that decision stands.
      if (!(err instanceof WrongLastSequenceError) && !isDecisionRefusal(err)) throw err;
    }
  }

  /** Approves the org version the decision promised to approve, unless it was decided (by anyone) already. */
  private async ensureApproved(orgMemoryId: string, version: number, promotionId: string, request: MemoryPromotionRequested): Promise<void> {
    this.requireOrgPermission("approve");
    try {
      await this.handler.execute(orgMemoryDecider, orgMemoryId, { type: "approve", version }, this.contextOf(request), {
        target: this.orgTarget(orgMemoryId),
        eventId: derivedId(promotionId, "org-approval"),
        retry: { maxAttempts: 20 },
      });
    } catch (err) {
      // The version is gone, no longer proposed, or its memory superseded: nothing left to approve.
      if (!isDecisionRefusal(err)) throw err;
    }
  }

  /** The curator writes as itself, caused by the request and in its correlation. */
  private contextOf(request: MemoryPromotionRequested, app = ORG_APP): CommandContext {
    return { app, actor: CURATOR_ACTOR, causationId: request.id, correlationId: request.correlationId };
  }

  private orgTarget(orgMemoryId: string): CommandTarget {
    return { stream: this.names.orgStream(), subject: this.names.orgMemory(orgMemoryId) };
  }

  private requireOrgPermission(verb: "propose" | "approve"): void {
    const decision = authorize(this.access, CURATOR_ACTOR, verb, "org");
    if (!decision.allowed) throw forbidden(`the curator may not write the org: ${decision.reason}`, { verb, scope: "org" });
  }
}

/** The decider refused on the state as the log holds it (the handler rereads a stale cache first). */
const isDecisionRefusal = (err: unknown): boolean => err instanceof MemledgerError && (err.code === "conflict" || err.code === "not_found");
