import type { AppendOutcome } from "../../schemas/commands.js";
import { ConflictReason, ErrorCode, MemledgerError, conflict, forbidden, notFound } from "../../schemas/errors.js";
import { ORG_APP } from "../../events/subjects.js";
import { POLICY_ACTOR, authorize, isDeclaredApp, isGoverned, mayRead, sessionOfScope, type Decision, type Policy } from "../../schemas/policy.js";
import type { Actor } from "../../schemas/primitives.js";
import type { CommandContext } from "../command-handler.js";
import { ScopeReader, SessionDirectory, type LoadSession, type SessionFact } from "./sessions.js";

/** What the guard needs from the command service: a way to approve on the policy's behalf. */
export interface GuardPorts {
  approve(request: { memoryId: string; version: number }, ctx: CommandContext): Promise<AppendOutcome>;
  onError?(err: unknown, where: string): void;
  /** A session's state from the log, for `session:<id>` scopes; without it every session scope is closed. */
  session?: LoadSession;
}

/**
 * Thrown by a check's `authorize` when it meets a `session:<id>` scope whose session it has not read:
 * nothing was decided or appended; the caller reads it (`GovernedCheck.learn`) and runs the command again.
 * Never reaches a client (CommandService.dispatch catches it).
 */
export class SessionFactsNeeded extends Error {
  constructor(readonly sessionId: string) {
    super(`session ${sessionId} must be read before a command in its scope is decided`);
  }
}

/** Runs after the command succeeded, with its result; returns the reply's result. */
export type FollowUp = (result: unknown) => Promise<unknown>;

/** The proposal's outcome plus what the policy's own approval left (null when it did not happen). */
export type AutoApproved = AppendOutcome & { autoApproved: AppendOutcome | null };

/**
 * A governed command's check, made against the state the command is finally decided on: the command
 * handler calls `authorize` with the aggregate's stored scope on every attempt, right before deciding
 * (CommandHandler.execute's `authorize` option). A check made before the handler loads the state would
 * judge a memory that another command may create (in someone else's scratchpad) a moment later.
 */
export interface GovernedCheck {
  /** Throws `forbidden` unless the actor may do the verb on `storedScope` (null: no such memory yet). */
  authorize(storedScope: string | null): void;
  /** After the command succeeded: the policy's own approval, when the deciding rule auto-approves. */
  followUp: FollowUp;
  /** Reads session `sessionId` from the log now, for a command in its scope (see SessionFactsNeeded). */
  learn(sessionId: string): Promise<void>;
}

/**
 * Enforces a policy around the command handlers:
 *  - apps: a policy that declares its apps answers `not_found` for any other, before anything is created;
 *  - writes: a governed verb is authorised against the scope it acts on (the payload's for a new
 *    proposal, the stored memory's otherwise, `promote` included), inside the handler's decide step;
 *  - reads: `mayRead` / `requireRead` say which scopes an actor may see (schemas/policy.ts).
 *
 * Auto-approval: a proposal a rule marks `autoApprove` is followed by a second command, an approve by
 * `service:policy`, appended right after the proposal on the same memory subject. Each append stays one
 * event. It is keyed by the proposal's event id, so a retried proposal (replayed from the log) replays
 * the approval too, or completes it if the first attempt died between the two appends.
 */
export class PolicyGuard {
  private readonly sessions: SessionDirectory | undefined;

  constructor(
    readonly policy: Policy,
    private readonly ports: GuardPorts,
  ) {
    this.sessions = ports.session ? new SessionDirectory(ports.session) : undefined;
  }

  /**
   * One request's read filter in `app`, session scopes included (services/auth/sessions.ts): `readerSession`
   * is the session the request is made from (worktree isolation of the actor's own candidates).
   */
  reader(actor: Actor, app: string, readerSession?: string): ScopeReader {
    return new ScopeReader(this.policy, actor, app, this.sessions, readerSession);
  }

  /** `not_found` for an app the policy does not declare: nothing may be created for it. */
  requireApp(app: string): void {
    if (!isDeclaredApp(this.policy, app, ORG_APP)) {
      throw notFound(`no app ${app}: the policy declares ${this.policy.apps!.join(", ")}`, { app });
    }
  }

  mayRead(actor: Actor, scope: string): boolean {
    return mayRead(this.policy, actor, scope);
  }

  /** A predicate over scopes for one actor, remembering answers (a search or a log asks per event). */
  readFilter(actor: Actor): (scope: string) => boolean {
    const known = new Map<string, boolean>();
    return (scope) => {
      let answer = known.get(scope);
      if (answer === undefined) known.set(scope, (answer = this.mayRead(actor, scope)));
      return answer;
    };
  }

  /** Throws `forbidden`, naming actor, scope and what was asked, unless the actor may read the scope. */
  requireRead(actor: Actor, scope: string, what: string): void {
    const decision = authorize(this.policy, actor, "read", scope);
    if (!decision.allowed) {
      throw forbidden(`${decision.reason} (${what})`, { actor, verb: "read", scope, roles: decision.roles, missing: decision.missing });
    }
  }

