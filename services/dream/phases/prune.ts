import { execFile } from "node:child_process";
import { stat } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { memoryStatus } from "../../../commands/memory.js";
import { invalid } from "../../../schemas/errors.js";
import type { Phase, PhaseContext, ProposalDraft } from "../phase.js";
import { DAY_MS, activeMemories, byKey, contentOf, evidence, line, refOf, versionTime, type ActiveMemory } from "../proposals.js";

const run = promisify(execFile);

/**
 * prune: memories that no longer say anything true or useful, each proposed for supersede (or, when only
 * some of its files are gone, a revision that drops them from `paths`). One proposal per memory, keyed by
 * its id and version, with every reason that applies in its evidence:
 *
 * - missing files (with `repoDir`): every file the memory names (its `paths`, and relative paths it
 *   quotes in backticks) is neither tracked by git nor present in the working tree. In a git repository
 *   the commit that deleted it is named; outside one, the directory is checked on disk.
 * - dead superseded chains: superseded memories whose chain of successors ends in a memory that never
 *   came into force (only proposed, or rejected): that end is proposed for supersede, so the chain stops
 *   being listed as pending in MEMORY.md.
 * - never retrieved: active memories no exposure receipt ever returned, in force for more than
 *   `neverRetrievedDays`. Skipped when the view holds no receipts at all (exposure not recorded: every
 *   memory would look unread).
 */

/** A relative file path quoted in a body: `src/payments/webhook.ts`, `docs/setup.md`. */
const QUOTED_PATH = /`([A-Za-z0-9_.@-][A-Za-z0-9_.@/-]*\/[A-Za-z0-9_.@-]+\.[A-Za-z0-9]{1,8})`/g;
const GLOB = /[*?[\]{}]/;

