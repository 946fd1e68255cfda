import type { ClaimsReader } from "../../projections/claims/reader.js";
import { readMemoryIndex, readScratchpadIndex } from "../../projections/files/index.js";
import { SearchIndex } from "../../projections/search/index.js";
import { MemledgerError } from "../../schemas/errors.js";
import type { EventStore } from "../event-store.js";
import { AppCatalog } from "./catalog.js";
import { assemblePack, type Availability, type ContextPack, type PackClaim, type PackOptions } from "./pack.js";
import { rankRelevant } from "./retrieval.js";
import { readableTopK } from "../auth/guard.js";
import { memoizedTokens, o200kTokens, type TokenCounter } from "./tokens.js";

export interface HydrationOptions {
  /** Live claims (the Redis claims projection); without it the claims section says it is unavailable. */
  claims?: ClaimsReader | undefined;
  /** The files projection root, for MEMORY.md; without it the index section says it is unavailable. */
  filesRoot?: string | undefined;
  /**
   * The live search index of an app when this process runs the search projection (it may have vectors).
   * Without one the catalog keeps a BM25 index of its own, which ranks; with one, the catalog keeps no
   * index (only sessions, changes and fragile memories), and derives one only while the app's live index
   * does not exist yet.
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

/** A memory a pack shows: which version, where in which section, and from which index. */
export interface ShownMemory {
  memoryId: string;
  version: number;
  rank: number;
  channel: string;
  origin: "app" | "org";
}

export interface HydrateInput {
  agent: string;
  task: string;
  branch: string | null;
  paths: readonly string[];
  budget: number;
  /** The agent's current session, left out when looking for its previous one. */
  sessionId?: string | undefined;
  /**
   * Which scopes the pack may show (the sender's read rights, and never another agent's scratchpad):
   * memories, changes and MEMORY.md lines of other scopes are left out. Default: shared scopes and the
   * agent's own scratchpad.
   */
  visible?: ((scope: string) => boolean) | undefined;
}

/** A pack shows shared scopes and the agent's own scratchpad only, whatever else its sender may read. */
export const ownAndShared = (agent: string) => (scope: string) => !scope.startsWith("agent:") || scope === `agent:${agent}`;

/** A MEMORY.md entry line ends with its link and details: `](<file>) (<details>; importance <n>)`. */
const INDEX_LINK = /\]\(([A-Za-z0-9_./-]+)\) \([^()]*; importance -?[0-9.]+\)$/;

/** The scope of a memory file from its path (`app/…`, `org/…`, `team/<name>/…`, `agent/<id>/…`). */
function scopeOfFile(file: string): string | null {
  const [first, second] = file.split("/");
  if (first === "app" || first === "org") return first;
  if ((first === "team" || first === "agent") && second !== undefined) return `${first}:${second}`;
  return null;
}

