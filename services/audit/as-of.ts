import { applyEvent, emptyRecord, indexEntryOf, isMemoryEvent, type MemoryRecord } from "../../projections/files/model.js";
import { renderMemoryIndex } from "../../projections/files/render.js";
import type { EventStore } from "../event-store.js";
import { withinAsOf, type AsOf } from "./history.js";

/**
 * The app's MEMORY.md as it was at a moment: the files projection's own pure fold (applyEvent) over the
 * stream up to the bound, rendered by its own renderer, so it is byte for byte what the live projection
 * showed then.
 */
export async function memoryIndexAsOf(store: EventStore, app: string, asOf: AsOf): Promise<{ markdown: string; seq: number }> {
  const stream = store.names.appStream(app);
  const records = new Map<string, MemoryRecord>();
  let seq = 0;
  let past = false;
  if ((await store.lastSeq(stream)) > 0) {
    await store.replay(stream, {}, (batch) => {
      for (const projected of batch) {
        if (past || !withinAsOf(projected, asOf)) {
          past = true;
          continue;
        }
        seq = projected.seq;
        if (!isMemoryEvent(projected.event)) continue;
        const id = projected.event.aggregateId;
        records.set(id, applyEvent(records.get(id) ?? emptyRecord(), projected));
      }
    });
  }
  const entries = [...records.values()].map(indexEntryOf).filter((e) => e !== undefined);
  return { markdown: renderMemoryIndex(app, entries), seq };
}
