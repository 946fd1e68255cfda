import type { AppendOutcome } from "../../schemas/commands.js";
import { ErrorCode, MemledgerError, forbidden, notFound } from "../../schemas/errors.js";
import { ORG_APP } from "../../events/subjects.js";
import { POLICY_ACTOR, authorize, isDeclaredApp, isGoverned, mayRead, type Decision, type Policy } from "../../schemas/policy.js";
import type { Actor } from "../../schemas/primitives.js";
import type { CommandContext } from "../command-handler.js";

/** What the guard needs from the command service: a way to approve on the policy's behalf. */
export interface GuardPorts {
  approve(request: { memoryId: string; version: number }, ctx: CommandContext): Promise<AppendOutcome>;
  onError?(err: unknown, where: string): void;
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
  constructor(
    readonly policy: Policy,
    private readonly ports: GuardPorts,
  ) {}

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
    const check: GovernedCheck = {
      authorize: (storedScope) => {
        // A new proposal acts on the scope it names; anything else on the memory's (the decider refuses a move).
        const scope = storedScope ?? (verb === "propose" ? ((request.scope as string | undefined) ?? (ctx.app === ORG_APP ? "org" : "app")) : null);
        // No such memory: the decider answers not_found, nothing to authorise.
        if (scope === null) {
          decided = null;
          return;
        }
        const decision = authorize(this.policy, ctx.actor, verb, scope);
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
