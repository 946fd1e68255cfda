import type { ClaimsReader } from "../../projections/claims/reader.js";
import { readMemoryIndex } from "../../projections/files/index.js";
import type { SearchIndex } from "../../projections/search/index.js";
import { MemledgerError } from "../../schemas/errors.js";
import type { EventStore } from "../event-store.js";
import { AppCatalog } from "./catalog.js";
import { assemblePack, type Availability, type ContextPack, type PackClaim, type PackOptions } from "./pack.js";
import { rankRelevant } from "./retrieval.js";
import { o200kTokens, type TokenCounter } from "./tokens.js";

export interface HydrationOptions {
  /** Live claims (the Redis claims projection); without it the claims section says it is unavailable. */
  claims?: ClaimsReader | undefined;
  /** The files projection root, for MEMORY.md; without it the index section says it is unavailable. */
  filesRoot?: string | undefined;
  /**
   * The live search index of an app when this process runs the search projection (it may have vectors).
   * Without one, or before it exists, the catalog's own BM25 index ranks.
   */
  searchIndex?: ((app: string) => SearchIndex | undefined) | undefined;
  now?: () => Date;
  tokens?: TokenCounter;
  /** How many memories retrieval returns for the relevant section (default 12). */
  relevantK?: number;
  /** At most this many changes go into the pack's input (default 200); the rest are counted. */
  maxChanges?: number;
  pack?: Omit<PackOptions, "budget">;
}

export interface HydrateInput {
  agent: string;
  task: string;
  branch: string | null;
  paths: readonly string[];
  budget: number;
  /** The agent's current session, left out when looking for its previous one. */
  sessionId?: string | undefined;
}

/**
 * Fetches what a context pack needs (MEMORY.md, ranked memories, live claims, fragile memories, the
 * changes since the agent's previous session) and hands it to the pure `assemblePack`. A source that
 * fails makes its section say so; the pack is still built, since an agent is better off starting with
 * most of its context than with none.
 */
export class Hydrator {
  private readonly catalogs = new Map<string, { catalog: AppCatalog; catchingUp: Promise<void> }>();
  private readonly tokens: TokenCounter;
  private readonly now: () => Date;

  constructor(
    private readonly store: EventStore,
    private readonly options: HydrationOptions = {},
  ) {
    this.tokens = options.tokens ?? o200kTokens;
    this.now = options.now ?? (() => new Date());
  }

  async hydrate(app: string, input: HydrateInput): Promise<ContextPack> {
    const [catalog, memoryIndex, claims] = await Promise.all([this.caughtUp(app), this.memoryIndex(app), this.liveClaims(app)]);
    const ranking = this.options.searchIndex?.(app) ?? catalog.memories;
    const relevant = await rankRelevant(ranking, { task: input.task, paths: input.paths, branch: input.branch, k: this.options.relevantK ?? 12 });
    const since = catalog.previousSession(input.agent, input.sessionId);
    const changes = since ? catalog.changesAfter(since.seq, this.options.maxChanges ?? 200) : { events: [], omittedOlder: 0 };
    return assemblePack(
      {
        app,
        agent: input.agent,
        task: input.task,
        branch: input.branch,
        paths: input.paths,
        memoryIndex,
        relevant,
        fragileCandidates: catalog.fragileMemories(),
        claims,
        changes: { since, ...changes },
      },
      { ...this.options.pack, budget: input.budget },
      this.tokens,
    );
  }

  /** The app's catalog, folded up to the stream's last event at the time of the call. */
  private async caughtUp(app: string): Promise<AppCatalog> {
    let entry = this.catalogs.get(app);
    if (!entry) {
      entry = { catalog: new AppCatalog(app), catchingUp: Promise.resolve() };
      this.catalogs.set(app, entry);
    }
    const { catalog } = entry;
    // One catch-up at a time per app; concurrent packs wait for it and then read the same state.
    const next = entry.catchingUp.then(async () => {
      try {
        await this.store.replay(this.store.names.appStream(app), { fromSeq: catalog.appliedSeq + 1 }, (batch) => catalog.apply(batch));
      } catch (err) {
        // No stream yet: an app nobody wrote to has an empty catalog.
        if (!(err instanceof MemledgerError && err.code === "not_found")) throw err;
      }
    });
    entry.catchingUp = next.catch(() => undefined);
    await next;
    return catalog;
  }

  private async memoryIndex(app: string): Promise<Availability<string | null>> {
    if (!this.options.filesRoot) return { available: false, reason: "this service runs without the files projection" };
    try {
      return { available: true, value: await readMemoryIndex(this.options.filesRoot, app) };
    } catch (err) {
      return { available: false, reason: `reading it failed (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` };
    }
  }

  private async liveClaims(app: string): Promise<Availability<readonly PackClaim[]>> {
    if (!this.options.claims) return { available: false, reason: "this service runs without the claims projection (Redis)" };
    try {
      const claims = await this.options.claims.liveClaims(app, { now: this.now().getTime() });
      return { available: true, value: claims.map((c) => ({ kind: c.kind, name: c.name, holder: c.holder, expiresAt: c.expiresAt })) };
    } catch (err) {
      return { available: false, reason: `the claims projection did not answer (${(err as Error).message})` };
    }
  }
}
