import { afterEach, describe, expect, it } from "vitest";
import type { AppendOutcome, ClaimOutcome } from "../../schemas/commands.js";
import { MemoryClient } from "../../services/client.js";
import { startLedger, streamMessageCount, type Ledger } from "../support/env.js";
import { json, probe, rejectionOf, sleep, extraInstances } from "./support.js";

/**
 * Issue 8 item 5: an append whose reply was lost may have landed. The SDK keys every write, so its retry
 * is a replay, never a duplicate; the same key with a different request is a conflict naming the key,
 * never a silent replay of the first result.
 */
describe("ambiguous outcomes: idempotency keys by default", () => {
  let ledger: Ledger | undefined;
  const extra = extraInstances();

  afterEach(async () => {
    await extra.stopAll();
    await ledger?.cleanup();
    ledger = undefined;
  });

  const count = (l: Ledger) => streamMessageCount(l.nc, l.service.names.appStream(l.app));

  it("every SDK write carries a key of its own: two identical unkeyed proposals are two memories, each event hashed", async () => {
    ledger = await startLedger();
    const client = ledger.client("agent-a");
    const one = await client.propose({ title: "Same words", body: "Same body." });
    const two = await client.propose({ title: "Same words", body: "Same body." });
    expect(two.memoryId).not.toBe(one.memoryId);
    expect([one.replayed, two.replayed]).toEqual([false, false]);
    const claimed = await client.claim("task-1", { ttlMs: 60_000 });
    const log = await client.log();
    expect(log.map((e) => e.id)).toEqual([one.eventId, two.eventId, claimed.eventId]);
    for (const event of log) expect(event.commandHash).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(await count(ledger)).toBe(3);
  });

  it("a write whose reply times out is sent again with the same key: one event, whichever attempt lands first", async () => {
    ledger = await startLedger();
    const l = ledger;
    // The real service, made slow on its first append only: the client gives up waiting before it lands.
    const store = l.service.store;
    const append = store.append.bind(store);
    let slowed = 0;
    store.append = async (...args: Parameters<typeof append>) => {
      if (slowed++ === 0) await sleep(700);
      return append(...args);
    };
    const client = new MemoryClient(l.nc, { app: l.app, as: "agent-a", prefix: l.prefix, timeoutMs: 400 });
    const outcome = await client.propose({ title: "Retries", body: "Retried writes never duplicate." });
    // Either attempt may land first (here the retry, while the first one sleeps): one event either way.
    expect(slowed).toBe(2);
    expect(outcome.version).toBe(1);
    await sleep(500); // let the first attempt's reply (to nobody) go out
    expect(await count(l)).toBe(1);
    const log = await client.log();
    expect(log).toHaveLength(1);
    expect(log[0]!.id).toBe(outcome.eventId);

    // A claim too: the late first attempt must be a replay of the retry's claim, not a second claim
    // (nor refused as "already_held", which would not matter to the client but must not store anything).
    slowed = 0;
    const claim = await client.claim("deploy", { ttlMs: 60_000 });
    expect(claim).toMatchObject({ holder: "agent-a", type: "claim.claimed" });
    await sleep(500);
    expect(await count(l)).toBe(2);
    expect((await client.log()).filter((e) => e.type === "claim.claimed").map((e) => e.id)).toEqual([claim.eventId]);
  });

  it("a timed-out request is retried once only, then fails as unavailable", async () => {
    ledger = await startLedger();
    const l = ledger;
    const store = l.service.store;
    const append = store.append.bind(store);
    const seen: number[] = [];
    store.append = async (...args: Parameters<typeof append>) => {
      seen.push(Date.now());
      await sleep(600);
      return append(...args);
    };
    const client = new MemoryClient(l.nc, { app: l.app, as: "agent-a", prefix: l.prefix, timeoutMs: 250 });
    const err = await rejectionOf(client.propose({ title: "Slow", body: "Too slow." }));
    expect(err.code).toBe("unavailable");
    await sleep(1500);
    // Two attempts reached the service (the first and its one retry), and they stored one event.
    expect(seen).toHaveLength(2);
    expect(await count(l)).toBe(1);
  });

  it("the same key with a different request is a conflict naming the key, and stores nothing", async () => {
    ledger = await startLedger();
    const client = ledger.client("agent-a");
    const first = await client.propose({ title: "Cache TTL", body: "Five minutes.", key: "k-ttl" });

    const different = await rejectionOf(client.propose({ title: "Cache TTL", body: "Ten minutes.", key: "k-ttl" }));
    expect(different.code).toBe("conflict");
    expect(different.message).toContain("k-ttl");
    expect(different.details).toMatchObject({ key: "k-ttl", reason: "key_reused", eventId: first.eventId, seq: first.seq });
    // The identical retry is still a replay.
    expect(await client.propose({ title: "Cache TTL", body: "Five minutes.", key: "k-ttl" })).toMatchObject({ seq: first.seq, replayed: true });
    // A revision naming the memory with the creation's key asks for something else too.
    const revision = await rejectionOf(client.propose({ memoryId: first.memoryId, title: "Cache TTL", body: "Five minutes.", key: "k-ttl" }));
    expect(revision.details.key).toBe("k-ttl");

    const v2 = await client.propose({ memoryId: first.memoryId, title: "Cache TTL", body: "Ten minutes." });
    await client.approve(first.memoryId, { version: 1, key: "k-approve" });
    const otherVersion = await rejectionOf(client.approve(first.memoryId, { version: v2.version!, key: "k-approve" }));
    expect(otherVersion).toMatchObject({ code: "conflict", details: { key: "k-approve" } });

    await client.claim("lock-me", { ttlMs: 60_000, key: "k-claim" });
    // A claim's time of decision is not part of what it asked: the retry is a replay...
    expect(await client.claim("lock-me", { ttlMs: 60_000, key: "k-claim" })).toMatchObject({ replayed: true });
    // ...but a different lease length is a different request.
    const longer = await rejectionOf(client.claim("lock-me", { ttlMs: 120_000, key: "k-claim" }));
    expect(longer).toMatchObject({ code: "conflict", details: { key: "k-claim" } });

    expect(await count(ledger)).toBe(4);
    const shown = await client.show(first.memoryId);
    expect(shown.versions.map((v) => [v.version, v.body, v.status])).toEqual([
      [1, "Five minutes.", "approved"],
      [2, "Ten minutes.", "proposed"],
    ]);
  });

  it("a reused key is caught on another instance with a stale cache, and beyond JetStream's dedupe window", async () => {
    ledger = await startLedger({ duplicateWindowMs: 1000 });
    const l = ledger;
    const b = await extra.start(l, { duplicateWindowMs: 1000 });
    const subject = l.client("agent-a").subjectFor("propose");

    const created = (await l.service.dispatch(subject, json({ title: "Queues", body: "SQS.", key: "k-q" }))) as AppendOutcome;
    await b.handler.load((await import("../../commands/memory.js")).memoryDecider, l.app, created.memoryId);
    // Inside the dedupe window, on the other instance.
    const inWindow = await rejectionOf(b.dispatch(subject, json({ title: "Queues", body: "Kafka.", key: "k-q" })));
    expect(inWindow.details.key).toBe("k-q");

    await sleep(1200);
    const bProbe = probe(b);
    const late = await rejectionOf(b.dispatch(subject, json({ title: "Queues", body: "NATS.", key: "k-q" })));
    expect(late).toMatchObject({ code: "conflict", details: { key: "k-q" } });
    expect(bProbe.appended).toBe(0);
    const replay = (await b.dispatch(subject, json({ title: "Queues", body: "SQS.", key: "k-q" }))) as AppendOutcome;
    expect(replay).toMatchObject({ seq: created.seq, replayed: true });

    const claimSubject = l.client("agent-a").subjectFor("claim");
    const claimed = (await l.service.dispatch(claimSubject, json({ name: "t1", ttlMs: 60_000, key: "k-c" }))) as ClaimOutcome;
    await sleep(1200);
    const otherTask = await rejectionOf(b.dispatch(claimSubject, json({ name: "t1", ttlMs: 30_000, key: "k-c" })));
    expect(otherTask.details.key).toBe("k-c");
    expect((await b.dispatch(claimSubject, json({ name: "t1", ttlMs: 60_000, key: "k-c" }))) as ClaimOutcome).toMatchObject({ seq: claimed.seq, replayed: true });
    expect(await count(l)).toBe(2);
  });
});