/** The repository-relative paths a memory names (checkable ones: relative, no globs). */
export function namedPaths(memory: ActiveMemory): string[] {
  const out = new Set<string>();
  for (const raw of memory.version.paths) {
    const p = raw.trim().replace(/^\.\//, "").replace(/\/+$/, "");
    if (p.length === 0 || GLOB.test(p) || path.isAbsolute(p) || p.split("/").includes("..") || /^[a-z]+:\/\//i.test(p)) continue;
    out.add(p);
  }
  for (const match of memory.version.body.matchAll(QUOTED_PATH)) {
    const p = match[1]!.replace(/^\.\//, "");
    if (!p.split("/").includes("..")) out.add(p);
  }
  return [...out].sort();
}

/** What the repository holds: git's tracked files (with their folders) when it is a work tree, and the disk. */
export class RepoFiles {
  private constructor(
    readonly dir: string,
    private readonly tracked: Set<string> | null,
    private readonly folders: Set<string>,
  ) {}

  static async open(dir: string): Promise<RepoFiles> {
    const info = await stat(dir).catch(() => null);
    if (!info?.isDirectory()) throw invalid(`prune: the repository directory ${dir} does not exist or is not a directory (--repo)`, { repoDir: dir });
    let top: string | null = null;
    try {
      top = (await run("git", ["-C", dir, "rev-parse", "--show-toplevel"])).stdout.trim();
    } catch {
      top = null;
    }
    if (top === null) return new RepoFiles(dir, null, new Set());
    const { stdout } = await run("git", ["-C", top, "ls-files", "-z", "--cached"], { maxBuffer: 256 * 1024 * 1024 });
    const tracked = new Set(stdout.split("\0").filter((f) => f.length > 0));
    const folders = new Set<string>();
    for (const file of tracked) {
      for (let at = file.indexOf("/"); at >= 0; at = file.indexOf("/", at + 1)) folders.add(file.slice(0, at));
    }
    return new RepoFiles(top, tracked, folders);
  }

  get gitAware(): boolean {
    return this.tracked !== null;
  }

  /** A file or folder the memory names is there: tracked by git (staged counts), or present in the work tree. */
  async exists(relative: string): Promise<boolean> {
    if (this.tracked && (this.tracked.has(relative) || this.folders.has(relative))) return true;
    return (await stat(path.join(this.dir, relative)).catch(() => null)) !== null;
  }

  /**
   * The short hash and date of the last commit that deleted each path, from one `git log` over the whole
   * history (one process, not one per memory); empty outside a git repository.
   */
  async deletions(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    if (!this.tracked) return out;
    let stdout: string;
    try {
      ({ stdout } = await run("git", ["-C", this.dir, "log", "--diff-filter=D", "--name-only", "--format=%x00%h %cs"], { maxBuffer: 256 * 1024 * 1024 }));
    } catch {
      return out; // a repository without commits: nothing was ever deleted
    }
    // Newest first: the first commit seen for a path is its last deletion.
    for (const entry of stdout.split("\0").slice(1)) {
      const [commit, ...files] = entry.split("\n").map((l) => l.trim());
      for (const file of files) if (file && commit && !out.has(file)) out.set(file, commit);
    }
    return out;
  }
}

interface Reasons {
  memory: ActiveMemory;
  missing: string[];
  named: string[];
  deletions: string[];
  neverRetrievedDays: number | null;
}

async function missingFiles(ctx: PhaseContext, memories: readonly ActiveMemory[], reasons: Map<string, Reasons>, reasonsOf: (m: ActiveMemory) => Reasons): Promise<void> {
  if (ctx.settings.repoDir === null) return;
  const repo = await RepoFiles.open(ctx.settings.repoDir);
  const known = new Map<string, boolean>();
  let deletions: Map<string, string> | undefined;
  for (const memory of memories) {
    ctx.signal?.throwIfAborted();
    const named = namedPaths(memory);
    if (named.length === 0) continue;
    const missing: string[] = [];
    for (const p of named) {
      let there = known.get(p);
      if (there === undefined) known.set(p, (there = await repo.exists(p)));
      if (!there) missing.push(p);
    }
    if (missing.length === 0) continue;
    const r = reasonsOf(memory);
    r.named = named;
    r.missing = missing;
    deletions ??= await repo.deletions();
    for (const p of missing) {
      const commit = deletions.get(p);
      if (commit && r.deletions.length < 3) r.deletions.push(`${p} deleted in ${commit}`);
    }
    reasons.set(memory.id, r);
  }
}

function neverRetrieved(ctx: PhaseContext, memories: readonly ActiveMemory[], reasonsOf: (m: ActiveMemory) => Reasons, reasons: Map<string, Reasons>): void {
  if (ctx.view.retrievals.size === 0) return;
  const threshold = ctx.settings.neverRetrievedDays;
  for (const memory of memories) {
    if (ctx.view.retrievals.has(memory.id)) continue;
    const ageDays = Math.floor((ctx.now.getTime() - Date.parse(versionTime(memory.version))) / DAY_MS);
    if (ageDays <= threshold) continue;
    const r = reasonsOf(memory);
    r.neverRetrievedDays = ageDays;
    reasons.set(memory.id, r);
  }
}

function deadChains(ctx: PhaseContext): ProposalDraft[] {
  const { memories } = ctx.view;
  // The successor each superseded memory names; chains are followed from every superseded memory.
  const predecessors = new Map<string, string[]>();
  for (const [id, { state }] of memories) {
    const by = state.superseded?.by;
    if (by) predecessors.set(by, [...(predecessors.get(by) ?? []), id]);
  }
  const drafts: ProposalDraft[] = [];
  for (const [endId, direct] of [...predecessors].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const end = memories.get(endId);
    if (!end) continue; // a successor outside this app's stream (an org memory): nothing here to prune
    const status = memoryStatus(end.state);
    if (status !== "proposed" && status !== "rejected") continue;
    if (end.state.scope?.startsWith("session:")) continue;
    // Everything that led to it, transitively (a chain a -> b -> end).
    const chain: string[] = [];
    const queue = [...direct];
    while (queue.length > 0 && chain.length < 1000) {
      const id = queue.shift()!;
      if (chain.includes(id)) continue;
      chain.push(id);
      queue.push(...(predecessors.get(id) ?? []));
    }
    chain.sort();
    const latest = end.state.versions.at(-1)!;
    const refs = [{ memoryId: endId, version: latest.version }, ...chain.map((id) => ({ memoryId: id, version: memories.get(id)!.state.versions.at(-1)?.version ?? 1 }))];
    drafts.push({
      key: `prune:chain:${endId}@v${latest.version}`,
      change: { action: "supersede", memory: refs[0]! },
      evidence: evidence({
        memories: refs,
        counts: { chainLength: chain.length + 1, superseded: chain.length },
        summary: `${chain.length} superseded ${chain.length === 1 ? "memory points" : "memories point"} to ${endId}, which never came into force (${status}): the chain ends in nothing in force`,
      }),
      reason: line(`Dead superseded chain: "${latest.title}" (${status}) is the successor of ${chain.join(", ")} but never came into force`),
    });
  }
  return drafts;
}

export const prunePhase: Phase = {
  name: "prune",
  async propose(ctx: PhaseContext): Promise<ProposalDraft[]> {
    const memories = activeMemories(ctx.view);
    const reasons = new Map<string, Reasons>();
    const reasonsOf = (m: ActiveMemory): Reasons => reasons.get(m.id) ?? { memory: m, missing: [], named: [], deletions: [], neverRetrievedDays: null };
    await missingFiles(ctx, memories, reasons, reasonsOf);
    neverRetrieved(ctx, memories, reasonsOf, reasons);

    const drafts: ProposalDraft[] = deadChains(ctx);
    for (const r of reasons.values()) {
      const { memory } = r;
      const allMissing = r.missing.length > 0 && r.missing.length === r.named.length;
      const supersede = allMissing || r.neverRetrievedDays !== null;
      const parts: string[] = [];
      if (r.missing.length > 0) {
        parts.push(`${r.missing.length} of ${r.named.length} files it names are gone from the repository (${r.missing.slice(0, 5).join(", ")}${r.missing.length > 5 ? ", …" : ""})${r.deletions.length > 0 ? `; ${r.deletions.join("; ")}` : ""}`);
      }
      if (r.neverRetrievedDays !== null) parts.push(`never retrieved, in force for ${r.neverRetrievedDays} days (threshold ${ctx.settings.neverRetrievedDays})`);
      const counts: Record<string, number> = { retrievals: ctx.view.retrievals.get(memory.id)?.count ?? 0 };
      if (r.named.length > 0) Object.assign(counts, { pathsNamed: r.named.length, pathsMissing: r.missing.length });
      if (r.neverRetrievedDays !== null) Object.assign(counts, { ageDays: r.neverRetrievedDays, thresholdDays: ctx.settings.neverRetrievedDays });
      const ev = evidence({ memories: [refOf(memory)], counts, summary: parts.join("; ") });
      if (supersede) {
        drafts.push({
          key: `prune:${memory.id}@v${memory.version.version}`,
          change: { action: "supersede", memory: refOf(memory) },
          evidence: ev,
          reason: line(`Prune "${memory.version.title}": ${parts.join("; ")}`),
        });
      } else {
        // Some files are gone, others remain: keep the memory, drop the paths that no longer exist.
        const missing = new Set(r.missing);
        const paths = memory.version.paths.filter((p) => !missing.has(p.trim().replace(/^\.\//, "").replace(/\/+$/, "")));
        // Only quoted in the body: nothing a revision of `paths` could fix; the text is the author's to edit.
        if (paths.length === memory.version.paths.length) continue;
        drafts.push({
          key: `prune:paths:${memory.id}@v${memory.version.version}`,
          change: { action: "revise", memory: refOf(memory), content: contentOf(memory.version, { paths }) },
          evidence: ev,
          reason: line(`Drop missing files from "${memory.version.title}": ${parts.join("; ")}`),
        });
      }
    }
    return byKey(drafts);
  },
};
