import type { StoredMsg } from "@nats-io/jetstream";
import { quarantineDecider } from "../commands/quarantine.js";
import { ORG_APP } from "../events/subjects.js";
import type { ParsedRequestOf } from "../schemas/commands.js";
import { ConflictReason, conflict, forbidden, invalid, notFound, unavailable } from "../schemas/errors.js";
import { rolesOf, type Policy } from "../schemas/policy.js";
import type { Actor, Scope } from "../schemas/primitives.js";
import type { CommandContext, CommandHandler } from "./command-handler.js";
import type { EventStore } from "./event-store.js";
import { digestOf, notAnEvent } from "./quarantine.js";
import { isStreamNotFound } from "./nats.js";

/**
 * Operator actions on the log itself. Today one: `quarantine`, which sets aside a message that is not a
 * valid event so that the projections and the curator, which stop on it, go on (services/quarantine.ts
 * says how every reader honours it). It appends an audited event and never edits history.
 */

export interface QuarantineOutcome {
  /** The sequence set aside. */
  seq: number;
  /** The subject the set-aside message is stored on, and what exactly it holds. */
  subject: string;
  digest: string;
  bytes: number;
  /** Why it is not an event, as the decoder said. */
  error: string;
  /** Where the `ledger.quarantined` event landed. */
  eventSeq: number;
  eventId: string;
  type: string;
  replayed: boolean;
}

const actorLabel = (actor: Actor) => `${actor.kind}:${actor.id}`;

/**
 * Who may quarantine: an admin, that is a human or a service whose roles allow every verb (`*`) on every
 * scope (`*`), and for the org stream also on `org` by name (a `*` scope never reaches the org's writes).
 * A reviewer with every verb on `app` is not an admin: quarantine acts on the stream, not on memories of
 * one scope. Never an agent, whatever its roles say: quarantine makes every reader skip a message, and an
 * agent that goes wrong must not be able to hide anything from the others. Without a policy (the
 * permissive default: everyone has `*` on `*`) humans and services may on app streams, and on the org
 * stream the one the default names for the org (service:curator).
 */
export function mayQuarantine(policy: Policy, actor: Actor, scope: Scope): { allowed: true } | { allowed: false; reason: string; roles: string[] } {
  const roles = rolesOf(policy, actor);
  if (actor.kind === "agent") {
    return { allowed: false, reason: `${actorLabel(actor)} may not quarantine: agents never may (an admin, human or service, does)`, roles };
  }
  const everyVerb = roles.flatMap((role) => policy.roles[role]?.allow ?? []).filter((rule) => rule.verbs.includes("*"));
  const needed = scope === "org" ? ["*", "org"] : ["*"];
  const admin = needed.every((pattern) => everyVerb.some((rule) => rule.scopes.includes(pattern)));
  if (admin) return { allowed: true };
  const held = roles.length > 0 ? `its roles (${roles.join(", ")}) do not` : "it has no role in the policy";
  return {
    allowed: false,
    reason: `${actorLabel(actor)} may not quarantine in scope ${scope}: missing permission * (every verb) on ${needed.join(" and ")}, which makes an admin; ${held}`,
    roles,
  };
}

/**
 * `memledger quarantine --app A --seq N --reason R`: checks that the actor is an admin, that sequence N
 * of the app's stream holds a message that is not a valid event (a valid event is history and is never
 * set aside), then appends `ledger.quarantined` on its own subject, once (a second quarantine of N is a
 * `conflict`; a retry with the same key answers the first).
 */
export async function quarantineMessage(
  store: EventStore,
  handler: CommandHandler,
  policy: Policy,
  request: ParsedRequestOf<"quarantine">,
  ctx: CommandContext,
): Promise<QuarantineOutcome> {
  const scope: Scope = ctx.app === ORG_APP ? "org" : "app";
  const decision = mayQuarantine(policy, ctx.actor, scope);
  if (!decision.allowed) {
    throw forbidden(decision.reason, { actor: ctx.actor, verb: "quarantine", scope, roles: decision.roles, seq: request.seq });
  }
  const { names } = store;
  const stream = names.appStream(ctx.app);
  let msg: StoredMsg | null;
  try {
    msg = await store.jsm.direct.getMessage(stream, { seq: request.seq });
  } catch (err) {
    if (isStreamNotFound(err)) throw notFound(`no stream for app ${ctx.app}`, { app: ctx.app });
    throw unavailable(`cannot read sequence ${request.seq} of ${stream}: ${err instanceof Error ? err.message : String(err)}`, undefined, err);
  }
  if (!msg) throw notFound(`no message at sequence ${request.seq} of ${stream}`, { stream, seq: request.seq });
  if (msg.subject.startsWith(names.quarantines(ctx.app).slice(0, -1))) {
    throw invalid(`sequence ${request.seq} is on a quarantine subject (${msg.subject}): quarantine records are not set aside`, { subject: msg.subject });
  }
  const error = notAnEvent(msg.data);
  if (error === null) {
    throw conflict(`sequence ${request.seq} of ${stream} is a valid event: only messages that are not events are quarantined; history is never edited`, {
      reason: ConflictReason.valid_event,
      seq: request.seq,
      subject: msg.subject,
    });
  }
  const command = {
    type: "quarantine" as const,
    scope,
    seq: request.seq,
    subject: msg.subject,
    digest: digestOf(msg.data),
    bytes: msg.data.length,
    error,
    reason: request.reason,
  };
  const executed = await handler.execute(quarantineDecider, String(request.seq), command, ctx);
  return {
    seq: request.seq,
    subject: command.subject,
    digest: command.digest,
    bytes: command.bytes,
    error,
    eventSeq: executed.seq,
    eventId: executed.event.id,
    type: executed.event.type,
    replayed: executed.replayed,
  };
}
