import { stringify } from "yaml";
import { memoryStatus } from "../../commands/memory.js";
import type { MemoryKind } from "../../schemas/primitives.js";
import { isListed, shownVersion, type IndexEntry, type MemoryRecord, type Provenance } from "./model.js";

/**
 * Pure rendering of the human-readable files. Byte-identical output for identical input is part of the
 * contract: no clock, no locale (no toLocaleString, no localeCompare), stable key order, stable sorting.
 */

// Characters that must not reach a one-line display: controls and line breaks (they would break out of a
// heading or a list item) and bidirectional overrides/isolates (they let a title render as something else).
const UNSAFE_INLINE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

// Invisible characters (zero-width space and joiners, word joiners, invisible operators, byte-order mark,
// soft hyphen): removed, so a title reads as the letters it shows (the hydration pack embeds MEMORY.md).
const INVISIBLE_INLINE = /[\u00ad\u200b-\u200d\u2060-\u2064\ufeff]/g;

/** One line of display text: invisible characters go, unsafe ones become spaces, runs of spaces collapse, ends are trimmed. */
export const displayLine = (text: string): string => text.replace(INVISIBLE_INLINE, "").replace(UNSAFE_INLINE, " ").replace(/ {2,}/g, " ").trim();

/** Cuts to `max` code points (never inside a surrogate pair) and marks the cut. */
export function truncate(text: string, max: number): string {
  const chars = Array.from(text);
  return chars.length <= max ? text : `${chars.slice(0, max - 1).join("")}…`;
}

const formatActor = (p: Provenance | null) => (p ? `${p.actor.kind}:${p.actor.id}` : null);

/** YAML options: never fold long strings, so one value stays on one line whatever its length. */
const YAML_OPTIONS = { lineWidth: 0, minContentWidth: 0 } as const;

/**
 * A memory's file: YAML front matter, the shown version's title as the heading, a one-line status note
 * when it is not simply active, then the body. Undefined when the memory has no version to show.
 */
export function renderMemoryFile(app: string, record: MemoryRecord): string | undefined {
  const { state } = record;
  const shown = shownVersion(state);
  if (state.id === null || !shown) return undefined;
  const status = memoryStatus(state);
  const provenance = record.provenance[String(shown.version)] ?? { proposal: null, decision: null };
  const proposal = provenance.proposal;
  // A decision is the approval only if the version was approved; a rejection shows as such below.
  const approval = shown.status === "approved" ? provenance.decision : null;
  const pending = state.versions.filter((v) => v.status === "proposed" && v.version !== shown.version).map((v) => v.version);

  const frontMatter = {
    id: state.id,
    app,
    status,
    activeVersion: state.activeVersion,
    version: shown.version,
    ...(pending.length > 0 ? { pendingVersions: pending } : {}),
    scope: state.scope,
    kind: shown.kind,
    tags: [...shown.tags],
    paths: [...shown.paths],
    importance: shown.importance,
    seq: record.seq,
    provenance: {
      proposedBy: formatActor(proposal) ?? `${shown.proposedBy.kind}:${shown.proposedBy.id}`,
      proposedInSession: proposal?.session ?? shown.proposedInSession,
      proposedOnBranch: proposal?.branch ?? null,
      proposedAt: proposal?.time ?? shown.proposedAt,
      approvedBy: formatActor(approval),
      approvedInSession: approval?.session ?? null,
      approvedOnBranch: approval?.branch ?? null,
      approvedAt: approval?.time ?? null,
    },
    ...(state.superseded
      ? {
          supersededBy: state.superseded.by,
          supersededReason: state.superseded.reason,
          supersededAt: state.superseded.at,
        }
      : {}),
    ...(shown.status === "rejected" ? { rejectedReason: shown.rejectReason } : {}),
  };

  const note = statusNote(status, shown.version, state.superseded?.by ?? null);
  const title = displayLine(shown.title) || displayLine(state.id);
  const body = shown.body.replace(/\s+$/, "");
  return `---\n${plainYaml(frontMatter) ?? stringify(frontMatter, YAML_OPTIONS)}---\n\n# ${title}\n\n${note ? `${note}\n\n` : ""}${body}\n`;
}

// ---- front matter without the YAML library, when that is provably the same text ---------------------

