import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { envelopes } from "../../testing/index.js";
import { ProposalMade, type LedgerEvent } from "../../schemas/events.js";
import { DEFAULT_DREAM_SETTINGS, type PhaseContext } from "../../services/dream/phase.js";
import { foldDreamView } from "../../services/dream/view.js";
import { prunePhase } from "../../services/dream/phases/prune.js";

/**
 * prune with a repository (--repo) against a real git repository in a temp directory: files committed,
 * one deleted and committed, one deleted only from the work tree (still tracked: it stays), one folder
 * kept. Memories naming only gone files are proposed for supersede with the deleting commit in their
 * evidence; one naming a gone and a kept file gets a revision dropping the gone path; the rest stay.
 */
describe("prune against a real git repository", () => {
  let repo: string;
  let plain: string;
  const git = (...args: string[]) => execFileSync("git", ["-C", repo, ...args], { encoding: "utf8" }).trim();

  beforeAll(async () => {
    repo = await mkdtemp(path.join(tmpdir(), "memledger-prune-"));
    git("init", "-q");
    git("config", "user.email", "t@example.com");
    git("config", "user.name", "t");
    await mkdir(path.join(repo, "src/payments"), { recursive: true });
    for (const f of ["src/payments/webhook.ts", "src/payments/refund.ts", "src/old.ts", "README.md", "src/local-only.ts"]) await writeFile(path.join(repo, f), `// ${f}\n`);
    git("add", ".");
    git("commit", "-q", "-m", "files");
    git("rm", "-q", "src/old.ts", "src/payments/refund.ts");
    git("commit", "-q", "-m", "remove old and refund");
    await rm(path.join(repo, "src/local-only.ts")); // gone from the disk, still tracked
    plain = await mkdtemp(path.join(tmpdir(), "memledger-prune-plain-"));
    await writeFile(path.join(plain, "here.txt"), "x");
  });

  afterAll(async () => {
    await rm(repo, { recursive: true, force: true });
    await rm(plain, { recursive: true, force: true });
  });

  function ctx(repoDir: string): PhaseContext {
    const events: { seq: number; event: LedgerEvent }[] = [];
    const memory = (id: string, paths: string[], body = "Body.") => {
      for (const e of envelopes([{ type: "memory.proposed", data: { version: 1, title: `About ${id}`, body, kind: "note", tags: [], paths, importance: 3 } }, { type: "memory.approved", data: { version: 1 } }] as never, { aggregateId: id, app: "app1", scope: "app" } as never, events.length + 1)) {
        events.push({ seq: events.length + 1, event: e as LedgerEvent });
      }
    };
    memory("m-gone", ["src/old.ts"]);
    memory("m-half", ["src/payments/webhook.ts", "src/payments/refund.ts"]);
    memory("m-kept", ["src/payments/webhook.ts", "src/payments", "./README.md"]);
    memory("m-tracked", ["src/local-only.ts"]);
    memory("m-quoted", [], "The handler lives in `src/old.ts` now.");
    memory("m-glob", ["src/**/*.ts", "/etc/hosts", "../outside.ts"]);
    memory("m-here", ["here.txt"]);
    return {
      app: "app1",
      runId: "run-1",
      trigger: { kind: "dream", forced: true },
      now: new Date(),
      settings: { ...DEFAULT_DREAM_SETTINGS, repoDir },
      view: foldDreamView("app1", events.length, events),
      readTranscript: async () => "",
    };
  }

  it("proposes memories whose files are gone, names the deleting commit, and drops gone paths from the rest", async () => {
    const c = ctx(repo);
    const drafts = await prunePhase.propose(c);
    for (const d of drafts) ProposalMade.shape.data.parse({ runId: "run-1", phase: "prune", key: d.key, change: d.change, evidence: d.evidence, reason: d.reason });
    expect(drafts.map((d) => d.key)).toEqual(["prune:m-gone@v1", "prune:m-here@v1", "prune:m-quoted@v1", "prune:paths:m-half@v1"]);
    const byKey = Object.fromEntries(drafts.map((d) => [d.key, d]));
    const gone = byKey["prune:m-gone@v1"]!;
    expect(gone.change).toEqual({ action: "supersede", memory: { memoryId: "m-gone", version: 1 } });
    expect(gone.evidence.counts).toMatchObject({ pathsNamed: 1, pathsMissing: 1 });
    const deleting = git("log", "-1", "--format=%h", "--", "src/old.ts");
    expect(gone.evidence.summary).toContain(`src/old.ts deleted in ${deleting}`);
    expect(byKey["prune:m-quoted@v1"]!.evidence.summary).toContain("src/old.ts");
    const half = byKey["prune:paths:m-half@v1"]!.change;
    expect(half.action === "revise" && half.content.paths).toEqual(["src/payments/webhook.ts"]);
    expect(byKey["prune:paths:m-half@v1"]!.evidence.counts).toMatchObject({ pathsNamed: 2, pathsMissing: 1 });
  });

  it("outside a git repository, checks the directory on disk", async () => {
    const drafts = await prunePhase.propose(ctx(plain));
    const keys = drafts.map((d) => d.key);
    expect(keys).not.toContain("prune:m-here@v1");
    expect(keys).toEqual(expect.arrayContaining(["prune:m-gone@v1", "prune:m-half@v1", "prune:m-kept@v1", "prune:m-tracked@v1"]));
    expect(drafts.find((d) => d.key === "prune:m-gone@v1")!.evidence.summary).not.toContain("deleted in");
  });

  it("refuses a repository directory that does not exist, and skips the check without one", async () => {
    await expect(prunePhase.propose(ctx(path.join(plain, "nope")))).rejects.toMatchObject({ code: "invalid" });
    const c = ctx(repo);
    expect(await prunePhase.propose({ ...c, settings: { ...c.settings, repoDir: null } })).toEqual([]);
  });
});