/** MEMORY.md without the lines of memories in scopes the reader may not see (unrecognised entries go too). */
export function visibleIndexLines(text: string, visible: (scope: string) => boolean): string {
  return text
    .split("\n")
    .filter((line) => {
      if (!line.startsWith("- [")) return true;
      const file = INDEX_LINK.exec(line)?.[1];
      if (file === undefined) return !/\]\(/.test(line); // the "…and N more" line has no link
      const scope = scopeOfFile(file);
      return scope !== null && visible(scope);
    })
    .join("\n");
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
    // Counts are remembered across packs: most of a pack's text is the same from one request to the next.
    this.tokens = memoizedTokens(options.tokens ?? o200kTokens);
    this.now = options.now ?? (() => new Date());
  }

  async hydrate(app: string, input: HydrateInput): Promise<ContextPack> {
    return (await this.hydrateShown(app, input)).pack;
  }

  /**
   * The pack and the memories whose content it shows (its `fragile` and `relevant` sections, in order, with
   * the version shown): what an exposure receipt records (services/audit/exposure.ts).
   */
  async hydrateShown(app: string, input: HydrateInput): Promise<{ pack: ContextPack; shown: ShownMemory[] }> {
    const live = this.options.searchIndex?.(app);
    const visible = ((own) => (input.visible ? (scope: string) => own(scope) && input.visible!(scope) : own))(ownAndShared(input.agent));
    const [catalog, memoryIndex, claims] = await Promise.all([this.caughtUp(app, !live), this.memoryIndex(app, input.agent, visible), this.liveClaims(app)]);
    // An index of the catalog's own only stands in while the live one is missing; once there is one it goes.
    if (live && catalog.index) catalog.dropIndex();
    const ranking = live ?? catalog.index!;
    // Read before retrieval yields, so every part of the pack describes the same caught-up catalog.
    const since = catalog.previousSession(input.agent, input.sessionId);
    const changes = since ? catalog.changesAfter(since.seq, this.options.maxChanges ?? 200, visible) : { events: [], omittedOlder: 0 };
    const fragileCandidates = catalog.fragileOnPaths(input.paths).filter((m) => visible(m.scope));
    const query = { task: input.task, paths: input.paths, branch: input.branch };
    const relevant = await readableTopK((k) => rankRelevant(ranking, { ...query, k }), this.options.relevantK ?? 12, (r) => visible(r.memory.scope));
    const pack = assemblePack(
      {
        app,
        agent: input.agent,
        task: input.task,
        branch: input.branch,
        paths: input.paths,
        memoryIndex,
        relevant,
        fragileCandidates,
        claims,
        changes: { since, ...changes },
      },
      { ...this.options.pack, budget: input.budget },
      this.tokens,
    );
    const versions = new Map<string, { version: number; origin: "app" | "org" }>();
    for (const m of fragileCandidates) versions.set(m.memoryId, { version: m.version, origin: m.scope === "org" ? "org" : "app" });
    for (const r of relevant) versions.set(r.memory.memoryId, { version: r.memory.version, origin: r.memory.scope === "org" ? "org" : "app" });
    const shown: ShownMemory[] = [];
    for (const section of pack.sections) {
      if (section.name !== "fragile" && section.name !== "relevant") continue;
      section.included.forEach((memoryId, i) => {
        const known = versions.get(memoryId);
        if (known) shown.push({ memoryId, version: known.version, rank: i + 1, channel: section.name, origin: known.origin });
      });
    }
    return { pack, shown };
  }

  /**
   * The app's catalog, folded up to the stream's last event at the time of the call; `withIndex`: with a
   * search index of its own, folded from the stream's start when it has none yet (a process whose live
   * search index for the app does not exist yet: the same index the catalog would have kept all along).
   */
  private async caughtUp(app: string, withIndex: boolean): Promise<AppCatalog> {
    let entry = this.catalogs.get(app);
    if (!entry) {
      // Without a live search projection in this process the catalog ranks too, so it indexes from the start.
      entry = { catalog: new AppCatalog(app, { ownIndex: !this.options.searchIndex }), catchingUp: Promise.resolve() };
      this.catalogs.set(app, entry);
    }
    const { catalog } = entry;
    // One catch-up at a time per app; concurrent packs wait for it and then read the same state.
    const next = entry.catchingUp.then(async () => {
      const stream = this.store.names.appStream(app);
      try {
        if (withIndex && !catalog.index) {
          const index = new SearchIndex(app, "hydration");
          if (catalog.appliedSeq > 0) await this.store.replay(stream, { fromSeq: 1 }, (batch) => index.apply(batch));
          catalog.adoptIndex(index);
        }
        await this.store.replay(stream, { fromSeq: catalog.appliedSeq + 1 }, (batch) => catalog.apply(batch));
      } catch (err) {
        // No stream yet: an app nobody wrote to has an empty catalog.
        if (!(err instanceof MemledgerError && err.code === "not_found")) throw err;
      }
    });
    entry.catchingUp = next.catch(() => undefined);
    await next;
    return catalog;
  }

  /**
   * The app's MEMORY.md (shared scopes; lines the reader may not see left out), followed by the agent's
   * own scratchpad index when it has one and the reader may see it.
   */
  private async memoryIndex(app: string, agent: string, visible: (scope: string) => boolean): Promise<Availability<string | null>> {
    if (!this.options.filesRoot) return { available: false, reason: "this service runs without the files projection" };
    try {
      const root = this.options.filesRoot;
      const [shared, own] = await Promise.all([readMemoryIndex(root, app), visible(`agent:${agent}`) ? readScratchpadIndex(root, app, agent) : null]);
      const parts = [shared === null ? null : visibleIndexLines(shared, visible).trimEnd(), own?.trimEnd() ?? null].filter((p): p is string => p !== null);
      return { available: true, value: parts.length > 0 ? `${parts.join("\n\n")}\n` : null };
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