// A string the YAML library writes as a plain scalar, unquoted: starts with a letter, digit or '_', uses
// a small alphabet, has no ': ' or ' #' (no ':' or '#' at all once there is a space), does not end with
// ':' or a space, and does not read as another core-schema scalar (number, boolean, null). Anything else
// (quotes, escapes, unicode, leading indicators) goes through the library. Ids, scopes, kinds, actors,
// ISO times, paths and most tags fall in this class. test/projections/files.unit.spec.ts checks the class
// against the library on random strings.
const PLAIN_NO_SPACE = /^[A-Za-z0-9_][A-Za-z0-9_./:@+-]*$/;
const PLAIN_WITH_SPACE = /^[A-Za-z0-9_][A-Za-z0-9_./@+ -]*[A-Za-z0-9_./@+-]$/;
const CORE_SCALAR = /^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+|[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[Tt]rue|TRUE|[Ff]alse|FALSE|[Nn]ull|NULL)$/;

export const isPlainYamlString = (text: string): boolean =>
  ((PLAIN_NO_SPACE.test(text) && !text.endsWith(":")) || PLAIN_WITH_SPACE.test(text)) && !CORE_SCALAR.test(text);

function plainScalar(value: unknown): string | undefined {
  if (value === null) return "null";
  if (typeof value === "number") return Number.isSafeInteger(value) ? String(value) : undefined;
  if (typeof value === "string") return isPlainYamlString(value) ? value : undefined;
  return undefined;
}

/**
 * The YAML library's output for `stringify(value, YAML_OPTIONS)` of a map whose keys are identifiers and
 * whose values are null, safe integers, strings, lists of null, safe integers and plain strings, or such
 * maps; undefined when anything falls outside (the caller then uses the library). The library cost ~15%
 * of a rebuild's CPU. A string that is not plain (a reason such as `outdated: x changed`) is written by
 * the library as a one-pair map, indented to its place: only that value, not the whole front matter
 * (which cost another 8% of a rebuild when every superseded or rejected memory fell back whole).
 */
export function plainYaml(map: Record<string, unknown>, indent = ""): string | undefined {
  let out = "";
  for (const key in map) {
    const value = map[key];
    if (!/^[A-Za-z][A-Za-z0-9]*$/.test(key)) return undefined;
    if (Array.isArray(value)) {
      if (value.length === 0) {
        out += `${indent}${key}: []\n`;
        continue;
      }
      out += `${indent}${key}:\n`;
      for (const item of value) {
        const scalar = plainScalar(item);
        if (scalar === undefined) return undefined;
        out += `${indent}  - ${scalar}\n`;
      }
    } else if (typeof value === "object" && value !== null) {
      const nested = plainYaml(value as Record<string, unknown>, `${indent}  `);
      if (nested === undefined || nested === "") return undefined;
      out += `${indent}${key}:\n${nested}`;
    } else {
      const scalar = plainScalar(value);
      if (scalar !== undefined) out += `${indent}${key}: ${scalar}\n`;
      else if (typeof value === "string") out += indentLines(stringify({ [key]: value }, YAML_OPTIONS), indent);
      else return undefined;
    }
  }
  return out;
}

/** Prefixes every non-empty line (the library leaves empty lines of a block scalar empty at any depth). */
const indentLines = (text: string, indent: string): string =>
  indent === "" ? text : text.split("\n").map((line) => (line === "" ? line : indent + line)).join("\n");

function statusNote(status: string, version: number, supersededBy: string | null): string | null {
  switch (status) {
    case "proposed":
      return `> Proposed (version ${version}), not yet approved.`;
    case "superseded":
      return `> Superseded${supersededBy ? ` by ${displayLine(supersededBy)}` : ""}: kept for the record, no longer in force.`;
    case "rejected":
      return `> Rejected (version ${version}).`;
    default:
      return null;
  }
}

// ---- MEMORY.md --------------------------------------------------------------------------------

/** MEMORY.md is loaded at session start, so it must stay small whatever the number of memories. */
export const INDEX_LIMITS = { maxLines: 200, maxBytes: 25 * 1024 } as const;

/** Titles longer than this are cut in the index (the file has the full title). */
export const INDEX_TITLE_CHARS = 120;

/**
 * Tie-break by kind when importance and recency are equal: warnings about fragile code first, then
 * decisions and conventions that shape work, then how-tos, then facts and notes.
 */
export const KIND_RANK: Record<MemoryKind, number> = {
  fragile: 0,
  decision: 1,
  convention: 2,
  procedure: 3,
  fact: 4,
  note: 5,
};

