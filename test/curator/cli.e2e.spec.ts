import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { MemoryPromotionAccepted } from "../../schemas/events.js";
import { run } from "../../services/cli/program.js";
import type { Io } from "../../services/cli/io.js";
import { NATS_URL, startLedger, type Ledger } from "../support/env.js";
import { decisionOf, startCurator, stopCurator, storeFor } from "./support.js";

function memoryIo(env: NodeJS.ProcessEnv): Io & { out: () => string; err: () => string } {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  stdout.on("data", (c) => (out += String(c)));
  stderr.on("data", (c) => (err += String(c)));
  return { stdout, stderr, stdin: Readable.from([]), env, out: () => out, err: () => err };
}

/** `memledger promote` and `memledger org search` in-process, against real NATS and a running curator. */
describe("org commands of the CLI", () => {
  let ledger: Ledger;
  let dataDir: string;
  beforeEach(async () => {
    ledger = await startLedger({ app: "shop" });
    dataDir = await mkdtemp(join(tmpdir(), "memledger-org-cli-"));
  });
  afterEach(async () => {
    await ledger.cleanup();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("promotes with `promote ID --reason`, and finds the org memory with `org search` but not an app-only one", async () => {
    const curator = await startCurator(ledger.prefix, { policy: { autoApprove: true } });
    try {
      const env = { MEMLEDGER_DATA: dataDir, NATS_URL };
      const g = ["--prefix", ledger.prefix, "--app", ledger.app, "--as", "agent-a", "--json"];
      const agent = ledger.client("agent-a");
      const { memoryId } = await agent.propose({ scope: "app", title: "Webhook handlers must be idempotent", body: "Providers retry webhook deliveries; store the event id before acting." });
      const appOnly = await agent.propose({ scope: "app", title: "Webhook retries in staging", body: "Staging webhook deliveries are retried too." });
      await ledger.client("human:alice").approve(memoryId);
      await ledger.client("human:alice").approve(appOnly.memoryId);

      const promoteIo = memoryIo(env);
      expect(await run([...g, "promote", memoryId, "--reason", "holds everywhere"], promoteIo)).toBe(0);
      const promoted = JSON.parse(promoteIo.out()) as { promotionId: string };
      const store = await storeFor(ledger.nc, ledger.prefix);
      const accepted = (await decisionOf(store, ledger.app, promoted.promotionId)).event as MemoryPromotionAccepted;

      const searchIo = memoryIo(env);
      expect(await run([...g, "org", "search", "webhook", "--mode", "bm25"], searchIo)).toBe(0);
      const hits = searchIo.out().trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as { memoryId: string; origin: string });
      expect(hits.map((h) => h.memoryId)).toEqual([accepted.data.orgMemoryId]);
      expect(hits[0]!.origin).toBe("org");

      // Promoting the same version again: conflict, exit 3.
      const againIo = memoryIo(env);
      expect(await run([...g, "promote", memoryId], againIo)).toBe(3);
    } finally {
      await stopCurator(curator);
    }
  });
});
