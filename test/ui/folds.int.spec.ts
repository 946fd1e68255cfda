import seedrandom from "seedrandom";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runDream } from "../../services/dream/runner.js";
import { UiLedger } from "../../services/ui/ledger.js";
import { startLedger, type Ledger } from "../support/env.js";
import { prunePhase } from "../dream/dream-support.js";

/**
 * The review page folds an app's log once and then only what is new (services/ui/folds.ts). Whatever
 * happened in between, a page that has been answering for a while must show what a page opened now
 * shows, which folds the whole log.
 */
describe("review page: the queue and the runs, folded between requests", () => {
  const app = "foldapp";
  const alice = { kind: "human", id: "alice" } as const;
  let ledger: Ledger;

  beforeAll(async () => {
    ledger = await startLedger({ app });
  });
  afterAll(async () => {
    await ledger.cleanup();
  });

  const page = () => new UiLedger(ledger.nc, ledger.service.store, alice, ledger.prefix);

  it("after every round of changes, a long-lived page's queue and runs equal a new page's; what it returned before does not change", async () => {
    const random = seedrandom("folds");
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    const agent = ledger.client("agent-a");
    const human = ledger.client("human:alice");
    const pending = new Set<string>();
    const active = new Set<string>();
    const longLived = page();
    let earlier: { runs: unknown; snapshot: string } | undefined;
    let runId: string | undefined;
    let n = 0;

    for (let round = 0; round < 6; round++) {
      for (let k = 0; k < 10; k++) {
        const roll = random();
        const unrevised = [...active].filter((id) => !pending.has(id));
        if (roll < 0.35 || (pending.size === 0 && active.size === 0)) {
          const { memoryId } = await agent.propose({ title: `Memory ${++n}`, body: `Body ${n}.`, tags: ["kept"] });
          pending.add(memoryId);
        } else if (roll < 0.6 && pending.size > 0) {
          const id = pick([...pending]);
          await human.approve(id);
          pending.delete(id);
          active.add(id);
        } else if (roll < 0.7 && pending.size > 0) {
          const id = pick([...pending]);
          await human.reject(id, "not accurate");
          pending.delete(id);
        } else if (roll < 0.85 && unrevised.length > 0) {
          const id = pick(unrevised);
          await agent.propose({ memoryId: id, title: `Memory ${id.slice(-4)} revised ${++n}`, body: `Revised ${n}.`, tags: ["kept"] });
          pending.add(id);
        } else if (active.size > 0) {
          // Superseded with a version still pending: it leaves the queue.
          const id = pick([...active]);
          await human.supersede(id, "replaced");
          active.delete(id);
          pending.delete(id);
        }
      }
      if (round === 2) {
        // What the run prunes stays out of the random changes above (the run supersedes and reinstates it).
        for (let i = 0; i < 3; i++) {
          const { memoryId } = await agent.propose({ title: `Stale ${i}`, body: "Run make build.", tags: ["stale"] });
          await human.approve(memoryId);
        }
        const run = await runDream({ nc: ledger.nc, store: ledger.service.store }, { app, phases: [prunePhase], force: true });
        if (run.status !== "completed") throw new Error(`the run did not complete: ${run.status}`);
        runId = run.runId;
      }
      if (round === 3 && runId) await human.request("dream_accept", { runId, proposalIds: [] });
      if (round === 4 && runId) await human.request("dream_revert", { runId, reason: "too eager" });

      const queue = await longLived.queue(app, 1000);
      const runs = await longLived.runs(app);
      const opened = page();
      expect(queue).toEqual(await opened.queue(app, 1000));
      expect(runs).toEqual(await opened.runs(app));
      expect(queue.total).toBe([...pending].length);
      // The oldest proposal first, each pending version once.
      const keys = queue.items.map((item) => `${item.memoryId}@${item.pending.version}`);
      expect(new Set(keys).size).toBe(keys.length);
      expect(queue.items.map((item) => item.pending.proposedAt)).toEqual(queue.items.map((item) => item.pending.proposedAt).sort());

      // Runs returned by an earlier request are the caller's: later folds do not change them.
      if (earlier) expect(JSON.stringify(earlier.runs)).toBe(earlier.snapshot);
      if (runs.length > 0) earlier = { runs, snapshot: JSON.stringify(runs) };
    }
    // The run was made, accepted and reverted on the way, and the page saw each step.
    const [run] = await longLived.runs(app);
    expect(run).toMatchObject({ runId, status: "reverted", revertReason: "too eager" });
    expect(run!.proposals).toHaveLength(3);
    expect(run!.proposals.every((p) => p.status === "reverted")).toBe(true);
  }, 120_000);
});
