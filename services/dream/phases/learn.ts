import { LlmAnalyser } from "../analysers/llm.js";
import { signatureAnalyser } from "../analysers/signatures.js";
import type { Phase, PhaseContext, ProposalDraft, SessionTranscript, TranscriptAnalyser } from "../phase.js";
import { byKey } from "../proposals.js";

/**
 * learn: the transcripts of the sessions that ended since the last dream run (`sessionsSinceLastRun`, in
 * the order they ended; sessions without a transcript are skipped), read through the run's
 * `readTranscript`, handed to every analyser: the offline signature analyser always, the LLM analyser
 * when `settings.llm` names an endpoint. Their drafts are pooled (a key proposed twice counts once).
 */

/** Transcripts read at once from the object store. */
const READ_PARALLELISM = 4;

/** The analysers a run uses: the offline one, and the LLM one when configured. */
export function analysersFor(ctx: Pick<PhaseContext, "settings">): TranscriptAnalyser[] {
  return ctx.settings.llm ? [signatureAnalyser, LlmAnalyser.fromSettings(ctx.settings.llm)] : [signatureAnalyser];
}

/** The stored transcripts of the sessions since the last run, in the order they ended. */
export async function transcriptsSinceLastRun(ctx: PhaseContext): Promise<SessionTranscript[]> {
  const wanted = ctx.view.sessionsSinceLastRun.flatMap((sessionId) => {
    const state = ctx.view.sessions.get(sessionId)?.state;
    return state?.transcript ? [{ sessionId, agentId: state.agentId, ref: state.transcript }] : [];
  });
  const out: SessionTranscript[] = new Array(wanted.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < wanted.length; i = next++) {
      ctx.signal?.throwIfAborted();
      out[i] = { ...wanted[i]!, text: await ctx.readTranscript(wanted[i]!.ref) };
    }
  };
  await Promise.all(Array.from({ length: Math.min(READ_PARALLELISM, wanted.length) }, worker));
  return out;
}

export function learnPhaseWith(analysers: (ctx: PhaseContext) => readonly TranscriptAnalyser[]): Phase {
  return {
    name: "learn",
    async propose(ctx: PhaseContext): Promise<ProposalDraft[]> {
      const transcripts = await transcriptsSinceLastRun(ctx);
      if (transcripts.length === 0) return [];
      const drafts: ProposalDraft[] = [];
      for (const analyser of analysers(ctx)) drafts.push(...(await analyser.analyse(transcripts, ctx)));
      return byKey(drafts);
    },
  };
}

export const learnPhase: Phase = learnPhaseWith(analysersFor);
