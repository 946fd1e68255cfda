import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runDream, proposalIdOf, type DreamDeps } from "../../services/dream/runner.js";
import { DreamLock } from "../../services/dream/lock.js";
import { startLedger, type Ledger } from "../support/env.js";
import { rejectionOf } from "../ledger/support.js";
import { TEST_PHASES, approvedMemory, blockingPhase, dreamEvents, endSessions, mergePhase, prunePhase, typesOf } from "./dream-support.js";
import type { MemoryClient } from "../../services/client.js";

/** Real NATS: the gates, the lock, dry runs, resuming a run that stopped mid-step, the signal. */
describe("consolidation runner", () => {
  let ledger: Ledger;
  let n = 0;
  const nextApp = () => `dream${++n}`;
  const deps = (extra: Partial<DreamDeps> = {}): DreamDeps => ({ nc: ledger.nc, store: ledger.service.store, lock: { ttlMs: 1500 }, ...extra });

  beforeAll(async () => {
    ledger = await startLedger();
  });
  afterAll(async () => {
    await ledger.cleanup();
  });

  async function seeded(app: string): Promise<{ client: MemoryClient; stale: string; dups: string[] }> {
    const client = ledger.client("agent-a", app);
    const stale = await approvedMemory(client, "Old build script", "Run make build.", ["stale"]);
    const dups = [await approvedMemory(client, "Deploy with the script", "Run scripts/deploy.sh.", ["dup"]), await approvedMemory(client, "Deploying", "Use scripts/deploy.sh to deploy.", ["dup"])];
    await approvedMemory(client, "Code review", "Every change needs one approving review.");
    return { client, stale, dups };
  }

  it("gates a scheduled run on sessions ended since the last run and on the time since it; --force skips both", async () => {
    const app = nextApp();
    const { client } = await seeded(app);
    const settings = { minSessionsSinceLastRun: 2, minHoursSinceLastRun: 24 };
    const store = ledger.service.store;
    const before = await store.lastSeq(store.names.appStream(app));

    const gated = await runDream(deps(), { app, phases: [prunePhase], settings });
    expect(gated.status).toBe("gated");
    if (gated.status === "gated") expect(gated.gates).toMatchObject({ open: false, sessionsSince: 0, lastRunId: null });
    expect(await store.lastSeq(store.names.appStream(app))).toBe(before); // a closed gate appends nothing

    await endSessions(client, 2);
    const first = await runDream(deps(), { app, phases: [prunePhase], settings });
    expect(first.status).toBe("completed");

    // Right after a run: too soon, and no session since.
    await endSessions(client, 2);
    const tooSoon = await runDream(deps(), { app, phases: [prunePhase], settings });
    expect(tooSoon.status).toBe("gated");
    if (tooSoon.status === "gated") {
      expect(tooSoon.gates.sessionsSince).toBe(2);
      expect(tooSoon.gates.closed.join(" ")).toMatch(/less than 24 h/);
    }
    // A day later the time gate opens too.
    const later = () => new Date(Date.now() + 25 * 3_600_000);
    const second = await runDream(deps({ now: later }), { app, phases: [prunePhase], settings });
    expect(second.status).toBe("completed");
    if (second.status === "completed" && first.status === "completed") {
      expect(second.gates).toMatchObject({ lastRunId: first.runId, sessionsSince: 2 });
    }
    // Forced: no gate, and the run records that it was forced.
    const forced = await runDream(deps(), { app, phases: [prunePhase], settings, force: true });
    expect(forced.status).toBe("completed");
    const { runs } = await dreamEvents(store, app);
    const started = runs.filter((e) => e.event.type === "run.started").map((e) => e.event.data as { trigger: unknown; gates: { forced: boolean } });
    expect(started.map((d) => d.gates.forced)).toEqual([false, false, true]);
    expect(started[2]!.trigger).toEqual({ kind: "dream", forced: true });
  });

  it("a run is events: started, one proposal per draft, a step per phase, completed; and a consolidated signal", async () => {
    const app = nextApp();
    const { stale, dups } = await seeded(app);
    const store = ledger.service.store;
    const signals: unknown[] = [];
    const sub = ledger.nc.subscribe(store.names.signal(app, "consolidated"), { callback: (_e, m) => void signals.push(m.json()) });
    await ledger.nc.flush();
    const asOf = await store.lastSeq(store.names.appStream(app));
    const result = await runDream(deps(), { app, phases: TEST_PHASES, force: true });
    expect(result.status).toBe("completed");
    if (result.status !== "completed") return;
    expect(result.asOfSeq).toBe(asOf);
    const { runs, proposals } = await dreamEvents(store, app);
    expect(typesOf(runs)).toEqual(["run.started", "run.step_completed", "run.step_completed", "run.step_completed", "run.step_completed", "run.completed"]);
    expect(typesOf(proposals).every((t) => t === "proposal.made")).toBe(true);
    expect(proposals.map((p) => p.event.aggregateId)).toContain(proposalIdOf(result.runId, "prune", stale));
    expect(proposals.map((p) => p.event.aggregateId)).toContain(proposalIdOf(result.runId, "merge", [...dups].sort().join("+")));
    // Every proposal is caused by the run's start and correlated with the run.
    for (const p of proposals) expect(p.event).toMatchObject({ causationId: runs[0]!.event.id, correlationId: result.runId, actor: { kind: "service", id: "dream" } });
    expect(result.counts).toEqual({ prune: 1, merge: 1, refresh: 0, learn: 2 });
    await until(() => signals.length === 1);
    expect(signals[0]).toEqual({ runId: result.runId, proposals: result.counts });
    sub.unsubscribe();
  });

  it("a phase's report (reindex's MEMORY.md measures) is the step's report line and run.completed's index", async () => {
    const app = nextApp();
    await seeded(app);
    const reindex = {
      name: "reindex" as const,
      async propose() {
        return [];
      },
      report: ({ view }: { view: { memories: ReadonlyMap<string, unknown> } }) => ({ summary: `MEMORY.md lists ${view.memories.size}`, lines: 9, bytes: 400, listed: view.memories.size, withinLimits: true }),
    };
    const result = await runDream(deps(), { app, phases: [prunePhase, reindex], force: true });
    expect(result.status).toBe("completed");
    const { runs } = await dreamEvents(ledger.service.store, app);
    expect(runs.map((e) => e.event.data)).toMatchObject([
      { phases: ["prune", "reindex"] },
      { phase: "prune", report: null },
      { phase: "reindex", report: "MEMORY.md lists 4" },
      { index: { lines: 9, bytes: 400, listed: 4, withinLimits: true } },
    ]);
  });

  it("--dry-run returns the proposals and appends nothing", async () => {
    const app = nextApp();
    await seeded(app);
    const store = ledger.service.store;
    const before = await store.lastSeq(store.names.appStream(app));
    const result = await runDream(deps(), { app, phases: TEST_PHASES, force: true, dryRun: true });
    expect(result.status).toBe("dry_run");
    if (result.status === "dry_run") expect(result.proposals.map((p) => p.phase)).toEqual(["prune", "merge", "learn", "learn"]);
    expect(await store.lastSeq(store.names.appStream(app))).toBe(before);
  });

  it("lock contention: of two runners one runs; the other exits with lock_held, or waits and runs after it", async () => {
    const app = nextApp();
    await seeded(app);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let entered!: () => void;
    const inside = new Promise<void>((resolve) => (entered = resolve));
    const first = runDream(deps(), { app, phases: [blockingPhase("prune", gate, entered)], force: true, holder: "runner-1" });
    await inside; // runner 1 holds the lock and is inside its phase
    const refused = await rejectionOf(runDream(deps(), { app, phases: [prunePhase], force: true, holder: "runner-2" }));
    expect(refused.code).toBe("conflict");
    expect(refused.details).toMatchObject({ reason: "lock_held", holder: "runner-1" });

    const waiting = runDream(deps(), { app, phases: [prunePhase], force: true, holder: "runner-3", wait: true });
    let waited = false;
    void waiting.then(() => (waited = true));
    await new Promise((r) => setTimeout(r, 300));
    expect(waited).toBe(false); // still waiting while runner 1 holds the lock
    release();
    const [a, b] = await Promise.all([first, waiting]);
    expect(a.status).toBe("completed");
    expect(b.status).toBe("completed");
    const { runs } = await dreamEvents(ledger.service.store, app);
    const holders = runs.filter((e) => e.event.type === "run.started").map((e) => (e.event.data as { holder: string }).holder);
    expect(holders).toEqual(["runner-1", "runner-3"]);
  });

  it("a runner that stopped mid-step is resumed at its next step, with the run's asOfSeq, and no proposal is written twice", async () => {
    const app = nextApp();
    const { client } = await seeded(app);
    await approvedMemory(client, "Another stale one", "Obsolete.", ["stale"]);
    const store = ledger.service.store;
    const crash = (at: string) => async (point: string) => {
      if (point === at) throw new Error(`crash at ${point}`);
    };
    await expect(runDream(deps({ pauseAt: crash("proposal:prune:1") }), { app, phases: [prunePhase, mergePhase], force: true })).rejects.toThrow(/crash at proposal:prune:1/);
    // Written since the run started: must not change what the resumed run proposes.
    await approvedMemory(client, "Written after the start", "Not in the run's view.", ["stale"]);
    let events = await dreamEvents(store, app);
    expect(typesOf(events.runs)).toEqual(["run.started"]);
    expect(events.proposals).toHaveLength(1);

    await expect(runDream(deps({ pauseAt: crash("step:prune") }), { app, phases: [prunePhase, mergePhase], force: true })).rejects.toThrow(/crash at step:prune/);
    events = await dreamEvents(store, app);
    expect(typesOf(events.runs)).toEqual(["run.started", "run.step_completed"]);
    expect(events.proposals).toHaveLength(2);

    const resumed = await runDream(deps(), { app, phases: [prunePhase, mergePhase], force: true });
    expect(resumed).toMatchObject({ status: "completed", resumed: true, counts: { prune: 2, merge: 1 } });
    events = await dreamEvents(store, app);
    expect(typesOf(events.runs)).toEqual(["run.started", "run.step_completed", "run.step_completed", "run.completed"]);
    expect(events.proposals).toHaveLength(3);
    expect(new Set(events.proposals.map((p) => p.event.aggregateId)).size).toBe(3);
  });

  it("the lock of a runner that died without releasing it is taken over after its ttl", async () => {
    const app = nextApp();
    const names = ledger.service.store.names;
    const dead = await DreamLock.acquire(ledger.nc, names, app, "dead-runner", { ttlMs: 1000 });
    expect(dead.held()).toBe(true);
    // Simulate a kill: the holder stops renewing and never deletes the key (no release()).
    (dead as unknown as { lease: { stopped: boolean } }).lease.stopped = true;
    const next = await DreamLock.acquire(ledger.nc, names, app, "next-runner", { ttlMs: 1000, wait: true, waitTimeoutMs: 10_000 });
    expect(next.held()).toBe(true);
    await next.release();
  });
});

async function until(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}
