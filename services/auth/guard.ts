import type { AppendOutcome } from "../../schemas/commands.js";
import { ErrorCode, MemledgerError, forbidden } from "../../schemas/errors.js";
import { ORG_APP } from "../../events/subjects.js";
import { POLICY_ACTOR, authorize, isGoverned, scopeIndependent, type Decision, type Policy } from "../../schemas/policy.js";
import type { CommandContext } from "../command-handler.js";

/** What the guard needs from the command service: a memory's scope, and a way to approve on the policy's behalf. */
export interface GuardPorts {
  /** The stored scope of a memory, or null when it does not exist. */
  scopeOf(app: string, memoryId: string): Promise<string | null>;
  approve(request: { memoryId: string; version: number }, ctx: CommandContext): Promise<AppendOutcome>;
  onError?(err: unknown, where: string): void;
}

/** Runs after the command succeeded, with its result; returns the reply's result. */
export type FollowUp = (result: unknown) => Promise<unknown>;

/** The proposal's outcome plus what the policy's own approval left (null when it did not happen). */
export type AutoApproved = AppendOutcome & { autoApproved: AppendOutcome | null };

/**
 * Enforces a policy in front of the command handlers: resolves the scope a governed verb acts on (the
 * payload's for a new proposal, the stored memory's otherwise), asks `authorize`, and refuses with
 * `forbidden` before anything is appended.
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

  async check(verb: string, request: Record<string, unknown>, ctx: CommandContext): Promise<FollowUp | undefined> {
    if (!isGoverned(verb)) return undefined;
    let decision: Decision | null = scopeIndependent(this.policy, ctx.actor, verb);
    let scope: string | null = null;
    if (decision === null) {
      const memoryId = request.memoryId as string | undefined;
      const stored = memoryId === undefined ? null : await this.ports.scopeOf(ctx.app, memoryId);
      // A new proposal acts on the scope it names; a revision on the memory's (the decider refuses a move).
      scope = stored ?? (verb === "propose" ? ((request.scope as string | undefined) ?? (ctx.app === ORG_APP ? "org" : "app")) : null);
      // Not there: let the handler answer not_found (or create it, for a keyed proposal).
      if (scope === null) return undefined;
      decision = authorize(this.policy, ctx.actor, verb, scope);
    }
    if (!decision.allowed) {
      const memoryId = request.memoryId as string | undefined;
      throw forbidden(`${decision.reason}${memoryId ? ` (memory ${memoryId})` : ""}`, {
        actor: ctx.actor,
        verb,
        scope,
        memoryId: memoryId ?? null,
        roles: decision.roles,
        missing: decision.missing,
      });
    }
    return decision.autoApprove ? (result) => this.autoApprove(result as AppendOutcome, ctx) : undefined;
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
