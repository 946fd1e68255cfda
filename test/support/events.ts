import { CURRENT_SCHEMA_VERSION, LedgerEvent } from "../../schemas/events.js";

/**
 * One checked LedgerEvent as the command handler would have written it, for tests that publish a
 * history straight into a stream: the n-th event gets a fixed, ordered uuidv7-shaped id (so a history
 * is the same on every run), its own correlation id, and no session, transcript or causation.
 */
export function storedEvent(options: {
  n: number;
  type: LedgerEvent["type"];
  aggregateId: string;
  app: string;
  scope: string;
  actor: { kind: "agent" | "human"; id: string };
  git?: { branch: string } | null;
  time: number;
  data: unknown;
}): LedgerEvent {
  const id = `0190a000-0000-7000-8000-${String(options.n).padStart(12, "0")}`;
  return LedgerEvent.parse({
    id,
    type: options.type,
    schemaVersion: CURRENT_SCHEMA_VERSION[options.type],
    aggregateId: options.aggregateId,
    app: options.app,
    scope: options.scope,
    actor: options.actor,
    sessionId: null,
    transcriptRef: null,
    git: options.git ?? null,
    causationId: null,
    correlationId: id,
    time: new Date(options.time).toISOString(),
    data: options.data,
  });
}
