import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLedger, type Ledger } from "./support/env.js";

describe("smoke", () => {
  let ledger: Ledger;
  beforeAll(async () => {
    ledger = await startLedger();
  });
  afterAll(async () => ledger?.cleanup());

  it("proposes, approves, revises, rolls back and shows", async () => {
    const c = ledger.client("agent-a");
    const p = await c.propose({ title: "Use pnpm", body: "We use pnpm, not npm.", kind: "convention", tags: ["tooling"] });
    expect(p.version).toBe(1);
    const a = await c.approve(p.memoryId);
    expect(a.version).toBe(1);
    const r = await c.propose({ memoryId: p.memoryId, title: "Use pnpm 9", body: "pnpm 9 only", expectedSeq: a.seq });
    expect(r.version).toBe(2);
    await c.approve(p.memoryId, { version: 2 });
    const rb = await c.rollback(p.memoryId, 1);
    const shown = await c.show(p.memoryId);
    expect(shown.activeVersion).toBe(1);
    expect(shown.seq).toBe(rb.seq);
    const log = await c.log({ memoryId: p.memoryId });
    expect(log.map((e) => e.type)).toEqual(["memory.proposed", "memory.approved", "memory.proposed", "memory.approved", "memory.rolled_back"]);
  });
});
