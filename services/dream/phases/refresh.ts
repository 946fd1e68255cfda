import type { Phase, PhaseContext, ProposalDraft } from "../phase.js";
import { DAY_MS, activeMemories, byKey, contentOf, evidence, line, refOf, versionTime, type ActiveMemory } from "../proposals.js";
import { contradictionBetween, similarPairs } from "../similarity.js";

/**
 * refresh: memories that read differently as time passes, and memories that disagree.
 *
 * - Relative dates made absolute from the version's own time (when it was proposed): "yesterday" in a
 *   note proposed on 2026-03-14 becomes "on 2026-03-13", "3 days ago" "on 2026-03-11", "last week" "in
 *   the week of 2026-03-02". UTC, like the log's times. Code spans and blocks are left alone.
 * - Importance re-weighted from retrieval counts (exposure receipts): a memory among the most retrieved
 *   (at least HOT_MIN_RETRIEVALS and in the top decile of retrieved memories) goes one step up; an
 *   important one (4 or 5) never retrieved while in force for more than half of `neverRetrievedDays`
 *   goes one step down. Skipped when the view holds no receipts.
 * Both make one revision per memory (keyed by its id and version), so two changes never race each other.
 * - Contradictions: pairs of memories on the same subject (hybrid similarity at least
 *   CONTRADICTION_MIN_SIMILARITY) where a statement of one negates a statement of the other, or the same
 *   phrase carries different numbers. Flagged for a human; nothing is changed.
 */

export const HOT_MIN_RETRIEVALS = 5;
export const CONTRADICTION_MIN_SIMILARITY = 0.5;

const iso = (d: Date): string => d.toISOString().slice(0, 10);
const addDays = (d: Date, days: number): Date => new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + days));
const mondayOf = (d: Date): Date => addDays(d, -((d.getUTCDay() + 6) % 7));
const WEEKDAYS = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"];
const NUMBER_WORDS: Record<string, number> = { a: 1, an: 1, one: 1, two: 2, three: 3, four: 4, five: 5, six: 6, seven: 7, eight: 8, nine: 9, ten: 10 };

interface Replacement {
  from: string;
  to: string;
}

/** A preposition already before the phrase ("since yesterday"): the date alone follows it. */
const PREPOSITION = /\b(since|until|till|from|before|after|by|on|of|as of)\s+$/i;

/**
 * The text with relative dates made absolute against `anchor`, and what was replaced. Pure; exported for
 * the unit tests. Fenced code blocks and inline code are kept as they are.
 */
