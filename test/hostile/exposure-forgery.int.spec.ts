import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SearchIndex } from "../../projections/search/index.js";
import { MemledgerError } from "../../schemas/errors.js";
import { exposureOf } from "../../services/audit/exposure.js";
import { startLedger, streamMessageCount, type Ledger } from "../support/env.js";

/**
 * A receipt says "this session was shown this memory": evidence of who acted on what. An agent that names
 * another agent's session in its search must not write into that agent's record. Its search is answered
 * as usual; no receipt lands on the other session, and the refusal is reported to the operator.
 */
describe("hostile: receipts on another agent's session", () => {
  let ledger: Ledger;
  const errors: unknown[] = [];
  const indexes = new Map<string, SearchIndex>();
  let memoryId: string;

  beforeAll(async () => {
    ledger = await startLedger({ app: "expoh", hydration: { searchIndex: (app) => indexes.get(app) }, onError: (err) => errors.push(err) });
    const m = await ledger.client("agent-w").propose({ title: "Gateway timeout budget", body: "The gateway times out after 30 s." });
    memoryId = m.memoryId;
    await ledger.client("human:rev").approve(memoryId);
    const index = new SearchIndex(ledger.app, "test");
    indexes.set(ledger.app, index);
    await ledger.service.store.replay(ledger.service.names.appStream(ledger.app), {}, (batch) => index.apply(batch));
  });

  afterAll(async () => {
    await ledger?.cleanup();
  });

  it("an agent's search naming another agent's session is answered, records nothing there, and is reported", async () => {
    const alice = ledger.client("agent-alice");
    const mallory = ledger.client("agent-mallory");
    const { sessionId } = await alice.startSession({ task: "gateway work" });
    const stream = ledger.service.names.appStream(ledger.app);
    const before = await streamMessageCount(ledger.nc, stream);

    const hits = await mallory.search("gateway timeout", { sessionId, mode: "bm25" });
    expect(hits.map((h) => h.memoryId)).toEqual([memoryId]);
    await ledger.service.flushExposure();

    expect(await streamMessageCount(ledger.nc, stream)).toBe(before);
    expect(await exposureOf(ledger.service.store, ledger.app, memoryId)).toEqual([]);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(MemledgerError);
    expect(errors[0]).toMatchObject({ code: "forbidden" });

    // The session's own agent still records its receipts there.
    await alice.search("gateway timeout", { sessionId, mode: "bm25" });
    await ledger.service.flushExposure();
    const exposed = await exposureOf(ledger.service.store, ledger.app, memoryId);
    expect(exposed.map((e) => ({ sessionId: e.sessionId, actor: e.actor }))).toEqual([{ sessionId, actor: { kind: "agent", id: "agent-alice" } }]);
    expect(errors).toHaveLength(1);
  });
});
