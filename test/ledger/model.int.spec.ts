import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runLedgerProperty } from "../../bench/ledger-model.js";
import { CommandService } from "../../services/command-service.js";
import { connectNats } from "../../services/nats.js";
import { NATS_URL, deleteStreams, uniquePrefix } from "../support/env.js";

/**
 * Model-based property test of the command path (bench/ledger-model.ts): random interleavings of
 * propose, revise, approve, reject, supersede, rollback, claim and release, each through one of two
 * command-service instances with caches of their own (so each often decides on state the other moved),
 * against the real NATS. Every outcome must be the model's, and the log folded by the deciders must
 * equal the model after every run. `npm run bench -- property` runs the same property 10,000 times.
 */
describe("the command path against a model", () => {
  const prefix = uniquePrefix("model");
  const connections: NatsConnection[] = [];
  const instances: CommandService[] = [];

  beforeAll(async () => {
    for (const name of ["a", "b"]) {
      const nc = await connectNats({ servers: NATS_URL, name: `model-${name}-${prefix}` });
      connections.push(nc);
      instances.push(await CommandService.start(nc, { prefix }));
    }
  });

  afterAll(async () => {
    for (const service of instances) await service.stop();
    await deleteStreams(connections[0]!, prefix);
    for (const nc of connections) await nc.close();
  });

  it("1,000 random command sequences across two instances with stale caches: outcomes and the folded log equal the model", async () => {
    const report = await runLedgerProperty({ instances, app: "model", numRuns: 1000, maxCommands: 12 });
    console.log(
      `property: ${report.runs} runs, ${report.commands} commands (${report.refused} refused) in ${(report.ms / 1000).toFixed(1)} s`,
    );
    expect(report.runs).toBe(1000);
    // The runs did exercise both sides: accepted commands and refusals.
    expect(report.refused).toBeGreaterThan(report.commands / 10);
    expect(report.refused).toBeLessThan(report.commands * 0.9);
  }, 120_000);
});
