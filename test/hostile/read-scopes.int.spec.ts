import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { filesProjection, readMemoryIndex, readScratchpadIndex } from "../../projections/files/index.js";
import { rebuildProjection } from "../../services/projection-runner.js";
import { startLedger, streamMessageCount, type Ledger } from "../support/env.js";
import { HOSTILE_POLICY, cliMemoryIds, refusal, startGovernedLedger, type GovernedLedger } from "./governed-ledger.js";

/**
 * Issue 9 item 3: reading other agents' scratchpads. Reads are governed: a scratchpad (`agent:<id>`) is
 * read by its agent and the roles granted it only, in show, log, session_show, search (the service's
 * and the CLI's), hydrate (`--agent bob` as alice is refused; alice's own pack leaves bob's scratchpad
 * out of every section) and MEMORY.md (shared scopes only; each scratchpad has its own index). Without
 * any policy (the built-in default) the same holds: another agent's scratchpad is read by nobody else.
 */

const SECRET_TITLE = "Bob's private zebra plan";
const SHARED_TITLE = "Shared zebra convention";
const QUERIES = ["zebra plan", "zebra convention"];

describe("reads under a policy, agents acting as themselves on the generated broker", () => {
  let ledger: GovernedLedger;
  let bobsPad: string;
  let bobsSession: string;
  let shared: string;

  beforeAll(async () => {
    ledger = await startGovernedLedger(HOSTILE_POLICY, { label: "reads" });
    const alice = await ledger.clientAs("agent:alice");
    const bob = await ledger.clientAs("agent:bob");
    const rita = await ledger.clientAs("human:rita");
    // alice's previous session: everything after it is "changes since your last session" in her pack.
    const earlier = await alice.startSession({ task: "earlier work" });
    await alice.endSession(earlier.sessionId, { summary: "done" });
    bobsSession = (await bob.startSession({ task: "bob's secret errand" })).sessionId;
    bobsPad = (
      await bob.propose({ title: SECRET_TITLE, body: "Only bob reads this zebra plan.", scope: "agent:bob", kind: "fragile", paths: ["src/zebra.ts"], importance: 5 })
    ).memoryId;
    shared = (await bob.propose({ title: SHARED_TITLE, body: "Every zebra handler is idempotent.", paths: ["src/zebra.ts"] })).memoryId;
    await rita.approve(shared);
    await ledger.project();
  });

  afterAll(async () => {
    await ledger?.stop();
  });

  it("alice may not show, log or session_show bob's scratchpad; bob and an admin may; nothing changes", async () => {
    const before = await ledger.snapshot(QUERIES);
    const alice = await ledger.clientAs("agent:alice");
    for (const attempt of [() => alice.show(bobsPad), () => alice.log({ memoryId: bobsPad }), () => alice.request("session_show", { sessionId: bobsSession })]) {
      const err = await refusal(attempt());
      expect(err.code).toBe("forbidden");
      expect(err.message).toMatch(/^agent:alice may not read in scope agent:bob: missing permission read on agent:bob/);
    }
    // The whole log: shared events are there, nothing of bob's scratchpad (memory or session).
    const log = await alice.log({ limit: 1000 });
    expect(log.some((e) => e.aggregateId === shared)).toBe(true);
    expect(log.filter((e) => e.scope.startsWith("agent:") && e.scope !== "agent:alice")).toEqual([]);
    expect(JSON.stringify(log)).not.toContain("zebra plan");
    // A reviewer has no grant on scratchpads either; the agent itself and an admin (`*`) do.
    expect((await refusal((await ledger.clientAs("human:rita")).show(bobsPad))).code).toBe("forbidden");
    expect((await (await ledger.clientAs("agent:bob")).show(bobsPad)).scope).toBe("agent:bob");
    expect((await (await ledger.clientAs("human:root")).show(bobsPad)).scope).toBe("agent:bob");
    expect(await ledger.snapshot(QUERIES)).toEqual(before);
  });

  it("the service's search leaves bob's scratchpad out for alice, not for bob", async () => {
    const before = await ledger.snapshot(QUERIES);
    const alice = await ledger.clientAs("agent:alice");
    const bob = await ledger.clientAs("agent:bob");
    const seenByAlice = await alice.search("zebra plan", { mode: "bm25" });
    expect(seenByAlice.map((h) => h.memoryId)).toEqual([shared]);
    expect((await bob.search("zebra plan", { mode: "bm25" })).map((h) => h.memoryId).sort()).toEqual([bobsPad, shared].sort());
    expect(await ledger.snapshot(QUERIES)).toEqual(before);
  });

  it("hydrate --agent bob as alice is forbidden; alice's own pack has nothing of bob's scratchpad in any section", async () => {
    const before = await ledger.snapshot(QUERIES);
    const alice = await ledger.clientAs("agent:alice");
    const err = await refusal(alice.hydrate({ agent: "bob", task: "zebra plan" }));
    expect(err).toMatchObject({ code: "forbidden", message: expect.stringMatching(/^agent:alice may not read in scope agent:bob: .*\(hydrate --agent bob\)/) });

    const pack = await alice.hydrate({ task: "zebra plan", paths: ["src/zebra.ts"], budget: 8000 });
    expect(pack.markdown).toContain(SHARED_TITLE);
    expect(pack.markdown).toContain("Changes since your last session");
    expect(pack.markdown).not.toContain(SECRET_TITLE);
    expect(pack.markdown).not.toContain(bobsPad);
    expect(pack.markdown).not.toContain("secret errand");
    for (const section of pack.sections) expect(section.included).not.toContain(bobsPad);

    // bob's own pack lists his scratchpad: as fragile on his path, and in his scratchpad index.
    const bobsPack = await (await ledger.clientAs("agent:bob")).hydrate({ task: "zebra plan", paths: ["src/zebra.ts"], budget: 8000 });
    expect(bobsPack.markdown).toContain(SECRET_TITLE);
    expect(bobsPack.markdown).toContain("# Scratchpad index: app1, agent bob");
    expect(await ledger.snapshot(QUERIES)).toEqual(before);
  });

  it("the shared MEMORY.md lists shared scopes only; bob's scratchpad has its own index", async () => {
    const sharedIndex = (await readMemoryIndex(ledger.filesRoot, "app1"))!;
    expect(sharedIndex).toContain(SHARED_TITLE);
    expect(sharedIndex).not.toContain(SECRET_TITLE);
    expect(sharedIndex).not.toContain("](agent/");
    const bobsIndex = (await readScratchpadIndex(ledger.filesRoot, "app1", "bob"))!;
    expect(bobsIndex).toContain(`[${SECRET_TITLE}](../../agent/bob/${bobsPad}.md)`);
    expect(bobsIndex).not.toContain(SHARED_TITLE);
    expect(await readScratchpadIndex(ledger.filesRoot, "app1", "alice")).toBeNull();
    // The link resolves to bob's memory file.
    const linked = await readFile(path.join(ledger.filesRoot, "app1", "agents", "bob", "../../agent/bob", `${bobsPad}.md`), "utf8");
    expect(linked).toContain(SECRET_TITLE);
  });

  it("the CLI's search (and org search) filter by the acting actor under MEMLEDGER_POLICY", async () => {
    const data = await mkdtemp(path.join(tmpdir(), "memledger-reads-cli-"));
    try {
      const cli = async (as: string, argv: string[]) => cliMemoryIds(ledger, data, as, argv);
      expect(await cli("agent:alice", ["--json", "search", "zebra plan", "--mode", "bm25"])).toEqual([shared]);
      expect((await cli("agent:bob", ["--json", "search", "zebra plan", "--mode", "bm25"])).sort()).toEqual([bobsPad, shared].sort());
      // An actor the policy gives no role reads nothing, the org included.
      expect(await cli("human:nobody", ["--json", "search", "zebra plan", "--mode", "bm25"])).toEqual([]);
      expect(await cli("human:nobody", ["--json", "org", "search", "zebra", "--mode", "bm25"])).toEqual([]);
    } finally {
      await rm(data, { recursive: true, force: true });
    }
  });
});

