import { describe, expect, it } from "vitest";
import { GraphBuilder } from "../../projections/vectors/graph-builder.js";

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * A rebuild's HNSW graph builder can be closed at any moment (a stop during a rebuild, a generation
 * dropped). Terminating its worker while hnswlib's native module initialised there used to be a fatal
 * error of the whole process (the addon throws into a stopping thread): in a CI run it killed a test
 * worker, and in production it would kill `up`. Closed at every point of its start, the process lives on.
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
