import { spawn } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLedger, NATS_URL, type Ledger } from "../support/env.js";
import { approvedMemory, dreamEvents, typesOf } from "./dream-support.js";

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), "dream-child.mjs");

/**
 * Kill the dreaming process (SIGKILL) at each durable point of a run, start it again, and check that it
 * resumes at the next step: one run, each step once and in order, no proposal written twice.
 */
describe("consolidation runner killed at each step", () => {
  let ledger: Ledger;
  let n = 0;

  beforeAll(async () => {
    ledger = await startLedger();
  });
  afterAll(async () => {
    await ledger.cleanup();
  });

  /** Runs the child; with `pauseAt`, waits until it pauses there and kills it. Resolves to its stdout JSON, or null when killed. */
  async function child(app: string, pauseAt?: string): Promise<Record<string, unknown> | null> {
    const proc = spawn(process.execPath, [CHILD, ledger.prefix, app], {
      env: { ...process.env, NATS_URL, ...(pauseAt ? { MEMLEDGER_DREAM_PAUSE_AT: pauseAt } : {}) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    proc.stdout.on("data", (d) => (stdout += d));
    const exited = once(proc, "exit");
    if (pauseAt) {
      await new Promise<void>((resolve, reject) => {
        proc.stderr.on("data", (d) => {
          stderr += d;
          if (stderr.includes(`paused at ${pauseAt}`)) resolve();
        });
        void exited.then(() => reject(new Error(`child exited before pausing at ${pauseAt}: ${stderr}`)));
      });
      proc.kill("SIGKILL");
      await exited;
      return null;
    }
    proc.stderr.on("data", (d) => (stderr += d));
    const [code] = await exited;
    expect(code, stderr).toBe(0);
    return JSON.parse(stdout.trim()) as Record<string, unknown>;
  }

  const points = ["started", "proposal:prune:1", "proposal:prune:2", "step:prune", "proposal:merge:1", "step:merge"];
  for (const point of points) {
    it(`killed after ${point}: the next start resumes the same run at its next step and writes no proposal twice`, async () => {
      const app = `kill${++n}`;
      const client = ledger.client("agent-a", app);
      await approvedMemory(client, "Old script", "make build", ["stale"]);
      await approvedMemory(client, "Older script", "make all", ["stale"]);
      await approvedMemory(client, "Deploy", "scripts/deploy.sh", ["dup"]);
      await approvedMemory(client, "Deploying", "use scripts/deploy.sh", ["dup"]);

      expect(await child(app, point)).toBeNull();
      const killed = await dreamEvents(ledger.service.store, app);
      expect(typesOf(killed.runs)).not.toContain("run.completed");
      const runId = killed.runs[0]!.event.aggregateId;

      const result = await child(app);
      expect(result).toMatchObject({ status: "completed", runId, resumed: true, counts: { prune: 2, merge: 1 } });
      const { runs, proposals } = await dreamEvents(ledger.service.store, app);
      expect(typesOf(runs)).toEqual(["run.started", "run.step_completed", "run.step_completed", "run.completed"]);
      expect(runs.map((e) => (e.event.data as { phase?: string }).phase ?? null)).toEqual([null, "prune", "merge", null]);
      expect(new Set(runs.map((e) => e.event.aggregateId))).toEqual(new Set([runId]));
      expect(typesOf(proposals)).toEqual(["proposal.made", "proposal.made", "proposal.made"]);
      expect(new Set(proposals.map((p) => p.event.aggregateId)).size).toBe(3);
    });
  }

  it("killed after completing (before releasing its lock): the run is complete and the next runner starts a new one after the lock lapses", async () => {
    const app = `kill${++n}`;
    const client = ledger.client("agent-a", app);
    await approvedMemory(client, "Old script", "make build", ["stale"]);
    expect(await child(app, "completed")).toBeNull();
    const first = await dreamEvents(ledger.service.store, app);
    expect(typesOf(first.runs)).toEqual(["run.started", "run.step_completed", "run.step_completed", "run.completed"]);
    const result = await child(app);
    expect(result).toMatchObject({ status: "completed", resumed: false });
    expect(result!.runId).not.toBe(first.runs[0]!.event.aggregateId);
  });
});
