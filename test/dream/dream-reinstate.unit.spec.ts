import { describe, expect, it } from "vitest";
import { applyEvent, emptyRecord, indexEntryOf, type MemoryRecord } from "../../projections/files/model.js";
import { renderMemoryFile, renderMemoryIndex } from "../../projections/files/render.js";
import { evolveMemoryRecord, type MemoryRecord as SearchRecord } from "../../projections/search/memory-records.js";
import type { DomainEventOf, MemoryEvent } from "../../schemas/events.js";
import { envelopes } from "../support/decider-spec.js";

/** memory.reinstated in the pure folds of the read models: a reinstated memory is listed and indexed again. */
const history: DomainEventOf<MemoryEvent>[] = [
  { type: "memory.proposed", data: { version: 1, title: "Use pnpm", body: "We use pnpm, not npm.", kind: "convention", tags: [], paths: [], importance: 4 } },
  { type: "memory.approved", data: { version: 1 } },
  { type: "memory.superseded", data: { by: null, reason: "pruned by consolidation run r1" } },
  { type: "memory.reinstated", data: { reason: "revert of consolidation run r1" } },
];
const events = envelopes<MemoryEvent>(history, { aggregateId: "mem-1", app: "app1" });

describe("a reinstated memory in the read models' folds", () => {
  it("files: MEMORY.md lists it again, and its file is the one before the supersede but its seq", () => {
    const records: MemoryRecord[] = [];
    let record = emptyRecord();
    events.forEach((event, i) => {
      record = applyEvent(record, { seq: i + 1, subject: "x", event });
      records.push(record);
    });
    const index = (r: MemoryRecord) => renderMemoryIndex("app1", [indexEntryOf(r)!]);
    expect(index(records[1]!)).toContain("[Use pnpm]");
    expect(index(records[2]!)).not.toContain("[Use pnpm]");
    expect(index(records[3]!)).toContain("[Use pnpm]");
    const file = (r: MemoryRecord) => renderMemoryFile("app1", r)!.replace(/^seq: \d+\n/m, "");
    expect(file(records[3]!)).toBe(file(records[1]!));
  });

  it("search: superseding removes it from the index, reinstating puts the active version back", () => {
    let record: SearchRecord | undefined;
    const changes = events.map((event) => {
      const next = evolveMemoryRecord(record, event);
      record = next.record;
      return next.change?.type ?? null;
    });
    expect(changes).toEqual([null, "upsert", "remove", "upsert"]);
  });
});
