import { describe, expect, it } from "vitest";
import { naming } from "../../events/subjects.js";
import { kindsOf, packShared } from "../../services/rebuild-threads.js";
import type { StoredMessage } from "../../services/event-store.js";

const names = naming("pk");
const text = new TextEncoder();
const message = (seq: number, kind: "memory" | "claim" | "session", body: string): StoredMessage => ({
  seq,
  subject: names.aggregate("app1", kind, `id-${seq}`),
  data: text.encode(body),
});

describe("packShared: one batch packed once for every rebuild worker", () => {
  // Bodies of different lengths (one empty, one multi-byte) so that every end offset is checked.
  const messages = [
    message(3, "memory", '{"m":1}'),
    message(4, "claim", '{"c":"lock"}'),
    message(5, "session", ""),
    message(7, "memory", '{"m":"é ✓"}'),
    message(8, "claim", "{}"),
  ];
  const kinds = kindsOf(messages);

  it("keeps the messages of the wanted kinds, in order, with their sequences, subjects and bytes", () => {
    const batch = packShared(messages, kinds, new Set(["memory", "claim"] as const));
    expect(Array.from(batch.seqs)).toEqual([3, 4, 7, 8]);
    expect(batch.kinds).toEqual(["memory", "claim", "memory", "claim"]);
    expect(batch.subjects.split("\n")).toEqual([messages[0]!.subject, messages[1]!.subject, messages[3]!.subject, messages[4]!.subject]);
    const decoder = new TextDecoder();
    const bodies = Array.from(batch.ends, (end, i) => decoder.decode(batch.bytes.subarray(i === 0 ? 0 : batch.ends[i - 1], end)));
    expect(bodies).toEqual(['{"m":1}', '{"c":"lock"}', '{"m":"é ✓"}', "{}"]);
    expect(batch.bytes.length).toBe(batch.ends.at(-1));
  });

  it("lives in shared memory, so every worker reads the same bytes and none is copied per worker", () => {
    const batch = packShared(messages, kinds, undefined);
    for (const array of [batch.bytes, batch.ends, batch.seqs]) expect(array.buffer).toBeInstanceOf(SharedArrayBuffer);
    // Without a wanted set, everything (a projection that does not say what it consumes gets every event).
    expect(Array.from(batch.seqs)).toEqual([3, 4, 5, 7, 8]);
    expect(batch.ends[2]).toBe(batch.ends[1]); // the empty body
  });

  it("leaves the messages it was given unchanged, and packs nothing when no kind is wanted", () => {
    const copies = messages.map((m) => ({ ...m, data: Uint8Array.from(m.data) }));
    const batch = packShared(messages, kinds, new Set(["run"]));
    expect(batch.seqs.length).toBe(0);
    expect(batch.subjects).toBe("");
    expect(messages).toEqual(copies);
  });
});
