/**
 * `npm run bench -- dream-review`: the write side of consolidation on the real NATS, one run of `--proposals`
 * supersede proposals (a deterministic test phase over as many approved memories):
 *
 *   run      a run that writes every proposal (run.started, N × proposal.made, step, completed)
 *   resume   the same run resumed after it stopped at its last proposal: N-1 proposals replay (derived
 *            ids, found applied), one is written, then the step and the completion
 *   accept   accepting all N (proposal.accepted, memory.superseded, proposal.applied each)
 *   revert   reverting the run (memory.reinstated, proposal.reverted each, run.reverted)
 *
 * Figures are per proposal, and resume against run within the same process and server.
 */
import { performance } from "node:perf_hooks";
import { memoryDecider, memoryStatus } from "../commands/memory.js";
import { naming } from "../events/subjects.js";
import type { Actor } from "../schemas/primitives.js";
import { CommandHandler, newAggregateId } from "../services/command-handler.js";
import type { Phase } from "../services/dream/phase.js";
import { acceptProposals, revertRun } from "../services/dream/review.js";
import { runDream } from "../services/dream/runner.js";
import { EventStore } from "../services/event-store.js";
import { connectNats } from "../services/nats.js";
import { benchPrefix, deleteStreamsWithPrefix, fmt, intOption, table, type BenchArgs, type Benchmark } from "./util.js";

const prune: Phase = {
  name: "prune",
  async propose({ view }) {
    return [...view.memories]
      .filter(([, m]) => memoryStatus(m.state) === "active")
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([id, m]) => {
        const ref = { memoryId: id, version: m.state.activeVersion! };
        return { key: id, change: { action: "supersede" as const, memory: ref }, evidence: { sessions: [], transcripts: [], memories: [ref], counts: {}, prevalence: null, scores: {}, summary: "bench" }, reason: "bench" };
      });
  },
};

export const dreamReviewBenchmark: Benchmark = {
  name: "dream-review",
  summary: "consolidation's write side: a run, its resume, accept all, revert (per proposal)",
  usage: "[--proposals 500]",
  async run(args: BenchArgs): Promise<number> {
    const n = intOption(args, "proposals", 500);
    const prefix = benchPrefix("dreamrev");
    const app = "bench";
    const nc = await connectNats({ name: `bench-${prefix}` });
    try {
      const store = await EventStore.open(nc, naming(prefix));
      const handler = new CommandHandler(store);
      const agent: Actor = { kind: "agent", id: "bench" };
      for (let i = 0; i < n; i++) {
        const id = newAggregateId();
        await handler.execute(memoryDecider, id, { type: "propose", revision: false, title: `Memory ${i}`, body: `Body ${i}.`, kind: "note", tags: [], paths: [], importance: 3 }, { app, actor: agent }, { isNew: true });
        await handler.execute(memoryDecider, id, { type: "approve", version: 1 }, { app, actor: agent });
      }
      const deps = { nc, store, handler, lock: { ttlMs: 10_000 } };
      const rows: (string | number)[][] = [];
      const time = async <T>(label: string, events: number, work: () => Promise<T>): Promise<T> => {
        const t0 = performance.now();
        const out = await work();
        const ms = performance.now() - t0;
        rows.push([label, n, fmt(ms, 0), fmt((ms * 1000) / n, 0), events]);
        return out;
      };

      await time("run (fresh)", n + 3, () => runDream(deps, { app, phases: [prune], force: true }));
      // A second run stopped at its last proposal, then resumed: N-1 replays.
      const stopAt = `proposal:prune:${n}`;
      await runDream({ ...deps, pauseAt: async (p) => {
            if (p === stopAt) throw new Error("stop");
          } }, { app, phases: [prune], force: true }).catch(() => undefined);
      const resumed = await time("resume (N-1 replayed)", 3, () => runDream(deps, { app, phases: [prune], force: true }));
      if (resumed.status !== "completed" || !resumed.resumed) throw new Error("expected a resumed run");
      const human: Actor = { kind: "human", id: "bench" };
      const accepted = await time("accept all", 3 * n, () => acceptProposals({ store, handler }, { app, runId: resumed.runId, actor: human }));
      if (accepted.results.some((r) => r.outcome !== "applied")) throw new Error("an accept was refused");
      await time("revert", 2 * n + 1, () => revertRun({ store, handler }, { app, runId: resumed.runId, actor: human, reason: "bench" }));
      console.log(table(["step", "proposals", "total ms", "µs per proposal", "events appended"], rows));
      return 0;
    } finally {
      await deleteStreamsWithPrefix(nc, prefix).catch(() => undefined);
      await nc.close();
    }
  },
};
