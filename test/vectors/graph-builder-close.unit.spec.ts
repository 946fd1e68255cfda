import { describe, expect, it } from "vitest";
import { GraphBuilder } from "../../projections/vectors/graph-builder.js";

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * A rebuild's HNSW graph builder can be closed at any moment (a stop during a rebuild, a generation
 * dropped, an index closed). Terminating its worker inside one of hnswlib's native calls (loading the
 * addon, or an insert reading its array) was a fatal error of the whole process (the addon throws into
 * a stopping thread): in CI runs it killed a test worker, and in production it would kill `up`. Closed
 * at every point of its start and of its inserts, the process lives on.
 */
describe("HNSW graph builder: close at any point of its start", () => {
  it("closing right after creation, or a few milliseconds later, never takes the process down", async () => {
    let closed = 0;
    for (let i = 0; i < 160; i++) {
      const builder = new GraphBuilder({ dimensions: 16, m: 8, efConstruction: 50, capacity: 10 });
      await sleep(i % 40);
      await builder.close();
      closed++;
    }
    expect(closed).toBe(160);
  });

  it("closing while inserts are applied never takes the process down, and drops the inserts still queued", async () => {
    const dimensions = 64;
    const random = (() => {
      let state = 7;
      return () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
    })();
    // 40 chunks of 250 inserts at efConstruction 200: seconds of work queued, so a close lands inside one.
    const chunks = Array.from({ length: 40 }, (_, c) => {
      const vectors = Float32Array.from({ length: 250 * dimensions }, random);
      return { slots: Int32Array.from({ length: 250 }, (_, i) => c * 250 + i), vectors };
    });
    for (let i = 0; i < 60; i++) {
      const builder = new GraphBuilder({ dimensions, m: 16, efConstruction: 200, capacity: 10_000 });
      for (const { slots, vectors } of chunks) builder.add(slots, vectors);
      await sleep(5 + (i % 30));
      await builder.close();
      // close() did not wait for the queue: the graph is not complete.
      expect(builder.caughtUp).toBe(false);
      // Closed twice is closed.
      await builder.close();
    }
  });

  it("a write still waiting when the builder is closed is rejected, not left hanging", async () => {
    const builder = new GraphBuilder({ dimensions: 64, m: 16, efConstruction: 200, capacity: 10_000 });
    const vectors = Float32Array.from({ length: 5_000 * 64 }, (_, i) => Math.sin(i));
    builder.add(Int32Array.from({ length: 5_000 }, (_, i) => i), vectors);
    const writing = builder.writeIndex("/nonexistent/never-written.bin");
    const outcome = writing.then(
      () => "written",
      (error: Error) => error.message,
    );
    await sleep(20);
    await builder.close();
    expect(await outcome).toMatch(/closed before the graph was written/);
  });

  it("still builds after a close raced another builder's start", async () => {
    const early = new GraphBuilder({ dimensions: 4, m: 8, efConstruction: 50, capacity: 4 });
    const builder = new GraphBuilder({ dimensions: 4, m: 8, efConstruction: 50, capacity: 4 });
    await early.close();
    builder.add(Int32Array.from([0, 1]), Float32Array.from([1, 0, 0, 0, 0, 1, 0, 0]));
    const { mkdtemp, rm, stat } = await import("node:fs/promises");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const dir = await mkdtemp(join(tmpdir(), "graph-builder-"));
    try {
      await builder.writeIndex(join(dir, "graph.bin"));
      expect((await stat(join(dir, "graph.bin"))).size).toBeGreaterThan(0);
    } finally {
      await builder.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
