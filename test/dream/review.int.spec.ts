import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryDecider, memoryStatus } from "../../commands/memory.js";
import { proposalDecider } from "../../commands/proposal.js";
import { filesProjection } from "../../projections/files/index.js";
import { searchProjection } from "../../projections/search/projection.js";
import { retrieve } from "../../projections/search/retrieve.js";
import { PERMISSIVE_POLICY } from "../../schemas/policy.js";
import type { Actor } from "../../schemas/primitives.js";
import { CommandHandler } from "../../services/command-handler.js";
import { acceptProposals, newMemoryIdOf, rejectProposals, revertRun, showRun, type ReviewDeps } from "../../services/dream/review.js";
import { runDream, type DreamDeps } from "../../services/dream/runner.js";
import { ProjectionRunner } from "../../services/projection-runner.js";
import type { MemoryClient } from "../../services/client.js";
import { startLedger, type Ledger } from "../support/env.js";
import { rejectionOf } from "../ledger/support.js";
import { TEST_PHASES, approvedMemory, mergePhase, prunePhase, refreshPhase } from "./dream-support.js";

const RITA: Actor = { kind: "human", id: "rita" };
const AGENT: Actor = { kind: "agent", id: "agent-a" };

/** Real NATS and the real files and search projections: review, accept and reject per item, revert equality. */
describe("consolidation review", () => {
  let ledger: Ledger;
  let n = 0;
  const nextApp = () => `review${++n}`;
  const dreamDeps = (): DreamDeps => ({ nc: ledger.nc, store: ledger.service.store, lock: { ttlMs: 1500 } });
  const review = (extra: Partial<ReviewDeps> = {}): ReviewDeps => ({ store: ledger.service.store, handler: ledger.service.handler, policy: PERMISSIVE_POLICY, ...extra });
  const lastSeq = (app: string) => ledger.service.store.lastSeq(ledger.service.store.names.appStream(app));

  beforeAll(async () => {
    ledger = await startLedger();
  });
  afterAll(async () => {
    await ledger.cleanup();
  });

  async function seeded(app: string) {
    const client = ledger.client("agent-a", app);
    const stale = await approvedMemory(client, "Old build script", "Run make build to compile the project.", ["stale"]);
    const dups = [
      await approvedMemory(client, "Deploy with the script", "Run scripts/deploy.sh to deploy to staging.", ["dup"]),
      await approvedMemory(client, "Deploying", "Use scripts/deploy.sh to deploy; it asks for the staging token.", ["dup"]),
    ];
    const old = await approvedMemory(client, "Database migrations", "Run migrations with npm run migrate before deploying.", ["old"]);
    const kept = await approvedMemory(client, "Code review", "Every change needs one approving review.", []);
    return { client, stale, dups, old, kept };
  }

  async function completedRun(app: string, phases = TEST_PHASES): Promise<string> {
    const result = await runDream(dreamDeps(), { app, phases, force: true });
    if (result.status !== "completed") throw new Error(`run did not complete: ${result.status}`);
    return result.runId;
  }

  const byPhase = async (app: string, runId: string) => {
    const shown = await showRun(review(), app, runId);
    return Object.fromEntries(shown.proposals.map((p) => [p.phase === "learn" ? `learn:${p.change.action}` : p.phase, p]));
  };

  it("show lists the run's proposals with their evidence; accept applies one as memory events caused by it, reject decides another", async () => {
    const app = nextApp();
    const { stale, dups } = await seeded(app);
    const runId = await completedRun(app);
    const shown = await showRun(review(), app, runId);
    expect(shown).toMatchObject({ runId, status: "completed", phases: ["prune", "merge", "refresh", "learn"] });
    expect(shown.proposals).toHaveLength(5);
    expect(shown.proposals.every((p) => p.status === "pending" && p.evidence !== null && p.reason.length > 0)).toBe(true);
    const p = await byPhase(app, runId);

    const accepted = await acceptProposals(review(), { app, runId, proposalIds: [p.prune!.proposalId], actor: RITA, reason: "yes" });
    expect(accepted.results).toMatchObject([{ proposalId: p.prune!.proposalId, outcome: "applied", status: "applied" }]);
    const [superseded] = accepted.results[0]!.events;
    expect(superseded).toMatchObject({ memoryId: stale, type: "memory.superseded" });
    // Caused by the accept, correlated with the run, by the human who accepted.
    const acceptEvent = (await ledger.service.handler.load(proposalDecider, app, p.prune!.proposalId)).state.decision!;
    const stored = await ledger.service.store.eventAt(ledger.service.store.names.appStream(app), superseded!.seq);
    expect(stored!.event).toMatchObject({ causationId: acceptEvent.eventId, correlationId: runId, actor: RITA });
    expect(memoryStatus((await ledger.service.handler.load(memoryDecider, app, stale)).state)).toBe("superseded");

    const rejected = await rejectProposals(review(), { app, runId, proposalIds: [p.merge!.proposalId], actor: RITA, reason: "keep both" });
    expect(rejected.results).toMatchObject([{ outcome: "rejected", status: "rejected" }]);
    for (const id of dups) expect(memoryStatus((await ledger.service.handler.load(memoryDecider, app, id)).state)).toBe("active");

    // Decided proposals stay decided; each refusal appends nothing.
    const before = await lastSeq(app);
    const again = await acceptProposals(review(), { app, runId, proposalIds: [p.merge!.proposalId, p.prune!.proposalId, "no-such-proposal"], actor: RITA });
    expect(again.results.map((r) => [r.outcome, r.error?.code, r.error?.details?.reason])).toEqual([
      ["refused", "conflict", "already_decided"],
      ["refused", "conflict", "already_decided"],
      ["refused", "not_found", undefined],
    ]);
    expect((await rejectionOf(rejectProposals(review(), { app, runId, actor: RITA, reason: " " }))).code).toBe("invalid");
    expect(await lastSeq(app)).toBe(before);

    // Accept with no ids: every proposal still pending (refresh, learn's create and flag).
    const rest = await acceptProposals(review(), { app, runId, actor: RITA });
    expect(rest.results.map((r) => r.outcome)).toEqual(["applied", "applied", "applied"]);
    const after = await showRun(review(), app, runId);
    expect(after.proposals.map((x) => x.status).sort()).toEqual(["applied", "applied", "applied", "applied", "rejected"]);
    const created = (await ledger.service.handler.load(memoryDecider, app, newMemoryIdOf(p["learn:create"]!.proposalId))).state;
    expect(memoryStatus(created)).toBe("active");
    expect(p["learn:flag"]!.change.action).toBe("flag");
    expect(after.proposals.find((x) => x.proposalId === p["learn:flag"]!.proposalId)!.written).toEqual([]);
  });

  it("a proposal whose memory moved since the run is refused and nothing is written for it; the others apply", async () => {
    const app = nextApp();
    const { client, old, stale } = await seeded(app);
    const runId = await completedRun(app, [prunePhase, refreshPhase]);
    const p = await byPhase(app, runId);
    // Someone revises the memory the refresh proposal saw at version 1.
    await client.propose({ memoryId: old, title: "Database migrations", body: "Migrations run in CI now." });
    await client.approve(old, { version: 2 });
    const oldSeq = (await ledger.service.handler.load(memoryDecider, app, old)).seq;
    const result = await acceptProposals(review(), { app, runId, actor: RITA });
    const refresh = result.results.find((r) => r.proposalId === p.refresh!.proposalId)!;
    expect(refresh).toMatchObject({ outcome: "refused", error: { code: "conflict", details: { reason: "memory_moved", memoryId: old, expectedVersion: 1, currentVersion: 2 } } });
    expect(result.results.find((r) => r.proposalId === p.prune!.proposalId)).toMatchObject({ outcome: "applied" });
    expect((await ledger.service.handler.load(memoryDecider, app, old)).seq).toBe(oldSeq);
    expect((await ledger.service.handler.load(proposalDecider, app, p.refresh!.proposalId)).state.status).toBe("pending");
    expect(memoryStatus((await ledger.service.handler.load(memoryDecider, app, stale)).state)).toBe("superseded");
  });

  it("an accept that stopped mid-apply is finished by the next accept without writing any memory event twice", async () => {
    const app = nextApp();
    const { dups } = await seeded(app);
    const runId = await completedRun(app, [mergePhase]);
    const [merge] = (await showRun(review(), app, runId)).proposals;
    // A handler that dies on the third memory write (after the merged memory is proposed and approved).
    const real = ledger.service.handler;
    let memoryWrites = 0;
    const dying = new Proxy(real, {
      get(target, prop, receiver) {
        if (prop !== "execute") return Reflect.get(target, prop, receiver);
        return async (...args: Parameters<CommandHandler["execute"]>) => {
          if (args[0] === memoryDecider && ++memoryWrites === 3) throw new Error("killed mid-apply");
          return target.execute(...args);
        };
      },
    }) as CommandHandler;
    await expect(acceptProposals(review({ handler: dying }), { app, runId, actor: RITA })).rejects.toThrow(/killed mid-apply/);
    expect((await real.load(proposalDecider, app, merge!.proposalId)).state.status).toBe("accepted");

    const finished = await acceptProposals(review(), { app, runId, actor: RITA });
    expect(finished.results).toMatchObject([{ proposalId: merge!.proposalId, outcome: "applied" }]);
    const merged = newMemoryIdOf(merge!.proposalId);
    const log = await ledger.client("human:rita", app).log({ limit: 1000 });
    const onMerged = log.filter((e) => e.aggregateId === merged).map((e) => e.type);
    expect(onMerged).toEqual(["memory.proposed", "memory.approved"]);
    for (const id of dups) expect(log.filter((e) => e.aggregateId === id && e.type === "memory.superseded")).toHaveLength(1);
  });

  it("a revert does not overwrite a memory changed after the run applied it: that proposal is refused, the others are reverted, the run stays completed", async () => {
    const app = nextApp();
    const { client, old, stale } = await seeded(app);
    const runId = await completedRun(app, [prunePhase, refreshPhase]);
    const p = await byPhase(app, runId);
    await acceptProposals(review(), { app, runId, actor: RITA });
    expect((await ledger.service.handler.load(memoryDecider, app, old)).state.activeVersion).toBe(2);
    // Someone edits the refreshed memory after the accept.
    await client.propose({ memoryId: old, title: "Database migrations", body: "Migrations run in CI now." });
    await client.approve(old, { version: 3 });
    const oldSeq = (await ledger.service.handler.load(memoryDecider, app, old)).seq;

    const result = await revertRun(review(), { app, runId, actor: RITA, reason: "too eager" });
    expect(result.results.find((r) => r.proposalId === p.refresh!.proposalId)).toMatchObject({ outcome: "refused", error: { details: { reason: "memory_moved", memoryId: old } } });
    expect(result.results.find((r) => r.proposalId === p.prune!.proposalId)).toMatchObject({ outcome: "reverted" });
    expect((await ledger.service.handler.load(memoryDecider, app, old)).seq).toBe(oldSeq);
    expect((await ledger.service.handler.load(memoryDecider, app, old)).state.activeVersion).toBe(3);
    expect(memoryStatus((await ledger.service.handler.load(memoryDecider, app, stale)).state)).toBe("active");
    expect((await showRun(review(), app, runId)).status).toBe("completed");

    // Asked again, the revert still leaves that memory alone: what it should be now is a human's call.
    const again = await revertRun(review(), { app, runId, actor: RITA, reason: "again" });
    expect(again.results.find((r) => r.proposalId === p.refresh!.proposalId)?.outcome).toBe("refused");
  });

  it("the policy says who may accept: an agent is refused by default and nothing is appended; through the command service too", async () => {
    const app = nextApp();
    await seeded(app);
    const runId = await completedRun(app, [prunePhase]);
    const before = await lastSeq(app);
    const refused = await rejectionOf(acceptProposals(review(), { app, runId, actor: AGENT }));
    expect(refused).toMatchObject({ code: "forbidden", details: { verb: "dream" } });
    expect((await rejectionOf(revertRun(review(), { app, runId, actor: AGENT, reason: "x" }))).code).toBe("forbidden");
    const viaService = await rejectionOf(ledger.client("agent-a", app).request("dream_accept", { runId }));
    expect(viaService.code).toBe("forbidden");
    expect(await lastSeq(app)).toBe(before);

    // A human may, through the same door.
    const human = ledger.client("human:rita", app);
    const shown = (await human.request("dream_show", { runId })) as { proposals: { status: string }[] };
    expect(shown.proposals.map((p) => p.status)).toEqual(["pending"]);
    const done = (await human.request("dream_accept", { runId, reason: "fine" })) as { results: { outcome: string }[] };
    expect(done.results.map((r) => r.outcome)).toEqual(["applied"]);
    const listed = (await human.request("dream_list", {})) as { runId: string; status: string }[];
    expect(listed).toMatchObject([{ runId, status: "completed" }]);
  });

  describe("revert", () => {
    let root: string;
    beforeAll(async () => {
      root = await mkdtemp(path.join(tmpdir(), "memledger-dream-"));
    });
    afterAll(async () => {
      await rm(root, { recursive: true, force: true });
    });

    it("after accept and revert, the in-force memories (MEMORY.md entries, their files but the seq field) and search results equal those before the run", async () => {
      const app = nextApp();
      const { client, stale } = await seeded(app);
      const store = ledger.service.store;
      const filesRoot = path.join(root, app, "files");
      const search = searchProjection({ dir: path.join(root, app, "search") });
      const scope = { prefix: ledger.prefix, app, stream: store.names.appStream(app) };
      const runners = [new ProjectionRunner(store, filesProjection({ root: filesRoot }), scope, { batchSize: 50 }), new ProjectionRunner(store, search, scope, { batchSize: 50 })];
      for (const r of runners) await r.start();
      const queries = ["deploy staging", "build project", "migrations", "review change", "unit tests pushing"];
      const snapshot = async () => {
        const seq = await lastSeq(app);
        for (const r of runners) expect(await r.waitFor(seq, 30_000)).toBe(true);
        return inForce(filesRoot, app, queries, (q) => retrieve(search.index(app)!, q, { k: 10, mode: "bm25" }).then((hits) => hits.map((h) => h.memoryId)));
      };
      try {
        const before = await snapshot();
        expect(before.index).toHaveLength(5);

        const runId = await completedRun(app);
        expect(await snapshot()).toEqual(before); // a run alone changes no memory

        const accepted = await acceptProposals(review(), { app, runId, actor: RITA });
        expect(accepted.results.every((r) => r.outcome === "applied")).toBe(true);
        const during = await snapshot();
        expect(during).not.toEqual(before);
        expect(during.index).toHaveLength(4); // stale pruned, two merged into one, one learned

        const reverted = await revertRun(review(), { app, runId, actor: RITA, reason: "too eager" });
        expect(reverted.replayed).toBe(false);
        expect(reverted.results.filter((r) => r.outcome === "reverted")).toHaveLength(5);
        expect(await snapshot()).toEqual(before);
        expect((await showRun(review(), app, runId)).status).toBe("reverted");

        // Reverting again writes nothing; a reverted run's proposals can no longer be decided.
        const seq = await lastSeq(app);
        expect((await revertRun(review(), { app, runId, actor: RITA, reason: "again" })).replayed).toBe(true);
        expect(await lastSeq(app)).toBe(seq);
        expect((await rejectionOf(acceptProposals(review(), { app, runId, actor: RITA }))).details.reason).toBe("run_reverted");
        // A reinstated memory is an ordinary one again: it can be revised as usual.
        const revised = await client.propose({ memoryId: stale, title: "Old build script", body: "Run make build; make all is gone." });
        expect(revised.version).toBe(2);
      } finally {
        for (const r of runners) await r.stop();
      }
    });
  });
});

/**
 * What is in force, as an agent sees it: MEMORY.md's entry lines (as a set: the order is by recency, which
 * a revert's compensating events change), each listed file with its `seq:` front-matter line removed (the
 * stream sequence of its last event, which compensating events move), and the ids, in order, of the BM25
 * search results for each query.
 */
async function inForce(filesRoot: string, app: string, queries: string[], search: (q: string) => Promise<string[]>) {
  const appDir = path.join(filesRoot, app);
  const index = (await readFile(path.join(appDir, "MEMORY.md"), "utf8")).split("\n").filter((l) => l.startsWith("- [")).sort();
  const files: Record<string, string> = {};
  for (const line of index) {
    const file = /\]\(([^)]+)\)/.exec(line)![1]!;
    files[file] = (await readFile(path.join(appDir, file), "utf8")).replace(/^seq: \d+\n/m, "");
  }
  const results: Record<string, string[]> = {};
  for (const q of queries) results[q] = await search(q);
  return { index, files, results };
}
