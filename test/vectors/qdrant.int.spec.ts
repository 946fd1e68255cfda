import { randomBytes } from "node:crypto";
import { beforeAll, describe, expect, test } from "vitest";
import { QdrantVectorIndex, pointIdOf, qdrantFilter } from "../../projections/vectors/qdrant-vectors.js";
import type { VectorIndex } from "../../projections/vectors/vector-index.js";
import { defineVectorIndexConformance, expectLedgerError } from "./conformance.js";

/**
 * The conformance suite against a real Qdrant server, when QDRANT_URL names one:
 *   docker run -p 6333:6333 qdrant/qdrant
 *   QDRANT_URL=http://127.0.0.1:6333 npx vitest run test/vectors
 * Each test gets its own collection, dropped afterwards.
 */
const QDRANT_URL = process.env.QDRANT_URL;

beforeAll(() => {
  if (!QDRANT_URL) console.warn("test/vectors/qdrant.int.spec.ts: Qdrant conformance skipped: QDRANT_URL not set (start one with `docker run -p 6333:6333 qdrant/qdrant`)");
});

describe.skipIf(!QDRANT_URL)("Qdrant server (skipped: QDRANT_URL not set)", () => {
  defineVectorIndexConformance("qdrant", {
    persistent: false,
    create: (dimensions) =>
      QdrantVectorIndex.open({ url: QDRANT_URL!, collection: `memledger-test-${randomBytes(6).toString("hex")}`, dimensions }),
    destroy: (index: VectorIndex) => (index as QdrantVectorIndex).dropCollection(),
  });

  test("opening an existing collection again is idempotent, and one of other dimensions is refused", async () => {
    const collection = `memledger-test-${randomBytes(6).toString("hex")}`;
    const first = await QdrantVectorIndex.open({ url: QDRANT_URL!, collection, dimensions: 4 });
    try {
      await first.upsert([{ id: "a", vector: Float32Array.from([1, 0, 0, 0]), payload: { app: "shop", scope: "app", kind: "note", status: "active", version: 1, tags: [], paths: [], modelId: "m" } }]);
      const second = await QdrantVectorIndex.open({ url: QDRANT_URL!, collection, dimensions: 4 });
      expect(await second.count()).toBe(1);
      await expectLedgerError(QdrantVectorIndex.open({ url: QDRANT_URL!, collection, dimensions: 8 }), "invalid");
    } finally {
      await first.dropCollection();
    }
  });
});

// What runs without a server: the id mapping, the filter translation, and an unreachable server.
describe("Qdrant mapping", () => {
  test("a memory id maps to the same UUID v5 every time, and different ids to different UUIDs", () => {
    const id = pointIdOf("mem_01HZX");
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(pointIdOf("mem_01HZX")).toBe(id);
    const many = new Set(Array.from({ length: 1000 }, (_, i) => pointIdOf(`m${i}`)));
    expect(many.size).toBe(1000);
  });

  test("filters become must-conditions: exact value for app, any-of for the list fields", () => {
    expect(qdrantFilter(undefined)).toBeUndefined();
    expect(qdrantFilter({ app: "shop", scope: ["app", "team:core"], kind: ["note"], status: ["active"], tags: ["a", "b"], paths: ["src/x.ts"] })).toEqual({
      must: [
        { key: "app", match: { value: "shop" } },
        { key: "scope", match: { any: ["app", "team:core"] } },
        { key: "kind", match: { any: ["note"] } },
        { key: "status", match: { any: ["active"] } },
        { key: "tags", match: { any: ["a", "b"] } },
        { key: "paths", match: { any: ["src/x.ts"] } },
      ],
    });
    expect(qdrantFilter({ tags: ["x"] })).toEqual({ must: [{ key: "tags", match: { any: ["x"] } }] });
  });

  test("a server that does not answer is reported as unavailable; bad options as invalid", async () => {
    // Port 9 (discard) on loopback: nothing listens there on these machines.
    await expectLedgerError(QdrantVectorIndex.open({ url: "http://127.0.0.1:9", collection: "memledger-none", dimensions: 4, timeout: 2000 }), "unavailable");
    await expectLedgerError(QdrantVectorIndex.open({ url: "http://127.0.0.1:9", collection: "bad name!", dimensions: 4 }), "invalid");
    await expectLedgerError(QdrantVectorIndex.open({ url: "http://127.0.0.1:9", collection: "ok", dimensions: 0 }), "invalid");
  });
});
