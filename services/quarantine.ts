import { createHash } from "node:crypto";
import type { JetStreamManager } from "@nats-io/jetstream";
import { decodeEvent } from "../events/upcast.js";
import type { Naming } from "../events/subjects.js";
import type { LedgerEvent } from "../schemas/events.js";
import { LIMITS } from "../schemas/primitives.js";

/**
 * Which stream sequences an operator quarantined (`memledger quarantine`, services/ledger-admin.ts).
 *
 * A message on a stream subject that is not a valid event (junk that reached the stream somehow) stops
 * every reader of that stream: projections never checkpoint past an event they could not apply, and the
 * streams deny deletes. An operator looks at it and, if it is junk, appends a `ledger.quarantined` event
 * for its sequence on `<prefix>.app.<app>.quarantine.<seq>`; every reader then skips that sequence:
 * the live projection runners, rebuilds (EventStore.replay), aggregate loads (readSubject), `log`, and
 * the curator (its org view replays, its source loads read subjects). History is not edited.
 *
 * The quarantine of sequence N is the first message on its subject and must itself be a valid
 * `ledger.quarantined` event naming N: anything else on that subject quarantines nothing.
 */

export interface QuarantineRecord {
  /** The sequence set aside. */
  seq: number;
  /** Where the quarantine event itself is stored. */
  eventSeq: number;
  actor: string;
  reason: string;
  time: string;
}

/** `sha256:<hex>` of a message's bytes: the quarantine names exactly what it set aside. */
export const digestOf = (data: Uint8Array): string => `sha256:${createHash("sha256").update(data).digest("hex")}`;

// Decoder errors may quote the junk itself (JSON.parse does): one line, bounded, no control characters.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
export const oneLineError = (err: unknown): string => {
  const text = (err instanceof Error ? err.message : String(err)).replace(CONTROL, " ").trim() || "unreadable";
  return text.length > LIMITS.reasonLength ? `${text.slice(0, LIMITS.reasonLength - 1)}…` : text;
};

/** Why a stored message is not an event (strict decode, as live runners read), or null when it is one. */
export function notAnEvent(data: Uint8Array): string | null {
  try {
    decodeEvent(data);
    return null;
  } catch (err) {
    return oneLineError(err);
  }
}

/** How `Quarantines.since` finds the quarantine events (see there). */
export type QuarantineLookup = "listing" | "scan";

export class Quarantines {
  /** Quarantines found, by stream then sequence. A quarantine is permanent, so a found one is kept. */
  private readonly found = new Map<string, Map<number, QuarantineRecord>>();

  constructor(
    private readonly jsm: JetStreamManager,
    private readonly names: Naming,
  ) {}

  /** A quarantine already found for this sequence (no I/O). */
  known(stream: string, seq: number): QuarantineRecord | undefined {
    return this.found.get(stream)?.get(seq);
  }

  /** The quarantine of `seq` in `stream`, or null when there is none. */
  async at(stream: string, seq: number): Promise<QuarantineRecord | null> {
    const known = this.known(stream, seq);
    if (known) return known;
    const app = this.names.appOfStream(stream);
    if (app === null) return null;
    const msg = await this.jsm.direct.getMessage(stream, { seq: 1, next_by_subj: this.names.quarantine(app, seq) });
    if (!msg) return null;
    let event: LedgerEvent;
    try {
      event = decodeEvent(msg.data);
    } catch {
      return null; // junk on a quarantine subject quarantines nothing
    }
    if (event.type !== "ledger.quarantined" || event.data.seq !== seq) return null;
    const record: QuarantineRecord = {
      seq,
      eventSeq: msg.seq,
      actor: `${event.actor.kind}:${event.actor.id}`,
      reason: event.data.reason,
      time: event.time,
    };
    let ofStream = this.found.get(stream);
    if (!ofStream) this.found.set(stream, (ofStream = new Map()));
    ofStream.set(seq, record);
    return record;
  }

  /** Every quarantine of the stream (for audits). */
  all(stream: string): Promise<Map<number, QuarantineRecord>> {
    return this.since(stream, 1);
  }

  /**
   * Every quarantine of a sequence at or after `fromSeq`: what a replay from `fromSeq` loads first, so
   * that it skips a quarantined message even where its lenient structural decode would accept it.
   *
   * Two ways to find them, each costing the server time in proportion to something else (`how`, when
   * not given, takes the cheaper for this stream and position):
   * - `scan`: the quarantine of N is appended after N, so they are the quarantine events stored at or
   *   after `fromSeq`: direct gets of the next message on the stream's quarantine subjects (usually one,
   *   which finds none). The server reads every message from `fromSeq` on: 1.3 ms for the last 100
   *   sequences, but 2.9 s for all of a 1M-event stream, before a full rebuild read its first event.
   * - `listing`: the stream's quarantine subjects, from one stream-info request with a subjects filter,
   *   which the server answers from its per-subject index, in time proportional to the stream's subjects
   *   (80 to 300 ms at 300k subjects, 8 to 20 ms at 30k), then one direct get per quarantine found.
   * A scan costs about as much per message as a listing per subject or more, and a stream never holds
   * more subjects than messages: the listing is taken when more messages are to be scanned than the
   * stream has subjects.
   */
  async since(stream: string, fromSeq: number, how?: QuarantineLookup): Promise<Map<number, QuarantineRecord>> {
    const app = this.names.appOfStream(stream);
    if (app === null) return new Map();
    const filter = this.names.quarantines(app);
    const from = Math.max(1, fromSeq);
    if (how === undefined) {
      const { state } = await this.jsm.streams.info(stream);
      // A server that does not count subjects gets the scan, as before the listing existed.
      how = state.last_seq - from + 1 > (state.num_subjects ?? Number.POSITIVE_INFINITY) ? "listing" : "scan";
    }
    return how === "listing" ? this.listed(stream, from, filter) : this.scanned(stream, from, filter);
  }

  private async scanned(stream: string, fromSeq: number, filter: string): Promise<Map<number, QuarantineRecord>> {
    const out = new Map<number, QuarantineRecord>();
    for (let seq = fromSeq; ; ) {
      const msg = await this.jsm.direct.getMessage(stream, { seq, next_by_subj: filter });
      if (!msg) return out;
      await this.include(out, stream, fromSeq, msg.subject);
      seq = msg.seq + 1;
    }
  }

  private async listed(stream: string, fromSeq: number, filter: string): Promise<Map<number, QuarantineRecord>> {
    const out = new Map<number, QuarantineRecord>();
    const { state } = await this.jsm.streams.info(stream, { subjects_filter: filter });
    for (const subject of Object.keys(state.subjects ?? {})) await this.include(out, stream, fromSeq, subject);
    return out;
  }

  /** Adds the quarantine a quarantine subject holds, if it is one of a sequence from `fromSeq` on. */
  private async include(out: Map<number, QuarantineRecord>, stream: string, fromSeq: number, subject: string): Promise<void> {
    const quarantined = Number(subject.slice(subject.lastIndexOf(".") + 1));
    if (!Number.isSafeInteger(quarantined) || quarantined < fromSeq || out.has(quarantined)) return;
    const record = await this.at(stream, quarantined);
    if (record) out.set(quarantined, record);
  }
}
