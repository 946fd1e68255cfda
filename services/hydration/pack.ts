import { overlappingPaths } from "./paths.js";
import type { TokenCounter } from "./tokens.js";

/**
 * The context pack an agent reads when it starts a session: one markdown document under a token
 * budget. This module is pure: it gets everything already fetched (services/hydration/service.ts does
 * the I/O) and decides what goes in, in which order, and what is dropped for lack of budget.
 *
 * Sections, in priority order (which is also the order they appear in):
 *   1. fragile  memories of kind `fragile` on the agent's paths: breaking code that works is the worst
 *               outcome of a session, and these are the warnings against it;
 *   2. claims   live claims and locks held by other agents: stepping on someone else's work is next;
 *   3. relevant the memories retrieval ranks best for the task, with their bodies;
 *   4. index    the app's MEMORY.md, the map of everything else;
 *   5. changes  what changed since the agent's previous session.
 *
 * Budget rules (see `allocate`): the header comes first; every section is then offered its share of
 * what is left plus whatever the sections before it did not use; budget still unused at the end goes
 * back, in priority order, to the sections that had to drop or trim something. The whole document is
 * counted again at the end and never exceeds the budget. Same inputs, same output, byte for byte.
 *
 * Embedding (what other agents wrote cannot change the pack's structure; see `fenced` and `inline`):
 * a memory body goes inside a fenced code block whose fence is longer than any backtick run in it, so no
 * heading (indented, setext), fence, HTML block or thematic break inside it is markdown any more, and it
 * cannot end its block early; titles, tags, reasons and every other one-line text are one line with
 * invisible and direction-changing characters removed and the characters that open inline markup
 * (HTML, code spans, links) escaped; each MEMORY.md line is made inert the same way, its headings pushed
 * below the pack's levels. So the pack's headings are exactly its own: `#` once, then its `##` sections.
 */

export const SECTION_NAMES = ["fragile", "claims", "relevant", "index", "changes"] as const;
export type SectionName = (typeof SECTION_NAMES)[number];

/** Each section's share of the budget left after the header (the shares sum to 1). */
export const DEFAULT_SHARES: Readonly<Record<SectionName, number>> = {
  fragile: 0.25,
  claims: 0.15,
  relevant: 0.4,
  index: 0.12,
  changes: 0.08,
};

/** A body longer than this is trimmed on first pass so one long memory cannot starve the rest. */
export const DEFAULT_MAX_BODY_TOKENS = 350;

const TITLES: Readonly<Record<SectionName, string>> = {
  fragile: "Fragile code on your paths",
  claims: "Claimed by others",
  relevant: "Relevant memories",
  index: "Memory index (MEMORY.md)",
  changes: "Changes since your last session",
};

// ---- inputs ------------------------------------------------------------------------------------

/** The active version of a memory, as the pack shows it. */
export interface PackMemory {
  memoryId: string;
  version: number;
  title: string;
  kind: string;
  scope: string;
  paths: readonly string[];
  tags: readonly string[];
  body: string;
  importance: number;
}

export interface RankedMemory {
  memory: PackMemory;
  score: number;
  /** Which retrieval channels found it (bm25, vector, path, branch …), for the reader's benefit. */
  channels?: readonly string[];
}

export interface PackClaim {
  kind: "task" | "lock";
  name: string;
  holder: string;
  expiresAt: string;
}

/** One memory event after the agent's previous session. */
export interface PackChange {
  seq: number;
  time: string;
  type: string;
  memoryId: string;
  /** The memory's title as that event left it (null when the memory is unknown). */
  title: string | null;
  version: number | null;
  /** `kind:id` of whoever did it. */
  actor: string;
  /** Reason, replacement or target version, when the event has one. */
  detail: string | null;
}

export interface PreviousSession {
  sessionId: string;
  /** Stream sequence of its last event (ended, or started when it never ended): changes are after it. */
  seq: number;
  time: string;
  ended: boolean;
  task: string | null;
}

/** A source the service could not ask (no files root, no Redis): the section says so instead. */
export type Availability<T> = { available: true; value: T } | { available: false; reason: string };

