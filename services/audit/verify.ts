import { DeliverPolicy } from "@nats-io/jetstream";
import { contentHash } from "../../events/chain.js";
import { ORG_APP } from "../../events/subjects.js";
import type { EventStore } from "../event-store.js";
import { PULL_EXPIRES_MS } from "../nats.js";

/**
 * `memledger verify`: replays every stream of the prefix (or one app's) from its first sequence and
 * checks what the log itself can prove. For every message, in order:
 * - no sequence is missing (delete and purge are denied on ledger streams, so a gap means someone changed
 *   the stream's configuration and removed messages);
 * - it is an event (valid JSON with an id and a type), unless an operator quarantined it;
 * - a chained event's `hash` is the hash of its own content (nothing in it was edited);
 * - its `prevHash` is the `hash` of the event before it on the same subject (nothing was removed,
 *   inserted or reordered on that subject);
 * - no unchained event follows a chained one on a subject (stripping the chain is tampering too).
 * Events written before chains existed are counted as unchained, not as failures.
 */

export type ProblemKind = "missing_sequence" | "not_an_event" | "hash_mismatch" | "broken_link" | "unchained_after_chained";

export interface VerifyProblem {
  seq: number;
  subject: string | null;
  kind: ProblemKind;
  message: string;
}

export interface StreamReport {
  stream: string;
  app: string;
  firstSeq: number;
  lastSeq: number;
  messages: number;
  chained: number;
  unchained: number;
  quarantined: number;
  problems: VerifyProblem[];
}

interface RawEvent {
  id?: unknown;
  type?: unknown;
  hash?: unknown;
  prevHash?: unknown;
}

function parseRaw(data: Uint8Array): RawEvent | null {
  try {
    const value: unknown = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data));
    if (value === null || typeof value !== "object" || Array.isArray(value)) return null;
    const raw = value as RawEvent;
    return typeof raw.id === "string" && typeof raw.type === "string" ? raw : null;
  } catch {
    return null;
  }
}

export async function verifyStream(store: EventStore, stream: string): Promise<StreamReport> {
  const info = await store.jsm.streams.info(stream);
  const app = store.names.appOfStream(stream) ?? stream;
  const report: StreamReport = { stream, app, firstSeq: info.state.first_seq, lastSeq: info.state.last_seq, messages: 0, chained: 0, unchained: 0, quarantined: 0, problems: [] };
  if (info.state.last_seq === 0) return report;
  const problem = (seq: number, subject: string | null, kind: ProblemKind, message: string) => report.problems.push({ seq, subject, kind, message });
  if (info.state.first_seq > 1) problem(1, null, "missing_sequence", `sequences 1 to ${info.state.first_seq - 1} are missing: the stream starts at ${info.state.first_seq}`);

  const quarantined = await store.quarantines.all(stream);
  const lastOnSubject = new Map<string, { hash: string | null; seq: number }>();
  let expected = info.state.first_seq;
  const consumer = await store.js.consumers.get(stream, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: info.state.first_seq });
  const messages = await consumer.consume({ max_messages: 1000, expires: PULL_EXPIRES_MS });
  try {
    for await (const m of messages) {
      if (m.seq > expected) problem(expected, null, "missing_sequence", m.seq - expected === 1 ? `sequence ${expected} is missing` : `sequences ${expected} to ${m.seq - 1} are missing`);
      expected = m.seq + 1;
      report.messages++;
      if (quarantined.has(m.seq)) {
        report.quarantined++;
      } else {
        checkMessage(m.seq, m.subject, m.data);
      }
      if (m.info.pending === 0 || m.seq >= info.state.last_seq) break;
    }
  } finally {
    messages.stop();
  }
  if (expected <= info.state.last_seq) problem(expected, null, "missing_sequence", `sequences ${expected} to ${info.state.last_seq} are missing`);
  return report;

  function checkMessage(seq: number, subject: string, data: Uint8Array): void {
    const raw = parseRaw(data);
    if (!raw) {
      problem(seq, subject, "not_an_event", `sequence ${seq} on ${subject} is not an event and was not quarantined`);
      return;
    }
    const previous = lastOnSubject.get(subject);
    if (typeof raw.hash !== "string") {
      report.unchained++;
      if (previous?.hash) problem(seq, subject, "unchained_after_chained", `event ${String(raw.id)} at ${seq} has no chain, after the chained event at ${previous.seq}`);
      lastOnSubject.set(subject, { hash: null, seq });
      return;
    }
    report.chained++;
    const actual = contentHash(raw);
    if (actual !== raw.hash) problem(seq, subject, "hash_mismatch", `event ${String(raw.id)} at ${seq}: its content hashes to ${actual}, not the ${raw.hash} it carries`);
    const prevHash = typeof raw.prevHash === "string" ? raw.prevHash : null;
    const expectedPrev = previous?.hash ?? null;
    if (prevHash !== expectedPrev) {
      problem(
        seq,
        subject,
        "broken_link",
        `event ${String(raw.id)} at ${seq} links to ${prevHash ?? "nothing"}, but the event before it on ${subject} is ${previous ? `${expectedPrev ?? "unchained"} (sequence ${previous.seq})` : "none"}`,
      );
    }
    lastOnSubject.set(subject, { hash: raw.hash, seq });
  }
}

/** Every ledger stream of the prefix (apps and the org), or one app's. */
export async function verifyLedger(store: EventStore, app?: string): Promise<StreamReport[]> {
  const streams: string[] = [];
  if (app !== undefined) {
    streams.push(store.names.appStream(app));
  } else {
    for await (const name of store.jsm.streams.names()) {
      const owner = store.names.appOfStream(name);
      if (owner !== null && (owner !== ORG_APP || name === store.names.orgStream())) streams.push(name);
    }
  }
  const reports: StreamReport[] = [];
  for (const stream of streams.sort()) reports.push(await verifyStream(store, stream));
  return reports;
}