const byCodePoint = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The index order: importance (high first), then recency (the stream sequence of the memory's last
 * change, newest first: the log's own order, unlike event times written by clients), then kind
 * (KIND_RANK), then id. Total and locale-free, so the same memories always list the same way.
 */
export function compareIndexEntries(a: IndexEntry, b: IndexEntry): number {
  return (
    b.importance - a.importance ||
    b.seq - a.seq ||
    (KIND_RANK[a.kind] ?? 99) - (KIND_RANK[b.kind] ?? 99) ||
    byCodePoint(a.id, b.id)
  );
}

/** Link text inside [...]: one line, no brackets or markup that could end the link or inject HTML. */
const escapeMarkup = (text: string) => text.replace(/[\\[\]<>`]/g, (c) => `\\${c}`);
const linkText = (text: string) => escapeMarkup(truncate(displayLine(text), INDEX_TITLE_CHARS));

/** `linkPrefix`: how to reach the app directory from the index's own folder ("" for MEMORY.md). */
export function indexLine(entry: IndexEntry, linkPrefix = ""): string {
  const details = [entry.kind, entry.scope === "app" ? null : escapeMarkup(displayLine(entry.scope)), entry.status === "proposed" ? "proposed, not yet approved" : null]
    .filter((part): part is string => part !== null)
    .join(", ");
  // File names are built from the token alphabet plus '.', so they need no URL escaping.
  return `- [${linkText(entry.title) || linkText(entry.id)}](${linkPrefix}${entry.file}) (${details}; importance ${entry.importance})`;
}

const omittedLine = (count: number) =>
  `- …and ${count} more ${count === 1 ? "memory" : "memories"} not listed here: see the scope folders next to this file.`;

const bytes = (line: string) => Buffer.byteLength(line, "utf8") + 1; // + the newline

/**
 * A scratchpad (`agent:<id>`) is its agent's, and a session's candidates (`session:<id>`) its agent's in
 * that worktree: the shared MEMORY.md never lists them, not even by title.
 */
export const isSharedEntry = (entry: IndexEntry): boolean => !entry.scope.startsWith("agent:") && !entry.scope.startsWith("session:");

/**
 * MEMORY.md: the memories of shared scopes (app, teams, org), see `renderIndex`. Each agent's scratchpad
 * has its own index (`renderScratchpadIndex`).
 */
export function renderMemoryIndex(app: string, entries: Iterable<IndexEntry>, limits = INDEX_LIMITS): string {
  return renderIndex(`# Memory index: ${displayLine(app)}`, [...entries].filter(isSharedEntry), "", limits);
}

/**
 * `agents/<id>/MEMORY.md`: the memories of agent `agentId`'s scratchpad only, linked from that folder
 * (`../../agent/<id>/…`), under the same caps as MEMORY.md.
 */
export function renderScratchpadIndex(app: string, agentId: string, entries: Iterable<IndexEntry>, limits = INDEX_LIMITS): string {
  const scope = `agent:${agentId}`;
  const own = [...entries].filter((entry) => entry.scope === scope);
  return renderIndex(`# Scratchpad index: ${displayLine(app)}, agent ${displayLine(agentId)}`, own, "../../", limits);
}

/**
 * An index: a header, then as many memories as fit in order, then (if any are left out) one line
 * saying how many. Lines and bytes are both budgeted; the closing line's room is reserved before
 * each entry is admitted, so the caps hold for any number of memories and any title.
 */
function renderIndex(heading: string, entries: readonly IndexEntry[], linkPrefix: string, limits: { maxLines: number; maxBytes: number }): string {
  const listed = entries.filter(isListed).sort(compareIndexEntries);
  const lines = [
    heading,
    "",
    `${listed.length} ${listed.length === 1 ? "memory" : "memories"} in force or awaiting review, most important first ` +
      "(then most recently changed, then by kind). Each links to its file; superseded and rejected memories are not listed.",
    "",
  ];
  let used = lines.reduce((sum, line) => sum + bytes(line), 0);
  let shown = 0;
  for (const entry of listed) {
    const line = indexLine(entry, linkPrefix);
    const leftAfter = listed.length - shown - 1;
    const reserveLines = leftAfter > 0 ? 1 : 0;
    const reserveBytes = leftAfter > 0 ? bytes(omittedLine(leftAfter)) : 0;
    if (lines.length + 1 + reserveLines > limits.maxLines || used + bytes(line) + reserveBytes > limits.maxBytes) break;
    lines.push(line);
    used += bytes(line);
    shown++;
  }
  if (shown < listed.length) lines.push(omittedLine(listed.length - shown));
  return `${lines.join("\n")}\n`;
}