export interface PackInputs {
  app: string;
  agent: string;
  task: string;
  branch: string | null;
  paths: readonly string[];
  /** MEMORY.md text; null when the app has none yet. */
  memoryIndex: Availability<string | null>;
  /** Best first, as retrieval ranked them for the task. */
  relevant: readonly RankedMemory[];
  /** Active memories of kind fragile; the pack keeps those on the agent's paths. */
  fragileCandidates: readonly PackMemory[];
  /** Every live claim of the app; the pack leaves out the agent's own. */
  claims: Availability<readonly PackClaim[]>;
  changes: {
    since: PreviousSession | null;
    /** Oldest first. */
    events: readonly PackChange[];
    /** Changes older than those in `events` that the source did not keep. */
    omittedOlder: number;
  };
}

export interface PackOptions {
  /** Token ceiling for the whole markdown document. */
  budget: number;
  shares?: Partial<Record<SectionName, number>>;
  maxBodyTokens?: number;
}

// ---- output ------------------------------------------------------------------------------------

export interface PackSection {
  name: SectionName;
  title: string;
  /** Tokens this section takes in the markdown (0 when it did not fit at all). */
  tokens: number;
  /** Keys of what is shown: memory ids, `lock:<name>` / `task:<name>`, `seq:<n>`, `L<line>` of MEMORY.md. */
  included: string[];
  /** Keys of what was left out for lack of budget. */
  dropped: string[];
  /** Keys of memories shown with a shortened body. */
  trimmed: string[];
}

export interface ContextPack {
  markdown: string;
  /** Tokens of `markdown`, counted as a whole. */
  tokens: number;
  budget: number;
  encoding: string;
  sections: PackSection[];
}

// ---- sections as lists of blocks ---------------------------------------------------------------

interface Item {
  key: string;
  /** Always shown when the item is shown. */
  head: string;
  /** Shown as far as the budget allows, after the head. */
  body?: string;
  /** How to tell the reader where the whole body is. */
  bodyRef?: string;
}

interface SectionSpec {
  name: SectionName;
  /** A line under the heading (what the section is relative to), or null. */
  intro: string | null;
  /** Shown instead of items when there are none. */
  empty: string;
  items: Item[];
  /** The line telling what was dropped. */
  droppedNote: (dropped: Item[]) => string;
  /** After the items: a blank line that ends a list ("" for memory sections, whose items end in one). */
  closing: string;
}

interface Rendered {
  text: string;
  tokens: number;
  included: string[];
  dropped: string[];
  trimmed: string[];
}

const MAX_LISTED_IDS = 8;

const listKeys = (items: readonly Item[]): string => {
  const shown = items.slice(0, MAX_LISTED_IDS).map((i) => i.key);
  const more = items.length - shown.length;
  return `${shown.join(", ")}${more > 0 ? `, and ${more} more` : ""}`;
};

const omittedNote = (noun: string, plural: string) => (dropped: Item[]) =>
  `_${dropped.length} more ${dropped.length === 1 ? noun : plural} omitted for lack of budget: ${listKeys(dropped)}._\n\n`;

// ---- embedding text written by others --------------------------------------------------------

/**
 * Characters that make text read as something other than its bytes: zero-width and joiner characters,
 * bidirectional marks, embeddings, overrides and isolates (U+200B–U+200F, U+202A–U+202E, U+2066–U+2069),
 * word joiners and invisible operators (U+2060–U+2064), the byte-order mark and the soft hyphen.
 */
