import { LIMITS } from "../../../schemas/primitives.js";
import type { Phase, PhaseContext, ProposalDraft } from "../phase.js";
import { byKey, clampBody, evidence, line, refOf, shortHash, type ActiveMemory } from "../proposals.js";
import { contradictionBetween, similarPairs, type SimilarPair } from "../similarity.js";

/**
 * merge: near-duplicates (hybrid similarity at or above `mergeSimilarity` over the app's index, in one
 * scope) become one memory. Groups are formed around a leader, so a group never chains through
 * intermediaries: memories are taken best first (most retrieved, most important, most recently changed,
 * then id) and each unassigned one gathers the unassigned memories at or above the threshold to it.
 * Pairs that contradict each other (refresh flags them) are never merged.
 *
 * The merged memory keeps the leader's title, kind and body, then the lines the others add (lines the
 * leader does not already have), every tag and path (up to the limits) and the highest importance.
 * Evidence: every source (memory and version), each source's similarity to the leader, retrievals.
 */

const MAX_SOURCES = 50;

export const mergePhase: Phase = {
  name: "merge",
  async propose(ctx: PhaseContext): Promise<ProposalDraft[]> {
    const pairs = await similarPairs(ctx.view, { minSimilarity: ctx.settings.mergeSimilarity, embedder: ctx.embedder, signal: ctx.signal });
    const neighbours = new Map<string, Map<string, SimilarPair>>();
    const memories = new Map<string, ActiveMemory>();
    for (const pair of pairs) {
      if (contradictionBetween(pair.a, pair.b)) continue;
      for (const [x, y] of [[pair.a, pair.b], [pair.b, pair.a]] as const) {
        memories.set(x.id, x);
        let list = neighbours.get(x.id);
        if (!list) neighbours.set(x.id, (list = new Map()));
        list.set(y.id, pair);
      }
    }
    const retrievals = (m: ActiveMemory) => ctx.view.retrievals.get(m.id)?.count ?? 0;
    const order = [...memories.values()].sort(
      (a, b) => retrievals(b) - retrievals(a) || b.version.importance - a.version.importance || b.seq - a.seq || (a.id < b.id ? -1 : 1),
    );
    const assigned = new Set<string>();
    const drafts: ProposalDraft[] = [];
    for (const leader of order) {
      if (assigned.has(leader.id)) continue;
      const near = [...neighbours.get(leader.id)!.entries()]
        .filter(([id]) => !assigned.has(id))
        .map(([id, pair]) => ({ memory: memories.get(id)!, pair }))
        .sort((a, b) => b.pair.hybrid - a.pair.hybrid || (a.memory.id < b.memory.id ? -1 : 1))
        .slice(0, MAX_SOURCES - 1);
      if (near.length === 0) continue;
      assigned.add(leader.id);
      for (const { memory } of near) assigned.add(memory.id);
      drafts.push(mergeDraft(leader, near, retrievals));
    }
    return byKey(drafts);
  },
};

function mergeDraft(leader: ActiveMemory, near: { memory: ActiveMemory; pair: SimilarPair }[], retrievals: (m: ActiveMemory) => number): ProposalDraft {
  const sources = [leader, ...near.map((n) => n.memory)];
  const refs = sources.map(refOf);
  const have = new Set(leader.version.body.split("\n").map(normalLine).filter((l) => l.length > 0));
  const added: string[] = [];
  for (const { memory } of near) {
    for (const raw of memory.version.body.split("\n")) {
      const key = normalLine(raw);
      if (key.length === 0 || have.has(key)) continue;
      have.add(key);
      added.push(raw.trimEnd());
    }
  }
  const body = clampBody(added.length > 0 ? `${leader.version.body.trimEnd()}\n\n${added.join("\n")}` : leader.version.body);
  const tags = unique(sources.flatMap((m) => m.version.tags)).slice(0, LIMITS.tags);
  const paths = unique(sources.flatMap((m) => m.version.paths)).slice(0, LIMITS.paths);
  const importance = Math.max(...sources.map((m) => m.version.importance));
  const similarities = near.map((n) => n.pair.hybrid);
  const scores: Record<string, number> = { minSimilarity: Math.min(...similarities), maxSimilarity: Math.max(...similarities) };
  near.forEach((n, i) => {
    scores[`similarity.${i + 1}`] = n.pair.hybrid;
    scores[`lexical.${i + 1}`] = n.pair.lexical;
    if (n.pair.semantic !== null) scores[`semantic.${i + 1}`] = n.pair.semantic;
  });
  const sortedRefs = refs.map((r) => `${r.memoryId}@v${r.version}`).sort();
  return {
    key: `merge:${leader.id}@v${leader.version.version}+${near.length}:${shortHash(sortedRefs.join(","))}`,
    change: {
      action: "merge",
      sources: refs,
      scope: leader.scope,
      content: { title: leader.version.title, body, kind: leader.version.kind, tags, paths, importance },
    },
    evidence: evidence({
      memories: refs,
      counts: { sources: sources.length, linesAdded: added.length, retrievals: sources.reduce((n, m) => n + retrievals(m), 0) },
      scores,
      summary: `${sources.length} memories in ${leader.scope} say nearly the same as "${leader.version.title}" (similarity ${fmt(Math.min(...similarities))} to ${fmt(Math.max(...similarities))}; the numbered scores follow the sources after the first)`,
    }),
    reason: line(`Merge ${sources.length} near-duplicates of "${leader.version.title}" into one memory`),
  };
}

const normalLine = (text: string): string => text.toLowerCase().replace(/[^\p{L}\p{N}]+/gu, " ").trim();
const unique = (items: string[]): string[] => [...new Set(items)];
const fmt = (x: number): string => x.toFixed(2);
