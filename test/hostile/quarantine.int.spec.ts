import { createHash } from "node:crypto";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ORG_APP, naming } from "../../events/subjects.js";
import { MemledgerError } from "../../schemas/errors.js";
import type { LedgerQuarantined } from "../../schemas/events.js";
import { loadPolicy } from "../../services/auth/load.js";
import { MemoryClient } from "../../services/client.js";
import { CommandService } from "../../services/command-service.js";
import { Curator } from "../../services/curator/curator.js";
import { EventStore } from "../../services/event-store.js";
import { ProjectionRunner, readStatuses, rebuildProjection, type ProjectionStatus } from "../../services/projection-runner.js";
import { eventually, until as untilHolds } from "../support/eventually.js";
import { newDisk, recordingProjection, type RecordingDisk } from "../support/recording-projection.js";
import { startGeneratedBroker, type GeneratedBroker } from "./generated-broker.js";

/**
 * Issue 9 item 1, defence in depth: a message on a stream subject that is not a valid event (here put
 * there by an admin connection, the only one allowed to) blocks the projections and the curator loudly;
 * an admin clears it with `memledger quarantine`, an audited event every reader honours. The junk stays
 * in the log (streams deny deletes): nothing is edited.
 */

const APP = "app1";
const POLICY = {
  version: 1,
  apps: [APP],
  roles: {
    agent: { allow: [{ verbs: ["*"], scopes: ["agent:self"], autoApprove: true }, { verbs: ["propose"], scopes: ["app"] }] },
    reviewer: { allow: [{ verbs: ["*"], scopes: ["app", "team:*"] }] },
    curator: { allow: [{ verbs: ["*"], scopes: ["org"] }] },
    admin: { allow: [{ verbs: ["*"], scopes: ["*", "org"] }] },
  },
  actors: {
    "agent:coder-1": { roles: ["agent"] },
    // An agent the policy (wrongly) makes an admin: still may not quarantine.
    "agent:rogue": { roles: ["admin"] },
    "human:alice": { roles: ["reviewer"] },
    "human:ops": { roles: ["admin"] },
    "service:curator": { roles: ["curator"] },
  },
};

/** What the service answered to the hostile `show` of item 1 looked like: the kind of junk a stream got. */
const JUNK = new TextEncoder().encode(JSON.stringify({ ok: true, result: { memoryId: "x", status: "active" } }));
const sha256 = (data: Uint8Array) => `sha256:${createHash("sha256").update(data).digest("hex")}`;

const until = (what: string, check: () => unknown, timeoutMs = 20_000) => untilHolds(what, check, timeoutMs);

