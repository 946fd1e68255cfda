import { indexEntryOf } from "../../projections/files/model.js";
import { renderMemoryIndex, renderScratchpadIndex } from "../../projections/files/render.js";
import { attachVectorChannel, retrieve, type RetrievedMemory, type RetrieveOptions, type SearchIndex, type VectorSetup } from "../../projections/search/index.js";
import { invalid } from "../../schemas/errors.js";
import { isLive, type ClaimState } from "../../commands/claim.js";
import { ORG_APP } from "../../events/subjects.js";
import type { RetrievalMode } from "../../schemas/retrieval.js";
import { readableTopK } from "../auth/guard.js";
import type { EventStore } from "../event-store.js";
import { assemblePack, type ContextPack, type PackClaim } from "../hydration/pack.js";
import { rankRelevant } from "../hydration/retrieval.js";
import { ownAndShared, visibleIndexLines, type HydrateInput } from "../hydration/service.js";
import { memoizedTokens, o200kTokens, type TokenCounter } from "../hydration/tokens.js";
import type { AsOf } from "./history.js";
import { foldAsOf, type FoldReport } from "./snapshots.js";
import type { FoldedState } from "./as-of-state.js";

/**
 * Time travel for the read models an agent is given: MEMORY.md, search and the hydration pack as they
 * stood at a stream sequence or a time, each built from the as-of memory records (snapshots.ts: a
 * verified snapshot plus the events after it, or the whole log) by the very code the live path runs:
 * the files renderer, the search projection's `retrieve`, hydration's catalog and `assemblePack`. The
 * read policy is applied by the caller's `readable`, as the command service applies it to live reads.
 */

export interface AsOfOptions {
  /** Fold from the log alone, ignoring snapshots (an auditor who will not trust the cache). */
  noSnapshot?: boolean | undefined;
}

/** Which bound and which starting points an answer was folded from. */
export interface AsOfProvenance {
  /** The app stream's last event inside the bound. */
  seq: number;
  asOf: { seq: number | null; time: string | null };
  from: Record<string, FoldReport>;
}

const provenance = (state: FoldedState, asOf: AsOf, from: Record<string, FoldReport>): AsOfProvenance => ({
  seq: state.seq,
  asOf: { seq: asOf.seq ?? null, time: asOf.time ?? null },
  from,
});

/** The shared MEMORY.md of the folded state (folded with its files records), exactly as the files projection renders it. */
export function memoryIndexOf(state: FoldedState): string {
  const entries = [...state.files!.values()].map(indexEntryOf).filter((e) => e !== undefined);
  return renderMemoryIndex(state.app, entries);
}

/** The app's MEMORY.md as of the bound. */
export async function memoryIndexAsOf(store: EventStore, app: string, asOf: AsOf, options: AsOfOptions = {}): Promise<{ markdown: string } & AsOfProvenance> {
  const { state, report } = await foldAsOf(store, app, asOf, { noSnapshot: options.noSnapshot });
  return { markdown: memoryIndexOf(state), ...provenance(state, asOf, { [app]: report }) };
}

/**
 * The org's bound for an app's as-of read: the org stream has its own sequences, so the org is read as
 * of the time of the app's last event inside the bound (or the asked time itself).
 */
const orgBound = (asOf: AsOf, app: FoldedState): AsOf => (asOf.time !== undefined ? { time: asOf.time } : app.seq === 0 ? { seq: 0 } : { time: app.maxTime ?? undefined });

export interface SearchAsOfOptions extends AsOfOptions {
  k: number;
  mode: RetrievalMode;
  scope?: string | undefined;
  kind?: string | undefined;
  /** The reader's read rights (policy): hits in other scopes are left out, and more are fetched, as live. */
  readable: (scope: string) => boolean;
  /** The same vector setup the live CLI search uses; required unless mode is bm25. */
  vectors?: VectorSetup | undefined;
}

/** `search QUERY --as-of…`: the app's and the org's memories as of the bound, ranked by the live `retrieve`. */
export async function searchAsOf(store: EventStore, app: string, query: string, asOf: AsOf, options: SearchAsOfOptions): Promise<{ hits: RetrievedMemory[] } & AsOfProvenance> {
  const own = await foldAsOf(store, app, asOf, { files: false, search: true, noSnapshot: options.noSnapshot });
  const states: FoldedState[] = [own.state];
  const from: Record<string, FoldReport> = { [app]: own.report };
  if (app !== ORG_APP) {
    const org = await foldAsOf(store, ORG_APP, orgBound(asOf, own.state), { files: false, search: true, noSnapshot: options.noSnapshot });
    states.push(org.state);
    from[ORG_APP] = org.report;
  }
  const indexes: SearchIndex[] = states.map((s) => s.search!);
  if (options.mode !== "bm25") {
    if (!options.vectors) throw invalid(`--mode ${options.mode} needs vectors (MEMLEDGER_VECTORS); use --mode bm25`);
    // Derived from the active memories of that moment through the embedding cache, as a reader without
    // saved vectors derives them.
    for (const index of indexes) await attachVectorChannel(index, options.vectors, undefined);
  }
  const fetch = (k: number) => retrieve(indexes, query, { k, mode: options.mode, ...(options.scope ? { scope: options.scope } : {}), ...(options.kind ? { kind: options.kind as RetrieveOptions["kind"] } : {}) });
  const hits = await readableTopK(fetch, options.k, (hit) => options.readable(hit.scope));
  return { hits, ...provenance(own.state, asOf, from) };
}

