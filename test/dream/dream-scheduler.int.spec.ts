import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dreamComponent } from "../../services/dream/scheduler.js";
import { dreamSettings } from "../../services/dream/runner.js";
import { PHASES } from "../../services/dream/phases/index.js";
import type { RunningComponent } from "../../services/runtime.js";
import { startLedger, type Ledger } from "../support/env.js";
import { eventually } from "../support/eventually.js";
import { approvedMemory, dreamEvents, endSessions, typesOf } from "./dream-support.js";

/** The scheduled dream inside `up`: runs an app once its gates open; two instances run it once. */
describe("scheduled consolidation (up component)", () => {
  let ledger: Ledger;
  beforeAll(async () => {
    ledger = await startLedger({ app: "sched" });
  });
  afterAll(async () => {
    await ledger.cleanup();
  });

  it("two instances check the gates every interval; when they open, exactly one run happens", async () => {
    const app = "sched";
    const client = ledger.client("agent-a", app);
    await approvedMemory(client, "A note", "Nothing to prune here.");
    const errors: unknown[] = [];
    const settings = dreamSettings({ minSessionsSinceLastRun: 2, minHoursSinceLastRun: 24 });
    const components: RunningComponent[] = [];
    // Only the real prune phase (registered by services/dream/phases/prune.ts), so the test does not depend on the others.
    const prune = PHASES.prune!;
    expect(prune.name).toBe("prune");
    try {
      for (const holder of ["instance-1", "instance-2"]) {
        components.push(
          await dreamComponent({ intervalMs: 200, settings, lockTtlMs: 2000, holder, phases: [prune] }).start({
            nc: ledger.nc,
            prefix: ledger.prefix,
            replicas: 1,
            onError: (err) => errors.push(err),
          }),
        );
      }
      await new Promise((r) => setTimeout(r, 600));
      expect((await dreamEvents(ledger.service.store, app)).runs).toEqual([]); // gates closed: nothing
      await endSessions(client, 2);
      await eventually("a run completed", async () => {
        const { runs } = await dreamEvents(ledger.service.store, app);
        return typesOf(runs).includes("run.completed") ? true : undefined;
      }, 30_000);
      await new Promise((r) => setTimeout(r, 800)); // more rounds of both instances
      const { runs } = await dreamEvents(ledger.service.store, app);
      expect(typesOf(runs).filter((t) => t === "run.started")).toHaveLength(1);
      expect(errors).toEqual([]);
    } finally {
      for (const c of components) await c.stop();
    }
  });
});
