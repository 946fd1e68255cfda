import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { EventStore } from "../../services/event-store.js";
import { ProjectionRunner, readStatuses, rebuildProjection } from "../../services/projection-runner.js";
import { mkdtemp, readlink, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { filesProjection, readMemoryIndex } from "../../projections/files/index.js";
import type { ProjectionDefinition, ProjectionScope } from "../../projections/projection.js";
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

  describe("catching up by rebuild (a definition with catchUpByRebuild, RunnerOptions.rebuildWhenBehind)", () => {
    const rebuilding = (definition = recordingProjection(disk)): ProjectionDefinition => ({ ...definition, catchUpByRebuild: true });

    it("far behind, it rebuilds into a new generation, promotes it, and continues live from there: every event once", async () => {
      const last = await propose(60);
      const errors: unknown[] = [];
      const r = runner(rebuilding(), { rebuildWhenBehind: 20, onError: (err: unknown) => errors.push(err) });
      await r.start();
      expect(await r.waitFor(last)).toBe(true);
      expect(disk.current).toBe("g2");
      expect(disk.generations.has("g1")).toBe(false);
      expect(disk.generations.get("g2")!.applied).toEqual(range(1, last));
      const more = await propose(5);
      expect(await r.waitFor(more)).toBe(true);
      expect(disk.generations.get("g2")!.applied).toEqual(range(1, more));
      expect(errors).toEqual([]);
    });

    it("a little behind (under the threshold, or under a tenth of the stream), or without catchUpByRebuild, it catches up live", async () => {
      const first = runner(rebuilding(), { rebuildWhenBehind: 20 });
      await first.start();
      const last = await propose(30);
      expect(await first.waitFor(last)).toBe(true);
      await first.stop();
      /** Starts a runner, waits for `seq`, and checks it stayed on the live generation. */
      const caughtUpLive = async (definition: ProjectionDefinition, rebuildWhenBehind: number, seq: number) => {
        const r = runner(definition, { rebuildWhenBehind });
        await r.start();
        expect(await r.waitFor(seq)).toBe(true);
        expect(disk.current).toBe("g1");
        await r.stop();
      };
      // Behind by 25 of 56 (more than a tenth), under a threshold of 30: live.
      await caughtUpLive(rebuilding(), 30, await propose(25));
      // Behind by 5 of 61, over the threshold of 2 but under a tenth of the stream: live.
      const few = await propose(5);
      await caughtUpLive(rebuilding(), 2, few);
      // Far behind, but the definition does not catch up by rebuild.
      disk.generations.set("g1", { seq: 0, applied: [] });
      await caughtUpLive(recordingProjection(disk), 2, few);
      expect(disk.generations.get("g1")!.applied).toEqual(range(1, few));
    });

    it("stopped in the middle of its rebuild, it promotes nothing; the next start rebuilds again", async () => {
      const last = await propose(40);
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      let entered!: () => void;
      const inRebuild = new Promise<void>((resolve) => (entered = resolve));
      const base = recordingProjection(disk);
      // The fresh target's first batch waits at the gate: the rebuild is under way when stop() comes.
      const slow: ProjectionDefinition = {
        ...base,
        catchUpByRebuild: true,
        async openFresh(scope) {
          const target = await base.openFresh(scope);
          const apply = target.apply.bind(target);
          return Object.assign(target, {
            async apply(events: Parameters<typeof apply>[0]) {
              entered();
              await gate;
              return apply(events);
            },
          });
        },
      };
      const r = runner(slow, { rebuildWhenBehind: 10, batchSize: 10 });
      await r.start();
      await inRebuild;
      const stopped = r.stop();
      release();
      await stopped;
      expect(disk.current).toBe("g1");
      expect(disk.generations.get("g1")!.applied).toEqual([]);

      const again = runner(rebuilding(), { rebuildWhenBehind: 10 });
      await again.start();
      expect(await again.waitFor(last)).toBe(true);
      expect(disk.current).not.toBe("g1");
      expect(disk.generations.get(disk.current)!.applied).toEqual(range(1, last));
    });

    it("a rebuild that fails is reported and the runner catches up live instead, blocking loudly on the bad event as before", async () => {
      const last = await propose(40);
      const errors: unknown[] = [];
      const r = runner(rebuilding(recordingProjection(disk, (e) => e.seq === 30)), { rebuildWhenBehind: 10, onError: (err: unknown) => errors.push(err) });
      await r.start();
      await until(async () => (await readStatuses(store)).some((s) => s.blocked?.seq === 30), "blocked at 30");
      expect(disk.current).toBe("g1");
      expect(disk.generations.get("g1")!.applied).toEqual(range(1, 29));
      expect(String(errors[0])).toMatch(/cannot apply seq 30/);
      expect(last).toBeGreaterThan(30);
    });

    it("the files projection catches up by rebuild: a new generation, every memory in MEMORY.md", async () => {
      const last = await propose(60);
      const root = await mkdtemp(path.join(os.tmpdir(), "memledger-runner-files-"));
      try {
        const r = runner(filesProjection({ root }), { rebuildWhenBehind: 20 });
        expect(filesProjection({ root }).catchUpByRebuild).toBe(true);
        await r.start();
        expect(await r.waitFor(last)).toBe(true);
        expect(await readlink(path.join(root, ledger.app))).toMatch(/2$/);
        const index = (await readMemoryIndex(root, ledger.app)) ?? "";
        expect(index.split("\n").filter((line) => line.startsWith("- "))).toHaveLength(last);
        await r.stop();
      } finally {
        await rm(root, { recursive: true, force: true });
        await rm(`${root}.gen`, { recursive: true, force: true });
      }
    });
  });
});