const INVISIBLE = /[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g;
/** C0 and C1 controls and the Unicode line and paragraph separators: in one line of text, each is a space. */
const LINE_BREAKING = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

/** One line of plain text: invisible characters gone, controls and line breaks made spaces, spaces collapsed. */
export const inlineText = (text: string): string => text.replace(INVISIBLE, "").replace(LINE_BREAKING, " ").replace(/\s+/g, " ").trim();

/** One line that opens no inline markup: raw HTML, code spans and links are escaped (as MEMORY.md does). */
export const inline = (text: string): string => inlineText(text).replace(/[\\`<>[\]]/g, (c) => `\\${c}`);

/** A heading's text: `inline`, and a trailing run of `#` escaped, which would otherwise close the heading and vanish. */
const headingText = (text: string): string => inline(text).replace(/(^|\s)(#+)$/, "$1\\$2");

/**
 * A body's text as it can be embedded: line endings are `\n` (a lone CR ends a line in markdown too), and
 * controls other than tab and newline are gone. Direction marks stay: right-to-left prose needs them, and
 * inside a code block they cannot change the pack's structure.
 */
const bodyText = (text: string): string => text.replace(/\r\n?/g, "\n").replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, "").trim();

/** The longest run of `c` in `text`. */
function longestRun(text: string, c: string): number {
  let longest = 0;
  let run = 0;
  for (const ch of text) {
    run = ch === c ? run + 1 : 0;
    if (run > longest) longest = run;
  }
  return longest;
}

/**
 * `text` as a fenced code block: the fence is backticks, one more than the longest backtick run anywhere
 * in the text (at least three). A code block ends only at a backtick fence at least as long as the one
 * that opened it, so nothing inside ends it, and nothing inside (headings, setext underlines, fences,
 * HTML, lists) is parsed as markdown. Returns the opening and closing lines around the text.
 */
function fenced(text: string): { open: string; close: string } {
  const fence = "`".repeat(Math.max(3, longestRun(text, "`") + 1));
  return { open: `${fence}markdown\n`, close: `\n${fence}\n` };
}

/** Markdown headings inside embedded text are pushed below the pack's own levels (## and ###). */
const demoteHeadings = (text: string): string =>
  text.replace(/^ {0,3}(#{1,6})(?=\s|$)/gm, (_line, hashes: string) => "#".repeat(Math.min(6, hashes.length + 3)));

/**
 * A MEMORY.md line as one inert line of the pack: headings pushed below the pack's levels, and a line that
 * would start a block that can reach past it (a fence, an HTML block, a setext underline turning the line
 * above into a heading, an indented code block) escaped or unindented so it is plain text.
 */
export function inertLine(line: string): string {
  const text = line.replace(INVISIBLE, "").replace(LINE_BREAKING, " ").trimEnd();
  if (/^ {0,3}#{1,6}(?:\s|$)/.test(text)) return demoteHeadings(text.trimStart());
  const body = text.trimStart();
  if (/^(?:`{3,}|~{3,}|<|=+\s*$|-+\s*$)/.test(body)) return `\\${body}`;
  return body;
}

/**
 * A trimmed body that cut a fenced block open gets its closing fence (same character, same length), so
 * what it shows reads as the author wrote it. Inside the pack's own fence this is cosmetic: `fenced` is
 * computed on the result, so this closing line can never end the embedding.
 */
function closeOpenFence(text: string): string {
  let open: { char: string; length: number } | null = null;
  for (const line of text.split("\n")) {
    const fence = /^ {0,3}(`{3,}|~{3,})/.exec(line);
    if (!fence) continue;
    const run = fence[1]!;
    if (open === null) open = { char: run[0]!, length: run.length };
    else if (run[0] === open.char && run.length >= open.length && line.trim() === run) open = null;
  }
  return open === null ? text : `${text}\n${open.char.repeat(open.length)}`;
}

/** Cuts back to the last line or word break when that keeps most of the text: easier to read. */
function atNaturalBreak(text: string): string {
  const line = text.lastIndexOf("\n");
  if (line >= text.length * 0.6) return text.slice(0, line);
  const space = text.search(/\s\S*$/);
  if (space >= text.length * 0.8) return text.slice(0, space);
  return text;
}

class SectionRenderer {
  private readonly fixedCost: number;
  private readonly headCosts: number[];
  /** headPrefix[i]: the heads of the first i items together. */
  private readonly headPrefix: number[];
  private readonly bodyCosts: number[];

  constructor(
    private readonly spec: SectionSpec,
    private readonly tokens: TokenCounter,
    private readonly maxBodyTokens: number,
  ) {
    this.fixedCost = tokens.count(this.opening()) + tokens.count(spec.closing);
    this.headCosts = spec.items.map((item) => tokens.count(item.head));
    this.headPrefix = [0];
    for (const cost of this.headCosts) this.headPrefix.push(this.headPrefix.at(-1)! + cost);
    this.bodyCosts = spec.items.map((item) => (item.body ? tokens.count(item.body) : 0));
  }

  private opening(): string {
    const heading = `## ${TITLES[this.spec.name]}\n\n`;
    return this.spec.intro ? `${heading}${this.spec.intro}\n\n` : heading;
  }

  /** The most of this section that fits `allowance` tokens; bodies beyond `bodyCap` are trimmed. */
  render(allowance: number, bodyCap: number = this.maxBodyTokens): Rendered {
    const { items } = this.spec;
    const none: Rendered = { text: "", tokens: 0, included: [], dropped: items.map((i) => i.key), trimmed: [] };
    if (items.length === 0) {
      const text = `${this.opening()}${this.spec.empty}\n\n`;
      const cost = this.tokens.count(text);
      return cost <= allowance ? { text, tokens: cost, included: [], dropped: [], trimmed: [] } : none;
    }
    // The longest prefix of heads that fits together with the note naming the rest. Items are in
    // rank order, so a prefix keeps the best ones; skipping ahead to smaller items would show #5
    // while hiding #3.
    // A prefix whose heads alone exceed the allowance cannot fit with any note: start below those
    // (the same answer as trying every prefix from the longest, without counting their notes).
    let shown = items.length;
    while (shown >= 0 && this.fixedCost + this.headPrefix[shown]! > allowance) shown--;
    let note = "";
    let cost = 0;
    for (; shown >= 0; shown--) {
      note = shown < items.length ? this.spec.droppedNote(items.slice(shown)) : "";
      cost = this.fixedCost + this.headPrefix[shown]! + this.tokens.count(note);
      if (cost <= allowance) break;
    }
    if (shown < 0) return none;

    let remaining = allowance - cost;
    const parts = [this.opening()];
    const trimmed: string[] = [];
    for (const [i, item] of items.slice(0, shown).entries()) {
      parts.push(item.head);
      if (!item.body) continue;
      const body = this.fitBody(item, this.bodyCosts[i]!, Math.min(remaining, bodyCap));
      if (body.trimmed) trimmed.push(item.key);
      parts.push(body.text);
      remaining -= body.tokens;
    }
    parts.push(note, this.spec.closing);
    return {
      text: parts.join(""),
      tokens: allowance - remaining,
      included: items.slice(0, shown).map((i) => i.key),
      dropped: items.slice(shown).map((i) => i.key),
      trimmed,
    };
  }

  private fitBody(item: Item, fullCost: number, cap: number): { text: string; tokens: number; trimmed: boolean } {
    const whole = fenced(item.body!);
    const fenceCost = this.tokens.count(whole.open) + this.tokens.count(whole.close);
    if (fullCost + fenceCost <= cap) {
      const full = `${whole.open}${item.body}${whole.close}\n`;
      const tokens = this.tokens.count(full);
      if (tokens <= cap) return { text: full, tokens, trimmed: false };
    }
    // The marker's numbers are not known before trimming; reserve for the widest they can be.
    const marker = (shown: number) => `_[body trimmed to ${shown} of ${fullCost} tokens; ${item.bodyRef ?? "see the memory"}]_\n\n`;
    const markerCost = this.tokens.count(marker(fullCost)) + fenceCost + 3; // +3: a closing fence line, a longer fence
    const textBudget = cap - markerCost;
    if (textBudget <= 0) {
      const omitted = `_[body omitted: ${fullCost} tokens; ${item.bodyRef ?? "see the memory"}]_\n\n`;
      const tokens = this.tokens.count(omitted);
      return tokens <= cap ? { text: omitted, tokens, trimmed: true } : { text: "", tokens: 0, trimmed: true };
    }
    const cut = closeOpenFence(atNaturalBreak(this.tokens.truncate(item.body!, textBudget)).trimEnd());
    const shownTokens = this.tokens.count(cut);
    const shown = fenced(cut);
    const text = `${shown.open}${cut}${shown.close}${marker(shownTokens)}`;
    return { text, tokens: this.tokens.count(text), trimmed: true };
  }
}

const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);

// ---- what each section holds -------------------------------------------------------------------

/** A code span of one line (backticks inside become quotes, so it cannot end early). */
const code = (s: string): string => `\`${inlineText(s).replace(/`/g, "'")}\``;

/** Another agent's scratchpad is theirs: it never goes into someone else's pack. */
const visibleTo = (agent: string) => (memory: PackMemory) => !memory.scope.startsWith("agent:") || memory.scope === `agent:${agent}`;

function memoryItem(memory: PackMemory, rank: number, why: string[]): Item {
  const meta = [
    `${code(memory.memoryId)} v${memory.version}`,
    memory.kind,
    memory.scope,
    `importance ${memory.importance}`,
    ...(memory.paths.length ? [`paths: ${memory.paths.map(code).join(", ")}`] : []),
    ...(memory.tags.length ? [`tags: ${memory.tags.map(inline).join(", ")}`] : []),
    ...why,
  ].join(" · ");
  // Fenced when rendered (SectionRenderer.fitBody): nothing in it is markdown to the pack.
  const body = bodyText(memory.body);
  return {
    key: memory.memoryId,
    head: `### ${rank}. ${headingText(memory.title) || code(memory.memoryId)}\n${meta}\n\n`,
    ...(body ? { body, bodyRef: `memledger show ${memory.memoryId}` } : {}),
  };
}

function fragileSpec(inputs: PackInputs): { spec: SectionSpec; keys: Set<string> } {
  const onPaths = inputs.fragileCandidates
    .filter((m) => m.kind === "fragile")
    .filter(visibleTo(inputs.agent))
    .map((memory) => ({ memory, overlap: overlappingPaths(inputs.paths, memory.paths) }))
    .filter((m) => m.overlap.length > 0)
    .sort((a, b) => b.memory.importance - a.memory.importance || byCodePoint(a.memory.memoryId, b.memory.memoryId));
  const items = onPaths.map(({ memory, overlap }, i) => memoryItem(memory, i + 1, [`on your paths: ${overlap.map(code).join(", ")}`]));
  return {
    keys: new Set(onPaths.map((m) => m.memory.memoryId)),
    spec: {
      name: "fragile",
      intro: items.length ? "Read before you edit: these say what breaks and why." : null,
      empty: inputs.paths.length === 0 ? "No paths given (`--paths`), so none are matched." : "No fragile memory on your paths.",
      items,
      droppedNote: omittedNote("fragile memory", "fragile memories"),
      closing: "",
    },
  };
}

function claimsSpec(inputs: PackInputs): SectionSpec {
  const base = { name: "claims" as const, droppedNote: omittedNote("claim", "claims"), closing: "\n" };
  if (!inputs.claims.available) return { ...base, intro: null, empty: `Live claims unavailable: ${inputs.claims.reason}.`, items: [] };
  const others = inputs.claims.value
    .filter((c) => c.holder !== inputs.agent)
    .map((claim) => ({ claim, overlap: claim.kind === "lock" ? overlappingPaths(inputs.paths, [claim.name]) : [] }))
    .sort(
      (a, b) =>
        Number(b.overlap.length > 0) - Number(a.overlap.length > 0) ||
        byCodePoint(a.claim.kind, b.claim.kind) || // "lock" < "task": locks first
        byCodePoint(a.claim.name, b.claim.name) ||
        byCodePoint(a.claim.holder, b.claim.holder),
    );
  const items = others.map(({ claim, overlap }) => ({
    key: `${claim.kind}:${claim.name}`,
    head: `- ${claim.kind} ${code(claim.name)} held by ${claim.holder} until ${claim.expiresAt}${
      overlap.length ? ` · **overlaps your paths: ${overlap.map(code).join(", ")}**` : ""
    }\n`,
  }));
  return {
    ...base,
    intro: items.length ? "Do not take these over or edit locked paths without talking to the holder." : null,
    empty: "Nobody else holds a claim or lock.",
    items,
    droppedNote: (dropped) => `\n${omittedNote("claim", "claims")(dropped).trimEnd()}\n`,
  };
}

function relevantSpec(inputs: PackInputs, shownAsFragile: ReadonlySet<string>): SectionSpec {
  const ranked = inputs.relevant.filter((r) => visibleTo(inputs.agent)(r.memory) && !shownAsFragile.has(r.memory.memoryId));
  const items = ranked.map(({ memory, score, channels }, i) => {
    const overlap = overlappingPaths(inputs.paths, memory.paths);
    const why = [
      `score ${score.toFixed(3)}${channels?.length ? ` (${channels.join("+")})` : ""}`,
      ...(overlap.length ? [`touches your paths: ${overlap.map(code).join(", ")}`] : []),
    ];
    return memoryItem(memory, i + 1, why);
  });
  return {
    name: "relevant",
    intro: inputs.task ? `For the task: ${inline(inputs.task)}` : null,
    empty: inputs.task || inputs.paths.length ? "No active memory matches the task." : "No task given, so nothing was retrieved.",
    items,
    droppedNote: omittedNote("memory", "memories"),
    closing: "",
  };
}

function indexSpec(inputs: PackInputs): SectionSpec {
  const base = { name: "index" as const, intro: null, closing: "\n" };
  const note = (dropped: Item[]) =>
    `\n_${dropped.length} more MEMORY.md ${dropped.length === 1 ? "line" : "lines"} omitted for lack of budget (${dropped[0]!.key}–${dropped.at(-1)!.key}); read MEMORY.md for the rest._\n`;
  if (!inputs.memoryIndex.available) return { ...base, empty: `MEMORY.md unavailable: ${inputs.memoryIndex.reason}.`, items: [], droppedNote: note };
  if (inputs.memoryIndex.value === null) return { ...base, empty: "No MEMORY.md yet: the app has no memories projected.", items: [], droppedNote: note };
  const lines = inputs.memoryIndex.value.replace(/\r\n?/g, "\n").trimEnd().split("\n").map(inertLine);
  return {
    ...base,
    empty: "MEMORY.md is empty.",
    items: lines.map((line, i) => ({ key: `L${i + 1}`, head: `${line}\n` })),
    droppedNote: note,
  };
}

function describeChange(change: PackChange): string {
  const v = change.version === null ? "" : ` v${change.version}`;
  switch (change.type) {
    case "memory.proposed":
      return change.version === 1 ? "proposed new memory" : `proposed${v} of`;
    case "memory.approved":
      return `approved${v} of`;
    case "memory.rejected":
      return `rejected${v} of`;
    case "memory.superseded":
      return "superseded";
    case "memory.rolled_back":
      return `rolled back to${v}`;
    case "memory.reinstated":
      return "reinstated";
    default:
      return change.type;
  }
}

function changesSpec(inputs: PackInputs): SectionSpec {
  const { since, events, omittedOlder } = inputs.changes;
  const me = `agent:${inputs.agent}`;
  // Newest first: when the budget runs out, the oldest changes are the ones to lose.
  const items = [...events]
    .sort((a, b) => b.seq - a.seq)
    .map((change) => ({
      key: `seq:${change.seq}`,
      head: `- ${change.time} ${describeChange(change)} ${change.title === null ? "" : `"${inline(change.title)}" `}(${code(change.memoryId)}) by ${
        change.actor === me ? "you" : change.actor
      }${change.detail ? `: ${inline(change.detail)}` : ""} · seq ${change.seq}\n`,
    }));
  const older = omittedOlder > 0 ? ` (${omittedOlder} older changes not kept by the service are not listed)` : "";
  const intro =
    since === null
      ? null
      : `Since your session ${code(since.sessionId)} ${since.ended ? "ended" : "started (never ended)"} at ${since.time} (seq ${since.seq})${
          since.task ? `, task: ${inline(since.task)}` : ""
        }${older}:`;
  return {
    name: "changes",
    intro,
    empty: since === null ? `No earlier session of ${inputs.agent} in this app: everything above is new to you.` : "No memory changed since then.",
    items,
    // Dropped changes are the oldest, a contiguous run: a range says it in a few tokens.
    droppedNote: (dropped) =>
      `\n_${dropped.length} older ${dropped.length === 1 ? "change" : "changes"} omitted for lack of budget (seq ${dropped.at(-1)!.key.slice(4)}–${dropped[0]!.key.slice(4)}); \`memledger log --since-seq ${(since?.seq ?? 0) + 1}\` lists them._\n`,
    closing: "\n",
  };
}

function header(inputs: PackInputs): string {
  const facts = [
    `app ${code(inputs.app)}`,
    ...(inputs.branch ? [`branch ${code(inputs.branch)}`] : []),
    ...(inputs.paths.length ? [`paths: ${inputs.paths.map(code).join(", ")}`] : []),
  ];
  return `# Context pack for ${code(inputs.agent)}\n\n${inputs.task ? `Task: ${inline(inputs.task)}\n` : ""}${facts.join(" · ")}\n\n`;
}

const byCodePoint = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

// ---- budget ------------------------------------------------------------------------------------

function sharesOf(options: PackOptions): Record<SectionName, number> {
  const raw = { ...DEFAULT_SHARES, ...options.shares };
  const total = sum(SECTION_NAMES.map((n) => Math.max(0, raw[n])));
  return Object.fromEntries(SECTION_NAMES.map((n) => [n, total > 0 ? Math.max(0, raw[n]) / total : 1 / SECTION_NAMES.length])) as Record<SectionName, number>;
}

/**
 * Pass 1: in priority order, each section gets its share plus what earlier sections left unused.
 * Pass 2: what is still unused goes, in priority order, to sections that dropped or trimmed something,
 * now without the per-body cap (a top memory may then show whole).
 */
function allocate(renderers: Record<SectionName, SectionRenderer>, available: number, shares: Record<SectionName, number>): Record<SectionName, Rendered> {
  const out = {} as Record<SectionName, Rendered>;
  let carry = 0;
  let given = 0;
  for (const name of SECTION_NAMES) {
    const allowance = Math.floor(available * shares[name]) + carry;
    given += Math.floor(available * shares[name]);
    out[name] = renderers[name].render(allowance);
    carry = allowance - out[name].tokens;
  }
  let leftover = carry + (available - given); // rounding remainders included
  for (const name of SECTION_NAMES) {
    const current = out[name];
    if (leftover <= 0) break;
    const lostSomething = current.dropped.length > 0 || current.trimmed.length > 0 || current.text === "";
    if (!lostSomething) continue;
    const allowance = current.tokens + leftover;
    const wider = renderers[name].render(allowance, allowance);
    // Never worse than pass 1: the wider render must show at least as much.
    if (wider.included.length >= current.included.length) {
      out[name] = wider;
      leftover = allowance - wider.tokens;
    }
  }
  return out;
}

function assembleWithin(inputs: PackInputs, options: PackOptions, tokens: TokenCounter, target: number): Omit<ContextPack, "tokens" | "budget" | "encoding"> {
  const maxBody = options.maxBodyTokens ?? DEFAULT_MAX_BODY_TOKENS;
  const fragile = fragileSpec(inputs);
  const specs: Record<SectionName, SectionSpec> = {
    fragile: fragile.spec,
    claims: claimsSpec(inputs),
    relevant: relevantSpec(inputs, fragile.keys),
    index: indexSpec(inputs),
    changes: changesSpec(inputs),
  };
  const renderers = Object.fromEntries(SECTION_NAMES.map((n) => [n, new SectionRenderer(specs[n], tokens, maxBody)])) as Record<SectionName, SectionRenderer>;
  const head = header(inputs);
  const headCost = tokens.count(head);
  const rendered =
    headCost <= target
      ? allocate(renderers, target - headCost, sharesOf(options))
      : (Object.fromEntries(SECTION_NAMES.map((n) => [n, renderers[n].render(-1)])) as Record<SectionName, Rendered>);
  const body = SECTION_NAMES.map((n) => rendered[n].text).join("");
  return {
    markdown: headCost <= target ? `${head}${body}`.trimEnd() + "\n" : "",
    sections: SECTION_NAMES.map((name) => ({
      name,
      title: TITLES[name],
      tokens: rendered[name].tokens,
      included: rendered[name].included,
      dropped: rendered[name].dropped,
      trimmed: rendered[name].trimmed,
    })),
  };
}

/**
 * Assembles the pack. Section costs are counted block by block, and BPE can merge across block
 * boundaries, so the finished document is counted whole; should it overshoot, it is assembled again
 * under a target lowered by the overshoot. The result never counts more than `options.budget`.
 */
export function assemblePack(inputs: PackInputs, options: PackOptions, tokens: TokenCounter): ContextPack {
  const budget = Math.max(0, Math.floor(options.budget));
  let target = budget;
  for (let attempt = 0; attempt < 8 && target >= 0; attempt++) {
    const pack = assembleWithin(inputs, options, tokens, target);
    const counted = tokens.count(pack.markdown);
    if (counted <= budget) return { ...pack, tokens: counted, budget, encoding: tokens.encoding };
    target -= counted - budget;
  }
  const empty = assembleWithin(inputs, options, tokens, -1);
  return { ...empty, tokens: 0, budget, encoding: tokens.encoding };
}
