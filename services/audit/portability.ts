import { LedgerEvent } from "../../schemas/events.js";
import { conflict, invalid } from "../../schemas/errors.js";
import { AppName } from "../../schemas/primitives.js";
import { upcast } from "../../events/upcast.js";
import type { EventStore, StoredEvent } from "../event-store.js";

/**
 * Export and import: a ledger moves between servers and clusters as JSON lines. The first line is a
 * header naming the format, the source prefix and app; each further line is one event, upcast to
 * today's schema, with the stream sequence and subject it had. Import appends them into an EMPTY app of
 * another (or the same) server in the same order, preserving event ids (Nats-Msg-Id = id), each subject's
 * events with the expected-sequence check of every append, so the read models rebuilt there equal the
 * source's.
 */

export const EXPORT_FORMAT = "memledger-export";
export const EXPORT_VERSION = 1;

export interface ExportHeader {
  format: typeof EXPORT_FORMAT;
  version: typeof EXPORT_VERSION;
  prefix: string;
  app: string;
  /** The stream's last sequence when the export started (events written later are not in the file). */
  lastSeq: number;
  sinceSeq: number;
  exportedAt: string;
}

export interface ExportedEvent {
  seq: number;
  subject: string;
  event: LedgerEvent;
}

/**
 * Writes the app's events from `sinceSeq` on, header first, through `write` (one line at a time, each
 * ending in a newline). Quarantined messages (junk an operator set aside) are not events and are left out,
 * as every reader leaves them out; their quarantine records are exported like any event.
 */
export async function exportLedger(
  store: EventStore,
  app: string,
  write: (line: string) => void | Promise<void>,
  options: { sinceSeq?: number } = {},
): Promise<{ header: ExportHeader; events: number }> {
  const stream = store.names.appStream(app);
  const lastSeq = await store.lastSeq(stream);
  const sinceSeq = Math.max(1, options.sinceSeq ?? 1);
  const header: ExportHeader = { format: EXPORT_FORMAT, version: EXPORT_VERSION, prefix: store.names.prefix, app, lastSeq, sinceSeq, exportedAt: new Date().toISOString() };
  await write(`${JSON.stringify(header)}\n`);
  let events = 0;
  if (lastSeq >= sinceSeq) {
    // The strict decode: an export is a statement about the log, so every event passes its full schema.
    await store.replay(stream, { fromSeq: sinceSeq, verify: true }, async (batch: StoredEvent[]) => {
      for (const stored of batch) {
        if (stored.seq > lastSeq) continue;
        const line: ExportedEvent = { seq: stored.seq, subject: stored.subject, event: stored.event };
        await write(`${JSON.stringify(line)}\n`);
        events++;
      }
    });
  }
  return { header, events };
}

/** Parses an export: its header and its events, each checked against today's schema (after upcasting). */
export function parseExport(text: string): { header: ExportHeader; events: ExportedEvent[] } {
  const lines = text.split("\n").filter((line) => line.trim() !== "");
  if (lines.length === 0) throw invalid("the export is empty: it has no header line");
  const parseLine = (line: string, n: number): unknown => {
    try {
      return JSON.parse(line);
    } catch {
      throw invalid(`line ${n} of the export is not JSON`, { line: n });
    }
  };
  const header = parseLine(lines[0]!, 1) as ExportHeader;
  if (header?.format !== EXPORT_FORMAT || header.version !== EXPORT_VERSION) {
    throw invalid(`not a memledger export (line 1 must be a ${EXPORT_FORMAT} v${EXPORT_VERSION} header)`, { line: 1 });
  }
  let previous = 0;
  const events = lines.slice(1).map((line, i) => {
    const n = i + 2;
    const raw = parseLine(line, n) as { seq?: unknown; subject?: unknown; event?: unknown };
    if (typeof raw.seq !== "number" || typeof raw.subject !== "string") throw invalid(`line ${n}: needs seq and subject`, { line: n });
    if (raw.seq <= previous) throw invalid(`line ${n}: sequence ${raw.seq} is not after ${previous}: the export is out of order`, { line: n });
    previous = raw.seq;
    const parsed = LedgerEvent.safeParse(upcast(raw.event));
    if (!parsed.success) throw invalid(`line ${n}: not a valid event: ${parsed.error.issues[0]?.message}`, { line: n });
    return { seq: raw.seq, subject: raw.subject, event: parsed.data };
  });
  return { header, events };
}

/**
 * Appends an export's events into `app`, which must have no events yet. Each event keeps its id and
 * content; its app (and the app in its subject) becomes the target's. Quarantine records are not carried
 * over: they name sequences of the source stream, and the messages they set aside were never exported.
 */
export async function importLedger(
  store: EventStore,
  app: string,
  exported: { header: ExportHeader; events: ExportedEvent[] },
  options: { onProgress?: (done: number, total: number) => void } = {},
): Promise<{ imported: number; skipped: number; lastSeq: number }> {
  const target = AppName.safeParse(app);
  if (!target.success) throw invalid(`bad app name '${app}': ${target.error.issues[0]?.message}`);
  const stream = await store.ensureAppStream(app);
  const existing = await store.lastSeq(stream);
  if (existing > 0) throw conflict(`app ${app} already has ${existing} events: import needs an empty app`, { app, lastSeq: existing });
  const source = store.names.appEvents(exported.header.app).slice(0, -1).replace(`${store.names.prefix}.`, `${exported.header.prefix}.`);
  const into = store.names.appEvents(app).slice(0, -1);
  const lastOnSubject = new Map<string, number>();
  let imported = 0;
  let skipped = 0;
  let lastSeq = 0;
  for (const { subject, event } of exported.events) {
    if (event.type === "ledger.quarantined") {
      skipped++;
      continue;
    }
    if (!subject.startsWith(source)) throw invalid(`event ${event.id} is on ${subject}, outside the exported app's subjects (${source}>)`);
    const newSubject = into + subject.slice(source.length);
    const moved = LedgerEvent.parse({ ...event, app });
    const ack = await store.append(newSubject, moved, lastOnSubject.get(newSubject) ?? 0);
    lastOnSubject.set(newSubject, ack.seq);
    lastSeq = ack.seq;
    imported++;
    options.onProgress?.(imported + skipped, exported.events.length);
  }
  return { imported, skipped, lastSeq };
}
