import { z } from "zod";
import { tokenizeText } from "../../projections/search/tokenizer.js";
import type { MemoryContent, PromotionReason } from "../../schemas/events.js";
import { LIMITS, type Actor, type MemoryKind } from "../../schemas/primitives.js";
import type { SecretFinding } from "./secrets.js";

/**
 * The curator's policy and its one decision, pure: `decidePromotion(memory, orgIndexView, policy)`.
 * Everything it needs is passed in (the memory's state and content, the secret scan's findings, the org
 * memories the index found similar), so the same inputs always give the same decision, and the specs
 * state it as Given/When/Then without NATS.
 */

export const CuratorPolicy = z.strictObject({
  /** Approve the org version at once (as service:curator) when nothing was flagged; else it waits for a reviewer. */
  autoApprove: z.boolean().default(false),
  /**
   * Dice similarity (shared distinct tokens, 0..1) from which a promotion is a near-duplicate of an
   * existing org memory and becomes a revision of it instead of a new one.
   */
  duplicateThreshold: z.number().gt(0).max(1).default(0.6),
  /** How many org memories the index proposes as near-duplicate candidates. */
  candidates: z.number().int().min(1).max(50).default(5),
  /**
   * Share of a memory's words that are this app's own paths and identifiers: from `rejectAbove` on it is
   * refused as app-specific, from `flagAbove` it is promoted but flagged (never auto-approved).
   */
  appSpecific: z
    .strictObject({ rejectAbove: z.number().gt(0).max(1).default(0.5), flagAbove: z.number().gt(0).max(1).default(0.3) })
    .default({ rejectAbove: 0.5, flagAbove: 0.3 }),
  /**
   * A version approved only by the policy itself (service:policy, an agent's scratchpad) was never seen by
   * a reviewer: "flag" promotes it flagged (not auto-approved), "reject" refuses it as unvalidated.
   */
  policyApproved: z.enum(["flag", "reject"]).default("flag"),
});
export type CuratorPolicy = z.output<typeof CuratorPolicy>;
export type CuratorPolicyInput = z.input<typeof CuratorPolicy>;

export const DEFAULT_CURATOR_POLICY: CuratorPolicy = CuratorPolicy.parse({});

export type PromotedContent = MemoryContent;

/** The promoted memory as the curator found it when it decided. */
export interface PromotionCandidate {
  app: string;
  memoryId: string;
  /** The source memory's scope; a scratchpad (`agent:<id>`) is never promoted, whoever asks. */
  scope?: string;
  /** The version the request names. */
  version: number;
  content: PromotedContent;
  /** Is that version still the memory's active, approved version (not rolled back, not superseded)? */
  active: boolean;
  /** Who approved that version (null when it never was). */
  approvedBy: Actor | null;
  /** What the secret scan found in its text (secrets.ts); empty when clean. */
  secrets: readonly SecretFinding[];
}

/** An active org memory as the index returns it. */
export interface OrgMemoryView {
  memoryId: string;
  version: number;
  title: string;
  body: string;
  kind: MemoryKind;
  tags: string[];
  importance: number;
}

/** What the decision may ask of the org index: no I/O, answers from memory. */
export interface OrgIndexView {
  /** Active org memories most similar to the text, best first (search projection's retrieval). */
  similar(text: string, k: number): OrgMemoryView[];
  /** The active org memory an earlier version of the same app memory was promoted into, if any. */
  promotedFrom(app: string, memoryId: string): OrgMemoryView | undefined;
}

export type PromotionDecision =
  | { type: "reject"; reasons: PromotionReason[] }
  | { type: "accept"; content: PromotedContent; flags: PromotionReason[]; approve: boolean }
  | { type: "merge"; into: string; intoVersion: number; similarity: number; content: PromotedContent; flags: PromotionReason[]; approve: boolean };

const POLICY_ACTOR_ID = "policy";

// ---- app-specificity -------------------------------------------------------------------------

const CODE_EXTENSIONS = new Set(
  `ts tsx js jsx mjs cjs py go rs java kt rb php cs cpp cc c h hpp swift json yaml yml toml md sql sh css scss html vue svelte
  proto graphql lock env cfg ini xml gradle tf`.split(/\s+/),
);
/** Path segments every project has: naming them says nothing about this app. */
const GENERIC_SEGMENTS = new Set("src lib libs test tests spec docs doc index main app apps pkg cmd internal utils util bin build dist scripts config".split(" "));
const STOP = new Set(
  `a an and are as at be but by for from has have how i if in into is it its of on or so such that the their then there these they this
  to was we were what when where which while who why will with you your do does did can could should would not no our us my me he she
  him her them than too very just also about over after before all any each every use used using always never must`.split(/\s+/),
);

