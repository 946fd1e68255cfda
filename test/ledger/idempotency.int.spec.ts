import { jetstreamManager } from "@nats-io/jetstream";
import { afterEach, describe, expect, it } from "vitest";
import type { AppendOutcome } from "../../schemas/commands.js";
import { CommandService } from "../../services/command-service.js";
import { idForKey } from "../../services/command-handler.js";
import { memoryDecider } from "../../commands/memory.js";
import { startLedger, streamMessageCount, type Ledger } from "../support/env.js";
import { json, probe, rejectionOf, sleep, waitUntil, extraInstances } from "./support.js";

/** The fields a retry must reproduce exactly. */
const same = (o: AppendOutcome) => ({ memoryId: o.memoryId, version: o.version, seq: o.seq, eventId: o.eventId, type: o.type });

describe("idempotency keys", () => {
  let ledger: Ledger | undefined;
  const extra = extraInstances();

  afterEach(async () => {
    await extra.stopAll();
    await ledger?.cleanup();
    ledger = undefined;
  });

  /** Another command-service instance on the ledger's prefix, with an empty cache. */
  async function anotherInstance(l: Ledger, options: { duplicateWindowMs?: number } = {}): Promise<CommandService> {
    return extra.start(l, options);
  }

  const count = (l: Ledger) => streamMessageCount(l.nc, l.service.names.appStream(l.app));

  it("a retry after a lost reply gets the same memoryId/version/seq, replayed, and one event", async () => {
    ledger = await startLedger();
    const client = ledger.client("agent-a");
    const request = { title: "Lint before push", body: "Run the linter before every push.", key: "lint-rule-1" };

    // The first attempt reaches the service but its reply is lost: publish with no reply subject.
    ledger.nc.publish(client.subjectFor("propose"), JSON.stringify(request));
    await waitUntil(async () => (await count(ledger!)) === 1, "the unanswered proposal to be stored");

    // The agent times out and retries with the same key.
    const retry = await client.propose(request);
    expect(retry.replayed).toBe(true);
    expect(retry.version).toBe(1);
    // A keyed creation names its memory after the key and the actor: the retry finds the same one.
    expect(retry.memoryId).toBe(idForKey({ app: ledger.app, actor: client.actor }, "memory", "lint-rule-1"));

    const log = await client.log({ memoryId: retry.memoryId });
    expect(log).toHaveLength(1);
    expect(log[0]).toMatchObject({ seq: retry.seq, id: retry.eventId, type: "memory.proposed" });

    // And once more, for good measure: still the same answer, still one event.
    const again = await client.propose(request);
    expect(same(again)).toEqual(same(retry));
    expect(again.replayed).toBe(true);
    expect(await count(ledger)).toBe(1);
  });

  it("the same keyed request sent twice in a row, and ten times at once, stores one event each", async () => {
    ledger = await startLedger();
    const client = ledger.client("agent-a");
    const first = await client.propose({ title: "Branch names", body: "feature/<ticket>-<slug>", key: "k-seq" });
    const second = await client.propose({ title: "Branch names", body: "feature/<ticket>-<slug>", key: "k-seq" });
    expect(first.replayed).toBe(false);
    expect(second.replayed).toBe(true);
    expect(same(second)).toEqual(same(first));

    // Concurrent duplicates race inside the service: one appends, the others see its event
    // (JetStream's dedupe or the stale expected sequence) and answer as replays of it.
    const burst = await Promise.all(
      Array.from({ length: 10 }, () => client.propose({ title: "Release day", body: "Thursdays.", key: "k-burst" })),
    );
    expect(burst.filter((o) => !o.replayed)).toHaveLength(1);
    for (const o of burst) expect(same(o)).toEqual(same(burst[0]!));
    expect(await count(ledger)).toBe(2);
  });

  it("beyond JetStream's dedupe window the retry is answered from the aggregate's state: one event, same result", async () => {
    // JetStream refuses a duplicate window under 100 ms; 1 s keeps the wait short.
    ledger = await startLedger({ duplicateWindowMs: 1000 });
    const client = ledger.client("agent-a");
    const stream = ledger.service.names.appStream(ledger.app);

    const created = await client.propose({ title: "Timeouts", body: "HTTP clients time out after 5 s.", key: "k-window" });
    const jsm = await jetstreamManager(ledger.nc);
    expect((await jsm.streams.info(stream)).config.duplicate_window).toBe(1_000_000_000);

    // A second instance caches the memory now, so it will be stale when the keyed revision lands.
    const stale = await anotherInstance(ledger, { duplicateWindowMs: 1000 });
    const staleProbe = probe(stale);
    await stale.handler.load(memoryDecider, ledger.app, created.memoryId);

    const revision = { memoryId: created.memoryId, title: "Timeouts", body: "HTTP clients time out after 3 s.", key: "k-window-rev" };
    const revised = (await ledger.service.dispatch(client.subjectFor("propose"), json(revision))) as AppendOutcome;
    expect(revised).toMatchObject({ version: 2, replayed: false });

    await sleep(1500); // past the dedupe window: JetStream no longer remembers either message id

    // The plain retry, through NATS.
    const retried = await client.propose({ title: "Timeouts", body: "HTTP clients time out after 5 s.", key: "k-window" });
    expect(retried.replayed).toBe(true);
    expect(same(retried)).toEqual(same(created));

    // The retry through the stale instance: its cache has neither event id, JetStream's dedupe has
    // forgotten it, so only the expected sequence stands between the retry and a second version 2.
    const fromStale = (await stale.dispatch(client.subjectFor("propose"), json(revision))) as AppendOutcome;
    expect(fromStale.replayed).toBe(true);
    expect(same(fromStale)).toEqual(same(revised));
    expect(staleProbe.staleAppends).toBe(1);
    expect(staleProbe.appended).toBe(0);

    const shown = await client.show(created.memoryId);
    expect(shown.versions.map((v) => v.version)).toEqual([1, 2]);
    expect(await count(ledger)).toBe(2);
  });

  it("the same key used by two different agents makes two memories", async () => {
    ledger = await startLedger();
    const alice = ledger.client("alice");
    const bob = ledger.client("bob");
    const request = { title: "Formatting", body: "Prettier, default options.", key: "shared-key" };
    const a = await alice.propose(request);
    const b = await bob.propose(request);
    expect(a.replayed).toBe(false);
    expect(b.replayed).toBe(false);
    expect(b.memoryId).not.toBe(a.memoryId);
    expect(b.eventId).not.toBe(a.eventId);

    // Each agent's retry still finds its own memory.
    expect(same(await alice.propose(request))).toEqual(same(a));
    expect(same(await bob.propose(request))).toEqual(same(b));
    expect((await alice.show(a.memoryId)).versions[0]!.proposedBy).toEqual({ kind: "agent", id: "alice" });
    expect((await alice.show(b.memoryId)).versions[0]!.proposedBy).toEqual({ kind: "agent", id: "bob" });
    expect(await count(ledger)).toBe(2);
  });

  it("a keyed approve retried yields one approved event, even after a newer version is pending", async () => {
    ledger = await startLedger();
    const author = ledger.client("author");
    const reviewer = ledger.client("human:reviewer");
    const p = await author.propose({ title: "On-call", body: "Rotation is weekly." });

    const approved = await reviewer.approve(p.memoryId, { key: "approve-oncall" });
    expect(approved).toMatchObject({ version: 1, type: "memory.approved", replayed: false });
    const retry = await reviewer.approve(p.memoryId, { key: "approve-oncall" });
    expect(retry.replayed).toBe(true);
    expect(same(retry)).toEqual(same(approved));

    // A new version is now pending. A late retry of the approval must not approve it.
    const v2 = await author.propose({ memoryId: p.memoryId, title: "On-call", body: "Rotation is every two weeks." });
    const lateRetry = await reviewer.approve(p.memoryId, { key: "approve-oncall" });
    expect(lateRetry.replayed).toBe(true);
    expect(same(lateRetry)).toEqual(same(approved));

    const shown = await author.show(p.memoryId);
    expect(shown.activeVersion).toBe(1);
    expect(shown.versions.map((v) => [v.version, v.status])).toEqual([
      [1, "approved"],
      [2, "proposed"],
    ]);
    const log = await author.log({ memoryId: p.memoryId });
    expect(log.filter((e) => e.type === "memory.approved")).toHaveLength(1);
    expect(log.map((e) => e.seq)).toEqual([p.seq, approved.seq, v2.seq]);
    expect(await count(ledger)).toBe(3);
  });

  it("a restarted service (empty cache) answers keyed retries from the log", async () => {
    ledger = await startLedger({ duplicateWindowMs: 1000 });
    const client = ledger.client("agent-a");
    const created = await client.propose({ title: "Migrations", body: "Forward-only.", key: "k-restart" });
    const revised = await client.propose({
      memoryId: created.memoryId,
      expectedSeq: created.seq,
      title: "Migrations",
      body: "Forward-only, reviewed by a human.",
      key: "k-restart-rev",
    });
    const approved = await client.approve(created.memoryId, { version: 2, key: "k-restart-approve" });
    const session = await client.startSession({ task: "write migrations", key: "k-session" });

    // Stop the only instance (it drains) and start a fresh one: nothing is cached any more.
    await ledger.service.stop();
    const fresh = await anotherInstance(ledger, { duplicateWindowMs: 1000 });
    const freshProbe = probe(fresh);
    await sleep(1200); // and past the dedupe window, so JetStream cannot be what answers

    const retries = {
      created: await client.propose({ title: "Migrations", body: "Forward-only.", key: "k-restart" }),
      // The retry still carries the expectedSeq it was first sent with, which is stale now: a replay,
      // not a conflict.
      revised: await client.propose({
        memoryId: created.memoryId,
        expectedSeq: created.seq,
        title: "Migrations",
        body: "Forward-only, reviewed by a human.",
        key: "k-restart-rev",
      }),
      approved: await client.approve(created.memoryId, { version: 2, key: "k-restart-approve" }),
    };
    expect(same(retries.created)).toEqual(same(created));
    expect(same(retries.revised)).toEqual(same(revised));
    expect(same(retries.approved)).toEqual(same(approved));
    expect(Object.values(retries).every((o) => o.replayed)).toBe(true);
    const sessionRetry = await client.startSession({ task: "write migrations", key: "k-session" });
    expect(sessionRetry).toEqual({ ...session, replayed: true });

    expect(freshProbe.executions).toBe(4);
    expect(freshProbe.appended).toBe(0);
    expect(await count(ledger)).toBe(4);

    // Without a key, the same content is a new command: it is not mistaken for a retry.
    const unkeyed = await client.propose({ memoryId: created.memoryId, title: "Migrations", body: "Forward-only, reviewed by a human." });
    expect(unkeyed).toMatchObject({ version: 3, replayed: false });
  });

  it("a key reused for another verb on the same memory is a new command, not a replay of the first", async () => {
    ledger = await startLedger();
    const client = ledger.client("agent-a");
    const proposed = await client.propose({ title: "Pin the Node version", body: "Node 20 everywhere.", key: "k-reuse" });
    const approved = await client.approve(proposed.memoryId, { key: "k-reuse" });
    expect(approved).toMatchObject({ type: "memory.approved", version: 1, replayed: false });
    expect((await client.show(proposed.memoryId)).activeVersion).toBe(1);
    // Each is still idempotent on its own.
    expect(await client.approve(proposed.memoryId, { key: "k-reuse" })).toMatchObject({ seq: approved.seq, replayed: true });
    expect(await count(ledger)).toBe(2);
  });

  it("a revision that names no scope stays in its memory's scope", async () => {
    ledger = await startLedger();
    const client = ledger.client("agent-a");
    const first = await client.propose({ title: "Team rule", body: "Review in pairs.", scope: "team:core" });
    await client.propose({ memoryId: first.memoryId, title: "Team rule, revised", body: "Review in pairs, always." });
    const shown = await client.show(first.memoryId);
    expect(shown.scope).toBe("team:core");
    expect(shown.versions.map((v) => v.version)).toEqual([1, 2]);
  });

  it("a keyed command that was refused is refused again on retry, and stores nothing", async () => {
    ledger = await startLedger();
    const client = ledger.client("agent-a");
    const p = await client.propose({ title: "Logs", body: "JSON lines." });
    const err1 = await rejectionOf(client.approve(p.memoryId, { version: 7, key: "k-bad-approve" }));
    const err2 = await rejectionOf(client.approve(p.memoryId, { version: 7, key: "k-bad-approve" }));
    expect(err1.code).toBe("not_found");
    expect(err2.code).toBe("not_found");
    expect(await count(ledger)).toBe(1);
    // The key is not burnt by the refusal: a corrected command with it succeeds once.
    const ok = await client.approve(p.memoryId, { version: 1, key: "k-bad-approve" });
    expect(ok).toMatchObject({ version: 1, replayed: false });
    expect(await count(ledger)).toBe(2);
  });
});