export interface HydrateAsOfInput extends Omit<HydrateInput, "visible"> {
  /** The reader's read rights (policy); the pack also keeps only shared scopes and the agent's own scratchpad. */
  readable: (scope: string) => boolean;
}

/** Claims whose lease was live at `at`, soonest expiry first (the claims reader's order). */
function liveClaimsAt(claims: Map<string, ClaimState>, at: number): PackClaim[] {
  return [...claims.entries()]
    .filter(([, c]) => isLive(c, at) && c.kind !== null && c.name !== null && c.holder !== null && c.expiresAt !== null)
    .sort(([ia, a], [ib, b]) => Date.parse(a.expiresAt!) - Date.parse(b.expiresAt!) || (ia < ib ? -1 : ia > ib ? 1 : 0))
    .map(([, c]) => ({ kind: c.kind!, name: c.name!, holder: c.holder!, expiresAt: c.expiresAt! }));
}

/**
 * `hydrate --as-of…`: the pack an agent would have been given at that moment. Every section from the
 * state of that moment: MEMORY.md (and the agent's scratchpad index) rendered from the as-of records,
 * relevant memories ranked by the as-of search index, fragile memories, the previous session and the
 * changes since it from hydration's own catalog folded up to the bound, and the claims whose leases were
 * live then (the claims projection's fold). The catalog and the claims come from the snapshot's hydration
 * part when it has a usable one (then only the events after the snapshot are read); without it, they are
 * folded from the stream's first event.
 */
export async function hydrateAsOf(
  store: EventStore,
  app: string,
  input: HydrateAsOfInput,
  asOf: AsOf,
  options: AsOfOptions & { tokens?: TokenCounter; relevantK?: number; maxChanges?: number } = {},
): Promise<{ pack: ContextPack } & AsOfProvenance> {
  const { state, hydration, report } = await foldAsOf(store, app, asOf, { search: true, hydration: true, noSnapshot: options.noSnapshot });
  const { catalog, claims, lastTime } = hydration!;
  const own = ownAndShared(input.agent);
  const visible = (scope: string) => own(scope) && input.readable(scope);
  // As the live Hydrator reads the files root: the shared MEMORY.md without lines the reader may not
  // see, then the agent's own scratchpad index when it has one and the reader may see it.
  const shared = state.seq === 0 ? null : visibleIndexLines(memoryIndexOf(state), visible).trimEnd();
  const scratch = `agent:${input.agent}`;
  const entries = [...state.files!.values()].map(indexEntryOf).filter((e) => e !== undefined);
  const ownIndex = visible(scratch) && entries.some((e) => e.scope === scratch) ? renderScratchpadIndex(app, input.agent, entries).trimEnd() : null;
  const parts = [shared, ownIndex].filter((p): p is string => p !== null);
  const since = catalog.previousSession(input.agent, input.sessionId);
  const changes = since ? catalog.changesAfter(since.seq, options.maxChanges ?? 200, visible) : { events: [], omittedOlder: 0 };
  const fragileCandidates = catalog.fragileOnPaths(input.paths).filter((m) => visible(m.scope));
  const query = { task: input.task, paths: input.paths, branch: input.branch };
  const relevant = await readableTopK((k) => rankRelevant(state.search!, { ...query, k }), options.relevantK ?? 12, (r) => visible(r.memory.scope));
  // A lease is judged at the bound: the asked time, else the time of the last event inside it.
  const at = asOf.time !== undefined ? Date.parse(asOf.time) : lastTime !== null ? Date.parse(lastTime) : 0;
  const pack = assemblePack(
    {
      app,
      agent: input.agent,
      task: input.task,
      branch: input.branch,
      paths: input.paths,
      memoryIndex: { available: true, value: parts.length > 0 ? `${parts.join("\n\n")}\n` : null },
      relevant,
      fragileCandidates,
      claims: { available: true, value: liveClaimsAt(claims, at) },
      changes: { since, ...changes },
    },
    { budget: input.budget },
    memoizedTokens(options.tokens ?? o200kTokens),
  );
  return { pack, ...provenance(state, asOf, { [app]: report }) };
}