const EDGE = /^[("'`[{<]+|[)"'`\]}>,;:.!?]+$/g;

function isPathLike(chunk: string): boolean {
  if (chunk.includes("://")) return false; // a URL is a reference, not a file of this app
  if (/[\\/]/.test(chunk) && /[A-Za-z0-9]/.test(chunk)) return true;
  const dot = chunk.lastIndexOf(".");
  return dot > 0 && CODE_EXTENSIONS.has(chunk.slice(dot + 1).toLowerCase());
}

function isIdentifierLike(chunk: string): boolean {
  return (
    /[a-z][A-Z]/.test(chunk) || // camelCase, PascalCase with an inner capital
    /[A-Za-z0-9]_[A-Za-z0-9]/.test(chunk) || // snake_case, SCREAMING_SNAKE
    chunk.includes("::") ||
    /\w\(\)$/.test(chunk)
  );
}

/** The words of this app's own file paths (and its name): what only this app has. */
function ownVocabulary(app: string, paths: readonly string[]): Set<string> {
  const vocabulary = new Set<string>([app.toLowerCase()]);
  for (const path of paths) {
    for (const segment of path.split(/[\\/]/)) {
      const stem = segment.replace(/\.[A-Za-z0-9]+$/, "").toLowerCase();
      if (stem.length >= 4 && !GENERIC_SEGMENTS.has(stem)) vocabulary.add(stem);
      if (segment.length > 0) vocabulary.add(segment.toLowerCase());
    }
  }
  return vocabulary;
}

/**
 * Share (0..1) of the memory's words that belong to this app only: file paths, code identifiers, and the
 * words of the app's own paths and name. Org knowledge is what holds in other apps too; a memory that is
 * mostly `src/payments/webhook.ts` and `handleStripeEvent` does not.
 */
export function appSpecificity(app: string, content: Pick<PromotedContent, "title" | "body" | "paths">): number {
  const vocabulary = ownVocabulary(app, content.paths);
  let words = 0;
  let specific = 0;
  for (const raw of `${content.title}\n${content.body}`.split(/\s+/)) {
    const chunk = raw.replace(EDGE, "");
    if (!/[\p{L}\p{N}]/u.test(chunk)) continue;
    const lower = chunk.toLowerCase();
    if (STOP.has(lower)) continue;
    words++;
    if (isPathLike(chunk) || isIdentifierLike(chunk) || vocabulary.has(lower)) specific++;
  }
  return words === 0 ? 0 : specific / words;
}

// ---- similarity -------------------------------------------------------------------------------

const tokenSet = (title: string, body: string): Set<string> => new Set(tokenizeText(`${title}\n${body}`));

/** Dice coefficient of the two texts' distinct search tokens (the search projection's tokenizer): 0..1. */
export function similarity(a: { title: string; body: string }, b: { title: string; body: string }): number {
  const left = tokenSet(a.title, a.body);
  const right = tokenSet(b.title, b.body);
  if (left.size === 0 || right.size === 0) return 0;
  let shared = 0;
  for (const token of left) if (right.has(token)) shared++;
  return (2 * shared) / (left.size + right.size);
}

// ---- the decision -----------------------------------------------------------------------------

const FIELD_NAMES = { title: "title", body: "body", tags: "tags", paths: "paths" } as const;

/** One reason per finding, naming the rule, the kind, the field and the line: never the matched text. */
export function secretReasons(findings: readonly SecretFinding[]): PromotionReason[] {
  return findings.map((f) => ({
    code: `secret:${f.rule}`,
    message: `contains a secret (${f.kind}, rule ${f.rule}) in the ${FIELD_NAMES[f.field]}, line ${f.line}; remove it, revise and promote the new version`,
  }));
}

const percent = (share: number) => `${Math.round(share * 100)}%`;

/**
 * Refusals and flags that depend only on the promoted version itself (immutable once written), so the
 * curator can compute them again after a crash and reach the same answer.
 */
export function assessCandidate(candidate: PromotionCandidate, policy: CuratorPolicy): { refusals: PromotionReason[]; flags: PromotionReason[] } {
  const refusals: PromotionReason[] = [...secretReasons(candidate.secrets)];
  const flags: PromotionReason[] = [];
  if (candidate.scope?.startsWith("agent:")) {
    refusals.push({
      code: "scratchpad",
      message: `the memory is in ${candidate.scope}, an agent's scratchpad, which is never promoted; propose it to the app or a team, have it reviewed there, and promote that memory`,
    });
  }
  if (!candidate.active || candidate.approvedBy === null) {
    refusals.push({
      code: "unvalidated",
      message: `version ${candidate.version} is not the memory's active, approved version any more; only validated app knowledge is promoted`,
    });
  } else if (candidate.approvedBy.kind === "service" && candidate.approvedBy.id === POLICY_ACTOR_ID) {
    const reason = {
      code: "unvalidated:policy_approved",
      message: `version ${candidate.version} was approved by the policy alone (service:policy), never by a reviewer`,
    };
    (policy.policyApproved === "reject" ? refusals : flags).push(reason);
  }
  const share = appSpecificity(candidate.app, candidate.content);
  if (share >= policy.appSpecific.rejectAbove) {
    refusals.push({
      code: "app_specific",
      message: `${percent(share)} of its words are ${candidate.app}'s own paths and identifiers (limit ${percent(policy.appSpecific.rejectAbove)}); org knowledge must hold beyond one app`,
    });
  } else if (share >= policy.appSpecific.flagAbove) {
    flags.push({ code: "app_specific", message: `${percent(share)} of its words are ${candidate.app}'s own paths and identifiers; check it holds beyond ${candidate.app}` });
  }
  return { refusals, flags };
}

/** What an org memory made from the candidate holds: the content without the app's file paths (provenance keeps the link). */
export const orgContentOf = (content: PromotedContent): PromotedContent => ({ ...content, paths: [] });

/**
 * The revision a merge proposes: the org memory's title and kind, its body followed by what the promoted
 * memory adds (nothing when its text is already contained), the union of tags, the higher importance.
 */
export function mergedContent(org: OrgMemoryView, promoted: PromotedContent): PromotedContent | null {
  const orgTokens = tokenSet(org.title, org.body);
  const promotedTokens = [...tokenSet(promoted.title, promoted.body)];
  const covered = promotedTokens.filter((t) => orgTokens.has(t)).length / Math.max(1, promotedTokens.length);
  const body = covered >= 0.95 ? org.body : `${org.body.trimEnd()}\n\n---\n\n${promoted.body.trim()}`;
  if (Buffer.byteLength(body, "utf8") > LIMITS.bodyBytes) return null;
  const tags = [...new Set([...org.tags, ...promoted.tags])].slice(0, LIMITS.tags);
  return { title: org.title, body, kind: org.kind, tags, paths: [], importance: Math.max(org.importance, promoted.importance) };
}

/**
 * accept | reject(reasons) | merge(into an existing org memory).
 *
 * 1. Refuse (all reasons at once, so one revision can fix them all): secrets, a scratchpad (`agent:*`)
 *    source, a version that is not the active approved one, app-specific content.
 * 2. Merge when an earlier version of the same app memory is already org knowledge, or when an org memory
 *    is at least `duplicateThreshold` similar: the promotion becomes that memory's next version.
 * 3. Otherwise accept as a new org memory.
 * Auto-approval (policy.autoApprove) only when nothing was flagged.
 */
export function decidePromotion(candidate: PromotionCandidate, org: OrgIndexView, policy: CuratorPolicy): PromotionDecision {
  const { refusals, flags } = assessCandidate(candidate, policy);
  if (refusals.length > 0) return { type: "reject", reasons: refusals };
  const approve = policy.autoApprove && flags.length === 0;
  const promoted = candidate.content;

  const earlier = org.promotedFrom(candidate.app, candidate.memoryId);
  let target: { memory: OrgMemoryView; score: number; why: string } | undefined;
  if (earlier) target = { memory: earlier, score: similarity(promoted, earlier), why: `an earlier version of ${candidate.app}/${candidate.memoryId} is org memory ${earlier.memoryId}` };
  else {
    for (const memory of org.similar(`${promoted.title}\n${promoted.body}`, policy.candidates)) {
      const score = similarity(promoted, memory);
      if (score >= policy.duplicateThreshold && (!target || score > target.score)) {
        target = { memory, score, why: `near-duplicate of org memory ${memory.memoryId} (similarity ${score.toFixed(2)}, threshold ${policy.duplicateThreshold})` };
      }
    }
  }
  if (target) {
    const content = mergedContent(target.memory, promoted);
    if (!content) {
      return { type: "reject", reasons: [{ code: "merge_too_large", message: `merging into org memory ${target.memory.memoryId} would exceed the body limit of ${LIMITS.bodyBytes} bytes` }] };
    }
    return {
      type: "merge",
      into: target.memory.memoryId,
      intoVersion: target.memory.version,
      similarity: target.score,
      content,
      flags: [{ code: "merged", message: `proposed as the next version of org memory ${target.memory.memoryId}: ${target.why}` }, ...flags],
      approve,
    };
  }
  return { type: "accept", content: orgContentOf(promoted), flags, approve };
}
