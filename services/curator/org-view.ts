import { initialMemoryState, memoryDecider, type MemoryState } from "../../commands/memory.js";
import { retrieve, type RetrievalMode } from "../../projections/search/retrieve.js";
import { SearchIndex } from "../../projections/search/search-index.js";
import type { MemoryEvent } from "../../schemas/events.js";
import { MemledgerError } from "../../schemas/errors.js";
import type { EventStore, StoredEvent } from "../event-store.js";
import { ORG_APP } from "../projection-supervisor.js";
import type { OrgIndexView, OrgMemoryView } from "./policy.js";

/** What one promotion already did to the org: found through the provenance of the org events. */
export interface OrgEffect {
  orgMemoryId: string;
  orgVersion: number;
  /** Id of the org `memory.proposed` event that carries the promotion. */
  eventId: string;
}

/**
 * The curator's own, in-memory view of the org stream, caught up before every decision:
 *   - a search index over the active org memories (the search projection's SearchIndex, so "similar"
 *     means what org search means), for near-duplicate candidates;
 *   - every org memory's state and last sequence, to append revisions with optimistic concurrency;
 *   - which promotion produced which org version (from `provenance`), so a promotion is applied once:
 *     after a crash, the effect is found here and not made again.
 */
export class OrgView {
  private readonly index = new SearchIndex(ORG_APP, "curator");
  private readonly memories = new Map<string, { state: MemoryState; seq: number }>();
  private readonly effects = new Map<string, OrgEffect>();
  /** `<app>\u0000<memoryId>` → org memory id: where that app memory's earlier versions went. */
  private readonly sources = new Map<string, string>();
  private seq = 0;

  constructor(private readonly store: EventStore) {}

  get appliedSeq(): number {
    return this.seq;
  }

  /** Folds every org event appended since the last call. */
  async catchUp(): Promise<void> {
    const stream = await this.store.ensureOrgStream();
    try {
      await this.store.replay(stream, { fromSeq: this.seq + 1 }, (events) => this.apply(events));
    } catch (err) {
      if (!(err instanceof MemledgerError && err.code === "not_found")) throw err;
    }
  }

  apply(events: readonly StoredEvent[]): void {
    for (const stored of events) {
      if (stored.seq <= this.seq) continue;
      this.seq = stored.seq;
      const { event } = stored;
      if (!event.type.startsWith("memory.")) continue;
      const memoryEvent = event as MemoryEvent;
      const before = this.memories.get(event.aggregateId)?.state ?? initialMemoryState();
      this.memories.set(event.aggregateId, { state: memoryDecider.evolve(before, memoryEvent), seq: stored.seq });
      if (memoryEvent.type === "memory.proposed" && memoryEvent.data.provenance) {
        const { provenance } = memoryEvent.data;
        this.effects.set(provenance.promotionId, { orgMemoryId: event.aggregateId, orgVersion: memoryEvent.data.version, eventId: event.id });
        this.sources.set(`${provenance.source.app}\u0000${provenance.source.memoryId}`, event.aggregateId);
      }
    }
    this.index.apply(events);
  }

  /** What this promotion already did to the org, if anything. */
  effectOf(promotionId: string): OrgEffect | undefined {
    return this.effects.get(promotionId);
  }

  memory(orgMemoryId: string): { state: MemoryState; seq: number } | undefined {
    return this.memories.get(orgMemoryId);
  }

  private activeView(memoryId: string): OrgMemoryView | undefined {
    const view = this.index.view(memoryId);
    if (!view) return undefined;
    return { memoryId, version: view.version, title: view.title, body: view.body, kind: view.kind, tags: view.tags, importance: view.importance };
  }

  /**
   * A frozen answer for one decision: the candidates are retrieved here (BM25, or hybrid when the index
   * has a vector channel), so `decidePromotion` stays pure and synchronous.
   */
  async viewFor(text: string, k: number, mode?: RetrievalMode): Promise<OrgIndexView> {
    const chosen: RetrievalMode = mode ?? (this.index.vectors ? "hybrid" : "bm25");
    const hits = this.index.indexedCount === 0 ? [] : await retrieve(this.index, text, { k, mode: chosen });
    const candidates = hits.map((hit) => this.activeView(hit.memoryId)).filter((v): v is OrgMemoryView => v !== undefined);
    return {
      similar: (_text, limit) => candidates.slice(0, limit),
      promotedFrom: (app, memoryId) => {
        const orgMemoryId = this.sources.get(`${app}\u0000${memoryId}`);
        return orgMemoryId === undefined ? undefined : this.activeView(orgMemoryId);
      },
    };
  }
}
