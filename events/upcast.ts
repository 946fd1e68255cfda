import { CURRENT_SCHEMA_VERSION, LedgerEvent, type LedgerEventType } from "../schemas/events.js";
import { invalid } from "../schemas/errors.js";
import { EVENT_SHAPES } from "./shape.js";

type RawEvent = Record<string, unknown> & { type: string; schemaVersion: number };
type Upcaster = (event: RawEvent) => RawEvent;

/**
 * Events are immutable, so old shapes live in the log forever. Readers never branch on versions:
 * each stored event is lifted step by step (v1 → v2 → …) to the shape written today, then checked.
 * An upcaster takes an event at version N and returns it at version N + 1.
 */
const UPCASTERS: Partial<Record<LedgerEventType, Record<number, Upcaster>>> = {
  "memory.proposed": {
    // v1 had neither importance nor file paths: old memories get the neutral importance and no paths.
    1: (e) => {
      const data = (e.data ?? {}) as Record<string, unknown>;
      return { ...e, schemaVersion: 2, data: { importance: 3, paths: [], ...data } };
    },
    // v3 added the optional `provenance` of org memories; a v2 event has none, so its data is unchanged.
    2: (e) => ({ ...e, schemaVersion: 3 }),
  },
  "session.ended": {
    // v2 added the optional `transcript` reference; a v1 session ended without one, so its data is unchanged.
    1: (e) => ({ ...e, schemaVersion: 2 }),
  },
};

export function upcast(raw: unknown): unknown {
  if (typeof raw !== "object" || raw === null) return raw;
  let event = raw as RawEvent;
  const current = CURRENT_SCHEMA_VERSION[event.type as LedgerEventType];
  if (current === undefined || typeof event.schemaVersion !== "number") return raw;
  while (event.schemaVersion < current) {
    const step = UPCASTERS[event.type as LedgerEventType]?.[event.schemaVersion];
    if (!step) throw invalid(`no upcaster for ${event.type} v${event.schemaVersion}`);
    event = step(event);
  }
  return event;
}

/** Parses a stored event of any known version into today's shape. */
export function parseStoredEvent(raw: unknown): LedgerEvent {
  const result = LedgerEvent.safeParse(upcast(raw));
  if (!result.success) {
    throw invalid(`stored event does not match its schema: ${result.error.issues[0]?.message ?? "unknown"}`, {
      issues: result.error.issues,
    });
  }
  return result.data;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export const encodeEvent = (event: LedgerEvent): Uint8Array => encoder.encode(JSON.stringify(event));
export const decodeEvent = (bytes: Uint8Array): LedgerEvent => parseStoredEvent(parseJson(decoder.decode(bytes)));

/**
 * A stored event checked for structure only: known type, schema version (after upcasting), and every
 * field present with the right JSON type (events/shape.ts, compiled from the same zod schemas), but no
 * string lengths, regexes, datetime formats or numeric ranges. What replays use (EventStore.replay,
 * so every rebuild) and log scans (EventStore.scanLog: the `log` verb, readLog); `decodeEvent` keeps
 * the full check (`memledger rebuild --verify`, live runners).
 *
 * Why that is safe: no event reaches a stream without the full check. The command handler parses every
 * envelope with the strict schema before it appends, the streams deny edits and deletes, and the only
 * other writers are our own (the curator, through the same handler). Re-running every refinement on
 * every replay re-proved what the append path proved, and cost more than the projections' own folding
 * (JSON + strict zod ran at ~40% of the raw read rate). What a replay must still catch is an event that
 * would corrupt a read model: a damaged or foreign payload, a field missing or of the wrong type, an
 * unknown type or version. Those fail here, cost what the strict parse costs only on failure (it runs
 * then to produce the precise error), and surface as the same `invalid` error, so a rebuild stops on
 * them and a runner blocks on them exactly as before. The refinements it skips (an id longer than 64
 * characters, a title with a control character) cannot reach a file path or a Redis key unsanitised:
 * the file projection sanitises every segment again (projections/files/paths.ts).
 */
export function decodeEventStructural(bytes: Uint8Array): LedgerEvent {
  const raw = upcast(parseJson(decoder.decode(bytes)));
  const type = (raw as { type?: unknown } | null)?.type;
  const check = typeof type === "string" ? EVENT_SHAPES.get(type) : undefined;
  if (check?.(raw)) return raw as LedgerEvent;
  return parseStoredEvent(raw); // throws the precise error (or accepts what the shape check was unsure of)
}

// Damaged bytes are a malformed event like any other: a bare SyntaxError would reach callers uncoded
// (and EventStore.eventAt would report it as a retryable outage).
function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw invalid(`stored event is not JSON: ${(err as Error).message}`);
  }
}
