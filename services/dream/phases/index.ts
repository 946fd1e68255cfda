import type { PhaseName } from "../../../schemas/events.js";
import type { Phase } from "../phase.js";
import { candidatesPhase } from "./candidates.js";
import { learnPhase } from "./learn.js";
import { mergePhase } from "./merge.js";
import { prunePhase } from "./prune.js";
import { refreshPhase } from "./refresh.js";
import { reindexPhase } from "./reindex.js";

/**
 * The phases a consolidation run can run, by name. Each phase module adds itself here with one line
 * (services/dream/phases/<name>.ts); a run runs the registered ones in PHASE_ORDER unless told otherwise.
 */
export const PHASES: Partial<Record<PhaseName, Phase>> = {
  candidates: candidatesPhase,
  prune: prunePhase,
  merge: mergePhase,
  refresh: refreshPhase,
  learn: learnPhase,
  reindex: reindexPhase,
};

/** The order phases run in (the schema's order): candidates, prune, merge, refresh, learn, reindex. */
export const PHASE_ORDER: readonly PhaseName[] = ["candidates", "prune", "merge", "refresh", "learn", "reindex"];

/** The phases a scheduled `dream` run runs: every registered one but the session-end review, in order. */
export const dreamPhases = (): Phase[] =>
  PHASE_ORDER.filter((name) => name !== "candidates")
    .map((name) => PHASES[name])
    .filter((p): p is Phase => p !== undefined);
