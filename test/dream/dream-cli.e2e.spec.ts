import { existsSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DreamLock } from "../../services/dream/lock.js";
import { runDream } from "../../services/dream/runner.js";
import { startLedger, type Ledger } from "../support/env.js";
import { CLI, cli, jsonLine } from "../cli/support.js";
import { approvedMemory, endSessions, mergePhase, prunePhase } from "./dream-support.js";

/** `memledger dream` from the built CLI, against a real NATS and a command service on a private prefix. */
describe("memledger dream (CLI)", () => {
  let ledger: Ledger;
  const app = "dreamcli";
  let g: string[];
  const lastSeq = () => ledger.service.store.lastSeq(ledger.service.store.names.appStream(app));

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first (npm run build)`);
    ledger = await startLedger({ app });
    g = ["--prefix", ledger.prefix, "--app", app, "--json"];
    const client = ledger.client("agent-a", app);
    await approvedMemory(client, "Old build script", "Run make build.", ["stale"]);
    await approvedMemory(client, "Deploy with the script", "Run scripts/deploy.sh.", ["dup"]);
    await approvedMemory(client, "Deploying", "Use scripts/deploy.sh.", ["dup"]);
  });
  afterAll(async () => {
    await ledger.cleanup();
  });

  it("a scheduled run behind closed gates appends nothing; --dry-run appends nothing; --force runs (prune only)", async () => {
    const before = await lastSeq();
    const gated = jsonLine(await cli([...g, "dream"]));
    expect(gated).toMatchObject({ status: "gated", gates: { open: false, sessionsSince: 0 } });
    const dry = jsonLine(await cli([...g, "dream", "run", "--force", "--dry-run", "--phases", "prune"]));
    expect(dry).toMatchObject({ status: "dry_run", asOfSeq: before });
    expect(await lastSeq()).toBe(before);
    await endSessions(ledger.client("agent-a", app), 2);
    const opened = jsonLine(await cli([...g, "dream", "--min-sessions", "2", "--phases", "prune"]));
    expect(opened).toMatchObject({ status: "completed", resumed: false, counts: { prune: 0 } });
    const listed = jsonLine(await cli([...g, "dream", "list"]));
    expect(listed).toMatchObject([{ runId: opened.runId, status: "completed" }]);
  });

  it("exits 3 with lock_held while another runner holds the app's lock, appending nothing", async () => {
    const lock = await DreamLock.acquire(ledger.nc, ledger.service.store.names, app, "other-runner", { ttlMs: 5000 });
    try {
      const before = await lastSeq();
      const ran = await cli([...g, "dream", "--force", "--phases", "prune"]);
      expect(ran.code, ran.stderr).toBe(3);
      expect(JSON.parse(ran.stderr)).toMatchObject({ ok: false, error: { code: "conflict", details: { reason: "lock_held", holder: "other-runner" } } });
      expect(await lastSeq()).toBe(before);
    } finally {
      await lock.release();
    }
  });

  it("show, accept (refused for an agent, exit 4), reject and revert through the command service", async () => {
    const run = await runDream({ nc: ledger.nc, store: ledger.service.store }, { app, phases: [prunePhase, mergePhase], force: true });
    if (run.status !== "completed") throw new Error(run.status);
    const shown = jsonLine(await cli([...g, "dream", "show", run.runId]));
    expect(shown.proposals.map((p: { phase: string; status: string }) => [p.phase, p.status])).toEqual([
      ["prune", "pending"],
      ["merge", "pending"],
    ]);
    const [prune, merge] = shown.proposals as { proposalId: string }[];

    const before = await lastSeq();
    const refused = await cli([...g, "--as", "agent-x", "dream", "accept", run.runId]);
    expect(refused.code, refused.stderr).toBe(4);
    expect(await lastSeq()).toBe(before);

    const accepted = jsonLine(await cli([...g, "--as", "human:rita", "dream", "accept", run.runId, prune!.proposalId, "--reason", "obsolete"]));
    expect(accepted.results).toMatchObject([{ proposalId: prune!.proposalId, outcome: "applied" }]);
    const noReason = await cli([...g, "--as", "human:rita", "dream", "reject", run.runId]);
    expect(noReason.code).toBe(2);
    const rejected = jsonLine(await cli([...g, "--as", "human:rita", "dream", "reject", run.runId, merge!.proposalId, "--reason", "keep both"]));
    expect(rejected.results).toMatchObject([{ outcome: "rejected" }]);
    // Accepting a rejected proposal is refused: exit 3, the reply still lists it.
    const again = await cli([...g, "--as", "human:rita", "dream", "accept", run.runId, merge!.proposalId]);
    expect(again.code).toBe(3);
    expect(JSON.parse(again.stdout).results).toMatchObject([{ outcome: "refused", error: { details: { reason: "already_decided" } } }]);

    const reverted = jsonLine(await cli([...g, "--as", "human:rita", "dream", "revert", run.runId, "--reason", "too eager"]));
    expect(reverted.results).toMatchObject([{ proposalId: prune!.proposalId, outcome: "reverted" }]);
    expect(jsonLine(await cli([...g, "dream", "show", run.runId])).status).toBe("reverted");
  });
});