  /** For a governed verb, the check to run in the decide step and the follow-up; undefined for any other verb. */
  prepare(verb: string, request: Record<string, unknown>, ctx: CommandContext): GovernedCheck | undefined {
    if (!isGoverned(verb)) return undefined;
    let decided: Decision | null = null;
    const memoryId = request.memoryId as string | undefined;
    // Sessions this command's scope names, read fresh from the log (whether one ended changes).
    const sessions = new Map<string, SessionFact | null>();
    const check: GovernedCheck = {
      learn: async (sessionId) => {
        sessions.set(sessionId, this.sessions ? await this.sessions.fresh(ctx.app, sessionId) : null);
      },
      authorize: (storedScope) => {
        // A new proposal acts on the scope it names; anything else on the memory's (the decider refuses a move).
        const scope = storedScope ?? (verb === "propose" ? ((request.scope as string | undefined) ?? (ctx.app === ORG_APP ? "org" : "app")) : null);
        // No such memory: the decider answers not_found, nothing to authorise.
        if (scope === null) {
          decided = null;
          return;
        }
        const session = sessionOfScope(scope);
        if (session !== null) {
          if (!sessions.has(session)) throw new SessionFactsNeeded(session);
          this.sessionWrite(verb, ctx, session, sessions.get(session)!, memoryId);
        }
        const decision = authorize(this.policy, ctx.actor, verb, scope, { sessionAgent: (id) => sessions.get(id)?.agentId });
        if (!decision.allowed) {
          throw forbidden(`${decision.reason}${memoryId ? ` (memory ${memoryId})` : ""}`, {
            actor: ctx.actor,
            verb,
            scope,
            memoryId: memoryId ?? null,
            roles: decision.roles,
            missing: decision.missing,
          });
        }
        decided = decision;
      },
      // A replayed proposal replays (or completes) its approval too: the approval is keyed by the proposal's event id.
      followUp: async (result) => {
        const decision = decided as Decision | null;
        return verb === "propose" && decision?.allowed && decision.autoApprove ? this.autoApprove(result as AppendOutcome, ctx) : result;
      },
    };
    return check;
  }

  /**
   * The rules of a session's candidates that no policy relaxes: only the agent that started the session
   * proposes in it (new candidates and revisions), and only while it lasts; no other agent changes them
   * at all; nobody asks the curator to promote one to the org. Humans and services (reviewers, the
   * session-end review) otherwise act on them as the policy allows.
   */
  private sessionWrite(verb: string, ctx: CommandContext, session: string, fact: SessionFact | null, memoryId: string | undefined): void {
    const actor = `${ctx.actor.kind}:${ctx.actor.id}`;
    const scope = `session:${session}`;
    const own = ctx.actor.kind === "agent" && fact !== null && fact.agentId === ctx.actor.id;
    const details = { actor: ctx.actor, verb, scope, memoryId: memoryId ?? null, missing: { verb, scope } };
    if (verb === "propose" && !own) {
      // The same answer whether the session is someone else's or does not exist: no probing for sessions.
      throw forbidden(`${actor} may not propose in scope ${scope}: candidates are written by the agent of an open session of its own, and ${session} is none of ${actor}'s sessions`, details);
    }
    if (verb === "propose" && fact!.ended) {
      throw conflict(`session ${session} has ended: its candidates are under review and take no new ones (propose in a session that is open)`, {
        reason: ConflictReason.already_ended,
        scope,
      });
    }
    if (ctx.actor.kind === "agent" && !own) {
      throw forbidden(`${actor} may not ${verb} in scope ${scope}: a session's candidates are its own agent's; ${session} is none of ${actor}'s sessions`, details);
    }
    if (verb === "promote") {
      // Speculative memory reaches the team or the app through the session-end review only, never the org directly.
      throw forbidden(`${actor} may not promote in scope ${scope}: a session's candidates are promoted by the session-end review (to a team or the app), never straight to the org`, details);
    }
  }

  private async autoApprove(proposed: AppendOutcome, ctx: CommandContext): Promise<AutoApproved> {
    if (proposed.version === null) return { ...proposed, autoApproved: null };
    const policyCtx: CommandContext = {
      app: ctx.app,
      actor: POLICY_ACTOR,
      key: `auto-approve:${proposed.eventId}`,
      sessionId: ctx.sessionId,
      transcriptRef: ctx.transcriptRef,
      git: ctx.git,
      causationId: proposed.eventId,
      correlationId: ctx.correlationId ?? proposed.eventId,
    };
    try {
      const approved = await this.ports.approve({ memoryId: proposed.memoryId, version: proposed.version }, policyCtx);
      return { ...proposed, autoApproved: approved };
    } catch (err) {
      // Someone decided the version first (conflict): the proposal stands as they left it. Anything
      // else is the operator's to see; the proposal itself is stored, so the reply still reports it.
      if (!(err instanceof MemledgerError && err.code === ErrorCode.conflict)) this.ports.onError?.(err, `auto-approve ${proposed.memoryId}`);
      return { ...proposed, autoApproved: null };
    }
  }
}

/**
 * The best `k` results a reader may see, from a ranked source that can be asked for more: asks for `k`,
 * and while the read filter took some away and the source had more, asks again for four times as many
 * (at most 64 k). Ranking is the source's; the filter only removes.
 */
export async function readableTopK<T>(fetch: (k: number) => Promise<readonly T[]>, k: number, keep: (item: T) => boolean): Promise<T[]> {
  for (let asked = k; ; asked *= 4) {
    const got = await fetch(asked);
    const kept = got.filter(keep);
    if (kept.length >= k || got.length < asked || asked >= k * 64) return kept.slice(0, k);
  }
}