export function absoluteDates(text: string, anchor: Date): { text: string; replaced: Replacement[] } {
  const replaced: Replacement[] = [];
  const rules: [RegExp, (m: RegExpExecArray, bare: boolean) => string][] = [
    [/\bthe day before yesterday\b/gi, (_m, bare) => `${bare ? "" : "on "}${iso(addDays(anchor, -2))}`],
    [/\byesterday\b(?!')/gi, (_m, bare) => `${bare ? "" : "on "}${iso(addDays(anchor, -1))}`],
    [/\btoday\b(?!')/gi, (_m, bare) => `${bare ? "" : "on "}${iso(anchor)}`],
    [/\btomorrow\b(?!')/gi, (_m, bare) => `${bare ? "" : "on "}${iso(addDays(anchor, 1))}`],
    [/\b(this morning|this afternoon|this evening|tonight)\b/gi, (m, bare) => `${bare ? "" : "on "}${iso(anchor)} (${m[1]!.toLowerCase().replace(/^this /, "")})`],
    [/\b(\d{1,3}|a|an|one|two|three|four|five|six|seven|eight|nine|ten) (day|week)s? ago\b/gi, (m, bare) => {
      const n = NUMBER_WORDS[m[1]!.toLowerCase()] ?? Number(m[1]);
      return `${bare ? "" : "on "}${iso(addDays(anchor, -n * (m[2]!.toLowerCase() === "week" ? 7 : 1)))}`;
    }],
    [/\blast week\b/gi, (_m, bare) => `${bare ? "" : "in "}the week of ${iso(addDays(mondayOf(anchor), -7))}`],
    [/\bthis week\b/gi, (_m, bare) => `${bare ? "" : "in "}the week of ${iso(mondayOf(anchor))}`],
    [/\bnext week\b/gi, (_m, bare) => `${bare ? "" : "in "}the week of ${iso(addDays(mondayOf(anchor), 7))}`],
    [/\blast month\b/gi, (_m, bare) => `${bare ? "" : "in "}${iso(new Date(Date.UTC(anchor.getUTCFullYear(), anchor.getUTCMonth() - 1, 1))).slice(0, 7)}`],
    [/\bthis month\b/gi, (_m, bare) => `${bare ? "" : "in "}${iso(anchor).slice(0, 7)}`],
    [/\blast (monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b/gi, (m, bare) => {
      const target = WEEKDAYS.indexOf(m[1]!.toLowerCase());
      const back = ((anchor.getUTCDay() - target + 7) % 7) || 7;
      return `${bare ? "" : "on "}${iso(addDays(anchor, -back))}`;
    }],
  ];
  // Code is kept verbatim: split it out, rewrite the prose between.
  const parts = text.split(/(```[\s\S]*?```|`[^`\n]*`)/g);
  const out = parts.map((part, i) => {
    if (i % 2 === 1) return part;
    let prose = part;
    for (const [pattern, render] of rules) {
      prose = prose.replace(pattern, (...args) => {
        const match = args.slice(0, -2) as unknown as RegExpExecArray;
        const offset = args.at(-2) as number;
        const whole = args.at(-1) as string;
        const bare = PREPOSITION.test(whole.slice(0, offset));
        const to = render(match, bare);
        replaced.push({ from: match[0], to });
        return to;
      });
    }
    return prose;
  });
  return { text: out.join(""), replaced };
}

function hotThreshold(ctx: PhaseContext): number {
  const counts = [...ctx.view.retrievals.values()].map((r) => r.count).sort((a, b) => a - b);
  if (counts.length === 0) return Infinity;
  const p90 = counts[Math.min(counts.length - 1, Math.floor(counts.length * 0.9))]!;
  return Math.max(HOT_MIN_RETRIEVALS, p90);
}

export const refreshPhase: Phase = {
  name: "refresh",
  async propose(ctx: PhaseContext): Promise<ProposalDraft[]> {
    const drafts: ProposalDraft[] = [];
    const hot = hotThreshold(ctx);
    const haveReceipts = ctx.view.retrievals.size > 0;
    for (const memory of activeMemories(ctx.view)) {
      ctx.signal?.throwIfAborted();
      const draft = reviseDraft(ctx, memory, hot, haveReceipts);
      if (draft) drafts.push(draft);
    }

    const pairs = await similarPairs(ctx.view, { minSimilarity: CONTRADICTION_MIN_SIMILARITY, embedder: ctx.embedder, signal: ctx.signal });
    for (const pair of pairs) {
      const found = contradictionBetween(pair.a, pair.b);
      if (!found) continue;
      const refs = [refOf(pair.a), refOf(pair.b)];
      drafts.push({
        key: `refresh:flag:${pair.a.id}@v${pair.a.version.version}+${pair.b.id}@v${pair.b.version.version}`,
        change: { action: "flag", memories: refs },
        evidence: evidence({
          memories: refs,
          counts: {},
          scores: { similarity: pair.hybrid, lexical: pair.lexical, ...(pair.semantic !== null ? { semantic: pair.semantic } : {}) },
          summary: `${found.cue === "number" ? "Different numbers for the same thing" : "One negates the other"}: "${found.a}" (${pair.a.id}) vs "${found.b}" (${pair.b.id})`,
        }),
        reason: line(`Contradiction between "${pair.a.version.title}" and "${pair.b.version.title}"`),
      });
    }
    return byKey(drafts);
  },
};

function reviseDraft(ctx: PhaseContext, memory: ActiveMemory, hot: number, haveReceipts: boolean): ProposalDraft | null {
  const v = memory.version;
  const anchor = new Date(v.proposedAt);
  const title = absoluteDates(v.title, anchor);
  const body = absoluteDates(v.body, anchor);
  const replaced = [...title.replaced, ...body.replaced];
  const retrievals = ctx.view.retrievals.get(memory.id)?.count ?? 0;
  let importance = v.importance;
  let why: string | null = null;
  if (haveReceipts && retrievals >= hot && v.importance < 5) {
    importance = v.importance + 1;
    why = `retrieved ${retrievals} times (among the most retrieved: at least ${hot})`;
  } else if (haveReceipts && retrievals === 0 && v.importance >= 4) {
    const ageDays = Math.floor((ctx.now.getTime() - Date.parse(versionTime(v))) / DAY_MS);
    if (ageDays > ctx.settings.neverRetrievedDays / 2) {
      importance = v.importance - 1;
      why = `importance ${v.importance} but never retrieved in ${ageDays} days`;
    }
  }
  // A title cut to its limit would change meaning: dates in an over-long title are left alone.
  const newTitle = title.text.length <= 200 ? title.text : v.title;
  if (replaced.length === 0 && importance === v.importance) return null;
  const parts: string[] = [];
  if (replaced.length > 0) parts.push(`relative dates made absolute from ${iso(anchor)}: ${replaced.slice(0, 5).map((r) => `"${r.from}" → "${r.to}"`).join(", ")}${replaced.length > 5 ? ", …" : ""}`);
  if (importance !== v.importance) parts.push(`importance ${v.importance} → ${importance}: ${why}`);
  return {
    key: `refresh:${memory.id}@v${v.version}`,
    change: { action: "revise", memory: refOf(memory), content: contentOf(v, { title: newTitle, body: body.text, importance }) },
    evidence: evidence({
      memories: [refOf(memory)],
      counts: { relativeDates: replaced.length, retrievals, importanceBefore: v.importance, importanceAfter: importance },
      summary: parts.join("; "),
    }),
    reason: line(`Refresh "${v.title}": ${parts.join("; ")}`),
  };
}
