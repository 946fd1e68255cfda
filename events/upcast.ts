import { CURRENT_SCHEMA_VERSION, LedgerEvent, type LedgerEventType } from "../schemas/events.js";
import { invalid } from "../schemas/errors.js";

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

// Damaged bytes are a malformed event like any other: a bare SyntaxError would reach callers uncoded
// (and EventStore.eventAt would report it as a retryable outage).
function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw invalid(`stored event is not JSON: ${(err as Error).message}`);
  }
}