describe("junk on a stream subject: loud block, then an audited quarantine", () => {
  let broker: GeneratedBroker;
  let serviceNc: NatsConnection;
  let service: CommandService;
  let curator: Curator;
  let store: EventStore;
  const appDisk = newDisk();
  const orgDisk = newDisk();
  const runners: ProjectionRunner[] = [];
  const curatorErrors: string[] = [];
  const clients = new Map<string, MemoryClient>();
  let memoryId: string;
  let junkSeq: number;

  const names = () => naming(broker.prefix);
  const clientAs = async (name: string, app = APP) => {
    const key = `${name}@${app}`;
    if (!clients.has(key)) clients.set(key, new MemoryClient(await broker.connectAs(name), { app, as: name, prefix: broker.prefix }));
    return clients.get(key)!;
  };
  const statusOf = async (app: string): Promise<ProjectionStatus> => {
    const stream = app === ORG_APP ? names().orgStream() : names().appStream(app);
    const status = (await readStatuses(store)).find((s) => s.stream === stream);
    if (!status) throw new Error(`no status for ${stream} yet`);
    return status;
  };
  const refusal = async (work: Promise<unknown>): Promise<MemledgerError> => {
    const err = await work.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MemledgerError);
    return err as MemledgerError;
  };
  /** An admin connection (the service user: the only one the generated config lets write a stream). */
  const injectJunk = async (subject: string): Promise<number> => (await jetstream(serviceNc).publish(subject, JUNK)).seq;
  const applied = (disk: RecordingDisk) => disk.generations.get(disk.current)!.applied;

  beforeAll(async () => {
    broker = await startGeneratedBroker(POLICY, "quar");
    serviceNc = await broker.connectAs("memledger");
    const policy = await loadPolicy(broker.policyFile);
    service = await CommandService.start(serviceNc, { prefix: broker.prefix, policy });
    store = await EventStore.open(serviceNc, names());
    await store.ensureAppStream(APP);
    await store.ensureOrgStream();
    for (const [app, disk] of [
      [APP, appDisk],
      [ORG_APP, orgDisk],
    ] as const) {
      const runner = new ProjectionRunner(store, recordingProjection(disk), { prefix: broker.prefix, app, stream: store.names.appStream(app) }, { statusEveryMs: 50 });
      await runner.start();
      runners.push(runner);
    }
    curator = await Curator.start(serviceNc, {
      prefix: broker.prefix,
      access: policy,
      policy: { autoApprove: true },
      discoverEveryMs: 200,
      onError: (err, where) => curatorErrors.push(`${where}: ${(err as Error).message}`),
    });
  }, 60_000);

  afterAll(async () => {
    await curator?.stop().catch(() => undefined);
    for (const r of runners) await r.stop().catch(() => undefined);
    await service?.stop().catch(() => undefined);
    await broker?.stop();
  });

  it("junk on a memory subject blocks the projection loudly, and the memory's own reads", async () => {
    const alice = await clientAs("human:alice");
    const proposed = await alice.propose({ title: "payments retries", body: "retry webhooks three times" });
    const approved = await alice.approve(proposed.memoryId);
    memoryId = proposed.memoryId;
    expect(await runners[0]!.waitFor(approved.seq, 10_000)).toBe(true);

    junkSeq = await injectJunk(names().aggregate(APP, "memory", memoryId));
    const later = await alice.propose({ title: "appended after the junk", body: "x" });
    expect(later.seq).toBe(junkSeq + 1);

    const status = await eventually("the app projection reports the block", async () => {
      const s = await statusOf(APP);
      return s.blocked?.seq === junkSeq ? s : undefined;
    });
    expect(status.blocked!.error).toMatch(/stored event does not match its schema/);
    expect(runners[0]!.checkpoint).toBe(junkSeq - 1);
    expect(applied(appDisk)).not.toContain(junkSeq);
    expect(applied(appDisk)).not.toContain(later.seq);
    // Loading the memory reads its subject, junk included: refused, not silently wrong.
    expect(await refusal(alice.show(memoryId))).toMatchObject({ code: "invalid", message: expect.stringMatching(/does not match its schema/) });
  });

  it("only an admin may quarantine, and only a message that is not an event: refusals append nothing", async () => {
    const before = await broker.streamCounts();
    const asAgent = await refusal((await clientAs("agent:coder-1")).quarantine(junkSeq, "hide it"));
    expect(asAgent).toMatchObject({ code: "forbidden", message: expect.stringMatching(/^agent:coder-1 may not quarantine: agents never may/) });
    const rogue = await refusal((await clientAs("agent:rogue")).quarantine(junkSeq, "I am an admin"));
    expect(rogue).toMatchObject({ code: "forbidden", message: expect.stringMatching(/^agent:rogue may not quarantine: agents never may/) });
    const reviewer = await refusal((await clientAs("human:alice")).quarantine(junkSeq, "please"));
    expect(reviewer).toMatchObject({
      code: "forbidden",
      // Every verb on app makes a reviewer, not an admin: quarantine acts on the whole stream.
      message: expect.stringMatching(/^human:alice may not quarantine in scope app: missing permission \* \(every verb\) on \*, which makes an admin/),
      details: { verb: "quarantine", scope: "app", seq: junkSeq },
    });

    const ops = await clientAs("human:ops");
    // A valid event is history: never set aside.
    const valid = await refusal(ops.quarantine(junkSeq - 1, "does not like it"));
    expect(valid).toMatchObject({ code: "conflict", details: { reason: "valid_event", seq: junkSeq - 1 } });
    expect((await refusal(ops.quarantine(junkSeq + 10_000, "nothing there"))).code).toBe("not_found");
    expect((await refusal(ops.quarantine(junkSeq, "   "))).code).toBe("invalid");

    expect(await broker.streamCounts()).toEqual(before);
    expect((await statusOf(APP)).blocked?.seq).toBe(junkSeq);
  });

  it("memledger quarantine clears it: the projection goes on past it, and the quarantine is in the log with actor and reason", async () => {
    const before = await broker.streamCounts();
    const reason = "junk reply stored by a hostile show (issue 9)";
    const done = await broker.cli("human:ops", ["quarantine", "--app", APP, "--seq", String(junkSeq), "--reason", reason, "--json"]);
    expect({ code: done.code, stderr: done.stderr }).toEqual({ code: 0, stderr: "" });
    const outcome = JSON.parse(done.stdout) as { seq: number; subject: string; digest: string; bytes: number; eventSeq: number; type: string; replayed: boolean };
    expect(outcome).toMatchObject({
      seq: junkSeq,
      subject: names().aggregate(APP, "memory", memoryId),
      digest: sha256(JUNK),
      bytes: JUNK.length,
      type: "ledger.quarantined",
      replayed: false,
    });
    const after = await broker.streamCounts();
    expect(after).toEqual({ ...before, [names().appStream(APP)]: before[names().appStream(APP)]! + 1 });

    // The runner retries the blocked sequence, finds it quarantined, and goes on.
    expect(await runners[0]!.waitFor(outcome.eventSeq, 20_000)).toBe(true);
    await until("status unblocked, the skip recorded", async () => {
      const s = await statusOf(APP);
      expect(s.blocked).toBeNull();
      expect(s.quarantined).toEqual([junkSeq]);
    });
    expect(applied(appDisk)).not.toContain(junkSeq);
    expect(applied(appDisk)).toEqual(expect.arrayContaining([junkSeq + 1, outcome.eventSeq]));
    // What an operator sees (memledger status needs the JetStream API: the service user's credentials).
    const status = await broker.cli("memledger", ["status"]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(new RegExp(`recording +${APP} .*skipped \\(quarantined\\): ${junkSeq}`));

    // The memory reads again; the junk is still in the log (nothing was edited), skipped by every reader.
    const alice = await clientAs("human:alice");
    expect(await alice.show(memoryId)).toMatchObject({ memoryId, status: "active" });
    expect(Buffer.from((await store.jsm.direct.getMessage(names().appStream(APP), { seq: junkSeq }))!.data)).toEqual(Buffer.from(JUNK));
    const log = await alice.log({});
    expect(log.map((e) => e.seq)).not.toContain(junkSeq);
    const record = log.find((e) => e.type === "ledger.quarantined") as unknown as LedgerQuarantined & { seq: number; subject: string };
    expect(record).toMatchObject({
      seq: outcome.eventSeq,
      subject: names().quarantine(APP, junkSeq),
      actor: { kind: "human", id: "ops" },
      scope: "app",
      data: { seq: junkSeq, reason, digest: sha256(JUNK), subject: names().aggregate(APP, "memory", memoryId) },
    });
    expect(record.data.error).toMatch(/does not match its schema/);

    // Once per sequence: a second quarantine is a conflict naming the first, and appends nothing.
    const again = await broker.cli("human:ops", ["quarantine", "--app", APP, "--seq", String(junkSeq), "--reason", "again", "--json"]);
    expect(again.code).toBe(3);
    expect(JSON.parse(again.stderr)).toMatchObject({ error: { code: "conflict", details: { reason: "already_quarantined", seq: junkSeq, by: "human:ops" } } });
    expect(await broker.streamCounts()).toEqual(after);
  });

  it("a rebuild replays to the same read model: the quarantined sequences are skipped there too, even one its lenient decode accepts", async () => {
    const scope = { prefix: broker.prefix, app: APP, stream: names().appStream(APP) };
    // Junk shaped like an event, with a time that is no datetime: the live runner's full check refuses
    // it; a rebuild's structural decode alone would fold it (decodeEventStructural skips formats).
    const real = (await store.eventAt(scope.stream, junkSeq - 1))!.event;
    const subtle = new TextEncoder().encode(JSON.stringify({ ...real, id: "subtle-junk", time: "yesterday" }));
    const subtleSeq = (await jetstream(serviceNc).publish(names().aggregate(APP, "memory", memoryId), subtle)).seq;
    await until("blocked on the subtle junk", async () => expect((await statusOf(APP)).blocked?.seq).toBe(subtleSeq));
    const q = await (await clientAs("human:ops")).quarantine(subtleSeq, "time is not a datetime");
    expect(q.error).toMatch(/time/);
    expect(await runners[0]!.waitFor(q.eventSeq, 20_000)).toBe(true);
    expect(applied(appDisk)).not.toContain(subtleSeq);

    const fresh = newDisk();
    const rebuilt = await rebuildProjection(store, recordingProjection(fresh), scope);
    expect(rebuilt.seq).toBe(await store.lastSeq(scope.stream));
    expect(applied(fresh)).not.toContain(junkSeq);
    expect(applied(fresh)).not.toContain(subtleSeq);
    expect(applied(fresh)).toEqual(applied(appDisk).filter((seq) => seq <= rebuilt.seq));
    // A replay from past the junk but before its quarantine skips it as well.
    const tail: number[] = [];
    await store.replay(scope.stream, { fromSeq: subtleSeq }, (events) => void tail.push(...events.map((e) => e.seq)));
    expect(tail).toEqual(applied(fresh).filter((seq) => seq >= subtleSeq));
    // The full schema check (rebuild --verify) skips it as well rather than stopping.
    const verified: number[] = [];
    await store.replay(scope.stream, { verify: true }, (events) => void verified.push(...events.map((e) => e.seq)));
    expect(verified).toEqual(applied(fresh));
  });

  it("junk on the org stream stops the curator for every app until an admin quarantines it; then the promotion is decided", async () => {
    const alice = await clientAs("human:alice");
    const orgJunk = await injectJunk(names().orgMemory("junk"));
    const promoted = await alice.promote(memoryId, { reason: "holds for every service" });

    await until("the curator fails loudly on the org stream", () => expect(curatorErrors.some((e) => /does not match its schema/.test(e))).toBe(true));
    await until("the org projection reports the block", async () => expect((await statusOf(ORG_APP)).blocked?.seq).toBe(orgJunk));
    expect((await alice.show(memoryId)).promotions).toEqual([expect.objectContaining({ promotionId: promoted.promotionId, status: "pending", decision: null })]);

    // The org stream is scope org: an admin needs a rule naming org (`*` never reaches the org's writes).
    const done = await broker.cli("human:ops", ["quarantine", "--app", ORG_APP, "--seq", String(orgJunk), "--reason", "junk on the org stream", "--json"]);
    expect({ code: done.code, stderr: done.stderr }).toEqual({ code: 0, stderr: "" });
    expect(JSON.parse(done.stdout)).toMatchObject({ seq: orgJunk, subject: names().orgMemory("junk"), type: "ledger.quarantined" });

    const view = await eventually(
      "the curator decides the promotion",
      async () => {
        const [p] = (await alice.show(memoryId)).promotions;
        return p?.status === "accepted" ? p : undefined;
      },
      30_000,
    );
    expect(view.decision).toMatchObject({ outcome: "created", approved: true });
    await until("the org projection goes on past the junk", async () => {
      const s = await statusOf(ORG_APP);
      expect(s.blocked).toBeNull();
      expect(s.quarantined).toEqual([orgJunk]);
    });
    const org = await clientAs("human:ops", ORG_APP);
    expect(await org.show(view.decision!.orgMemoryId!)).toMatchObject({ scope: "org", status: "active" });
    expect(applied(orgDisk)).not.toContain(orgJunk);

    // Junk on the org memory's own subject, quarantined: the curator still writes its next version there
    // (the quarantined message counts as the subject's last sequence for the append's expectation).
    const orgMemoryId = view.decision!.orgMemoryId!;
    const onOrgMemory = await injectJunk(names().orgMemory(orgMemoryId));
    const cleared = await broker.cli("human:ops", ["quarantine", "--app", ORG_APP, "--seq", String(onOrgMemory), "--reason", "junk on an org memory", "--json"]);
    expect(cleared.code).toBe(0);
    await alice.propose({ memoryId, title: "payments retries", body: "retry webhooks five times, then alert" });
    await alice.approve(memoryId, { version: 2 });
    await alice.promote(memoryId);
    const merged = await eventually(
      "the curator merges version 2 into the same org memory",
      async () => {
        const p = (await alice.show(memoryId)).promotions.find((x) => x.version === 2);
        return p?.status === "accepted" ? p : undefined;
      },
      30_000,
    );
    expect(merged.decision).toMatchObject({ outcome: "merged", orgMemoryId, orgVersion: 2 });
    expect(await org.show(orgMemoryId)).toMatchObject({ activeVersion: 2 });
  });
});
