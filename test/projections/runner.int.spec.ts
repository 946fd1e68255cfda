import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { EventStore } from "../../services/event-store.js";
import { ProjectionRunner, readStatuses, rebuildProjection } from "../../services/projection-runner.js";
import type { ProjectionScope } from "../../projections/projection.js";
import { startLedger, type Ledger } from "../support/env.js";
import { newDisk, recordingProjection, type RecordingDisk } from "../support/recording-projection.js";
import { until as untilHolds } from "../support/eventually.js";

const until = (check: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000) => untilHolds(what, check, timeoutMs, 20);

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("projection runner", () => {
  let ledger: Ledger;
  let store: EventStore;
  let scope: ProjectionScope;
  let disk: RecordingDisk;
  const runners: ProjectionRunner[] = [];

  const propose = async (n: number) => {
    const client = ledger.client("agent-p");
    let last = 0;
    for (let i = 0; i < n; i++) last = (await client.propose({ title: `note ${i}`, body: `body ${i}` })).seq;
    return last;
  };

  const runner = (definition = recordingProjection(disk), options = {}) => {
    const r = new ProjectionRunner(store, definition, scope, {
      batchSize: 7,
      onError: (err) => process.env.DEBUG_RUNNER && console.error(err),
      ...options,
    });
    runners.push(r);
    return r;
  };

  beforeEach(async () => {
    ledger = await startLedger();
    store = ledger.service.store;
    await propose(1);
    scope = { prefix: ledger.prefix, app: ledger.app, stream: store.names.appStream(ledger.app) };
    disk = newDisk();
  });

  afterEach(async () => {
    for (const r of runners.splice(0)) await r.stop();
    await store.jsm.streams.delete(`KV_${ledger.prefix}_projections`).catch(() => undefined);
    await ledger.cleanup();
  });

  it("applies every event once, and a restart resumes from the checkpoint without repeats", async () => {
    const first = runner();
    await first.start();
    const last = await propose(30);
    expect(await first.waitFor(last)).toBe(true);
    await first.stop();

    const more = await propose(10);
    const second = runner();
    await second.start();
    expect(await second.waitFor(more)).toBe(true);
    expect(disk.generations.get(disk.current)!.applied).toEqual(range(1, more));
  });

  it("resumes from the target's checkpoint even when the consumer acked further (read model restored from an older snapshot)", async () => {
    const first = runner();
    await first.start();
    const last = await propose(20);
    await first.waitFor(last);
    await first.stop();
    // The read model loses its last commits (as if restored from an older snapshot).
    const durable = disk.generations.get(disk.current)!;
    durable.seq = 5;
    durable.applied = range(1, 5);

    const second = runner();
    await second.start();
    expect(await second.waitFor(last)).toBe(true);
    expect(durable.applied).toEqual(range(1, last));
  });

  it("blocks loudly on a poison event, never checkpoints past it, and continues once it applies", async () => {
    let poisoned = true;
    const definition = recordingProjection(disk, (e) => poisoned && e.seq === 9);
    const r = runner(definition);
    await r.start();
    const last = await propose(15);
    await until(async () => (await readStatuses(store)).some((s) => s.blocked?.seq === 9), "blocked status");
    expect(r.checkpoint).toBe(8);
    const status = (await readStatuses(store)).find((s) => s.projection === "recording")!;
    expect(status.blocked).toMatchObject({ seq: 9 });
    expect(status.blocked!.error).toMatch(/cannot apply seq 9/);
    expect(status.lag).toBeGreaterThan(0);

    poisoned = false; // the operator fixed the cause (e.g. deployed an upcaster)
    expect(await r.waitFor(last)).toBe(true);
    expect(disk.generations.get(disk.current)!.applied).toEqual(range(1, last));
    await until(async () => (await readStatuses(store)).some((s) => s.blocked === null && s.checkpoint === last), "unblocked status");
  });

  it("a rebuild while agents keep writing ends caught up, and the live runner continues on the new generation with nothing missed", async () => {
    const live = runner();
    await live.start();
    await propose(40);
    const writing = propose(40);
    const rebuilt = await rebuildProjection(store, recordingProjection(disk), scope, { batchSize: 5 });
    const last = await writing;
    expect(rebuilt.seq).toBeGreaterThan(0);
    expect(disk.generations.size).toBe(1);
    expect(await live.waitFor(last)).toBe(true);
    const applied = disk.generations.get(disk.current)!.applied;
    expect(applied).toEqual(range(1, last));
  });
});
