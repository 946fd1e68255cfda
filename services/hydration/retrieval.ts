import { retrieve, type SearchIndex } from "../../projections/search/index.js";
import type { RankedMemory } from "./pack.js";

export interface RelevanceQuery {
  task: string;
  paths: readonly string[];
  branch: string | null;
  k: number;
}

/**
 * The memories most relevant to the task: the search projection's hybrid retrieval (BM25 and vectors
 * fused; BM25 alone when the index has no vector channel), boosted for memories touching the agent's
 * paths or proposed on its branch. Ties are broken by memory id so the same index gives the same pack.
 */
export async function rankRelevant(index: SearchIndex, query: RelevanceQuery): Promise<RankedMemory[]> {
  if (query.task.trim() === "") return [];
  const boost = { ...(query.paths.length ? { paths: query.paths } : {}), ...(query.branch ? { branch: query.branch } : {}) };
  const hits = await retrieve(index, query.task, { k: query.k, mode: index.vectors ? "hybrid" : "bm25", boost });
  return hits.map((hit) => ({
    memory: {
      memoryId: hit.memoryId,
      version: hit.version,
      title: hit.title,
      kind: hit.kind,
      scope: hit.scope,
      paths: hit.paths,
      tags: hit.tags,
      body: hit.body,
      importance: hit.importance,
    },
    score: hit.score,
    channels: Object.keys(hit.channels).sort(),
  }));
}