describe("without any policy, another agent's scratchpad is nobody else's to read", () => {
  let ledger: Ledger;
  let root: string;

  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), "memledger-reads-"));
    ledger = await startLedger({ hydration: { filesRoot: path.join(root, "files") } });
  });
  afterEach(async () => {
    await ledger.cleanup();
    await rm(root, { recursive: true, force: true });
  });

  it("alice's pack lists bob's scratchpad in neither the index nor the changes nor anywhere else", async () => {
    const alice = ledger.client("alice");
    const bob = ledger.client("bob");
    const earlier = await alice.startSession({ task: "earlier" });
    await alice.endSession(earlier.sessionId);
    const pad = await bob.propose({ title: SECRET_TITLE, body: "zebra plan details", scope: "agent:bob", kind: "fragile", paths: ["src/zebra.ts"] });
    await bob.approve(pad.memoryId);
    await bob.propose({ title: SHARED_TITLE, body: "zebra handlers are idempotent" });
    const scope = { prefix: ledger.prefix, app: ledger.app, stream: ledger.service.names.appStream(ledger.app) };
    await rebuildProjection(ledger.service.store, filesProjection({ root: path.join(root, "files") }), scope);

    const pack = await alice.hydrate({ task: "zebra plan", paths: ["src/zebra.ts"], budget: 8000 });
    expect(pack.markdown).toContain(SHARED_TITLE); // in the index and the changes
    expect(pack.markdown).not.toContain(SECRET_TITLE);
    expect(pack.markdown).not.toContain(pad.memoryId);
    const bobsPack = await bob.hydrate({ task: "zebra plan", paths: ["src/zebra.ts"], budget: 8000 });
    expect(bobsPack.markdown).toContain(SECRET_TITLE);
    // The built-in default's reads: a scratchpad is its agent's alone, here too.
    const before = await streamMessageCount(ledger.nc, ledger.service.names.appStream(ledger.app));
    expect((await refusal(alice.hydrate({ agent: "bob", task: "zebra plan" }))).code).toBe("forbidden");
    expect((await refusal(alice.show(pad.memoryId))).code).toBe("forbidden");
    expect((await alice.log({ limit: 1000 })).filter((e) => e.scope === "agent:bob")).toEqual([]);
    expect((await alice.search("zebra plan", { mode: "bm25" }).catch(() => [])).map((h) => h.memoryId)).not.toContain(pad.memoryId);
    expect(await streamMessageCount(ledger.nc, ledger.service.names.appStream(ledger.app))).toBe(before);
  });
});
