import { indexEntryOf, isListed, type IndexEntry } from "../../../projections/files/model.js";
import { INDEX_LIMITS, isSharedEntry, renderMemoryIndex } from "../../../projections/files/render.js";
import type { DreamView, Phase, PhaseContext, ProposalDraft } from "../phase.js";

/**
 * re-index: MEMORY.md as the files projection renders it for this view. The projection enforces the
 * limits (200 lines, 25 KB: render.ts budgets every line), so this phase proposes nothing; it reports what
 * the index holds, for `run.completed`'s `index` and the step's report line.
 */

export interface IndexReport {
  lines: number;
  bytes: number;
  /** Memories listed in MEMORY.md. */
  listed: number;
  /** Memories that belong in it (shared scopes, active or pending): the rest are counted on its last line. */
  eligible: number;
  withinLimits: boolean;
  /** One line for `run.step_completed`'s report. */
  summary: string;
}

/** MEMORY.md of the view, rendered by the files projection's own code, measured. Pure. */
export function indexReport(view: DreamView): IndexReport {
  const entries: IndexEntry[] = [];
  for (const { state, seq } of view.memories.values()) {
    const entry = indexEntryOf({ seq, state, provenance: {} });
    if (entry) entries.push(entry);
  }
  const text = renderMemoryIndex(view.app, entries);
  const lines = text.endsWith("\n") ? text.split("\n").length - 1 : text.split("\n").length;
  const bytes = Buffer.byteLength(text, "utf8");
  const listed = text.split("\n").filter((l) => l.startsWith("- [")).length;
  const eligible = entries.filter((e) => isSharedEntry(e) && isListed(e)).length;
  const withinLimits = lines <= INDEX_LIMITS.maxLines && bytes <= INDEX_LIMITS.maxBytes;
  return {
    lines,
    bytes,
    listed,
    eligible,
    withinLimits,
    summary: `MEMORY.md: ${lines} lines, ${bytes} bytes (limits ${INDEX_LIMITS.maxLines} lines, ${INDEX_LIMITS.maxBytes} bytes${withinLimits ? "" : ", EXCEEDED"}); lists ${listed} of ${eligible} memories`,
  };
}

/** The phase, with `report` for the runner (run.completed's `index`: lines, bytes, listed, withinLimits). */
export const reindexPhase: Phase & { report(ctx: Pick<PhaseContext, "view">): IndexReport } = {
  name: "reindex",
  async propose(): Promise<ProposalDraft[]> {
    return [];
  },
  report(ctx) {
    return indexReport(ctx.view);
  },
};
