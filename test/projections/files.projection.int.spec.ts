import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { filesProjection, listMemoryFiles, readMemoryIndex } from "../../projections/files/index.js";
import type { ProjectionScope } from "../../projections/projection.js";
import type { DomainEventOf, MemoryEvent } from "../../schemas/events.js";
import { envelopes, projectionSpecFor } from "../../testing/index.js";

/** The files projection through the package's projection spec (memledger/testing): given, when, then the tree. */

type MemoryDomainEvent = DomainEventOf<MemoryEvent>;
const proposed = (version: number, title: string): MemoryDomainEvent => ({
  type: "memory.proposed",
  data: { version, title, body: `Body of ${title}.`, kind: "convention", tags: ["tooling"], paths: ["package.json"], importance: 3 },
});
const approved = (version: number): MemoryDomainEvent => ({ type: "memory.approved", data: { version } });
const superseded: MemoryDomainEvent = { type: "memory.superseded", data: { by: null, reason: "replaced" } };

describe("files projection, as a Given/When/Then spec", () => {
  let root: string;
  const scope: ProjectionScope = { prefix: "spec", app: "app1", stream: "spec_app_app1" };
  const read = async () => ({
    index: (await readMemoryIndex(root, scope.app))?.split("\n").filter((l) => l.startsWith("- ")) ?? [],
    files: await listMemoryFiles(root, scope.app),
  });

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "memledger-spec-"));
  });
  afterEach(async () => {
    // The store keeps its generations beside its root (`<root>.gen`): both are this test's.
    await rm(root, { recursive: true, force: true });
    await rm(`${root}.gen`, { recursive: true, force: true });
  });

  it("an approved memory is listed in MEMORY.md and has its file", async () => {
    const spec = projectionSpecFor({ definition: filesProjection({ root }), scope, read });
    const [p1] = envelopes<MemoryEvent>([proposed(1, "Use pnpm")], { aggregateId: "mem-1", app: "app1" });
    const [a1] = envelopes<MemoryEvent>([approved(1)], { aggregateId: "mem-1", app: "app1" }, 2);
    await spec.given([p1!]).when([a1!]).then({
      index: ["- [Use pnpm](app/mem-1.md) (convention; importance 3)"],
      files: ["app/mem-1.md"],
    });
  });

  it("a superseded memory leaves the index; its file stays as history", async () => {
    const spec = projectionSpecFor({ definition: filesProjection({ root }), scope, read });
    const given = envelopes<MemoryEvent>([proposed(1, "Use npm"), approved(1)], { aggregateId: "mem-2", app: "app1" });
    const when = envelopes<MemoryEvent>([superseded], { aggregateId: "mem-2", app: "app1" }, 3);
    await spec.given(given).when(when).thenMatches((model) => {
      expect(model.index).toEqual([]);
      expect(model.files).toContain("app/mem-2.md");
    });
  });

  it("fails when the model differs from what the spec expects (the spec can fail)", async () => {
    const spec = projectionSpecFor({ definition: filesProjection({ root }), scope, read });
    const [p1] = envelopes<MemoryEvent>([proposed(1, "Use yarn")], { aggregateId: "mem-3", app: "app1" });
    await expect(spec.given([]).when([p1!]).then({ index: [], files: [] })).rejects.toThrow(/live model/);
  });
});
