import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { PermissionViolationError, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { naming } from "../../events/subjects.js";
import { MemledgerError } from "../../schemas/errors.js";
import { loadPolicy } from "../../services/auth/load.js";
import { MemoryClient } from "../../services/client.js";
import { CommandService } from "../../services/command-service.js";
import { EventStore } from "../../services/event-store.js";
import { ProjectionRunner, readStatuses } from "../../services/projection-runner.js";
import { readModelConfig } from "../../services/read-models.js";
import { defaultComponents, startMemledger, type Memledger } from "../../services/runtime.js";
import { deleteRedisKeys } from "../support/env.js";
import { eventually, until as untilHolds } from "../support/eventually.js";
import { newDisk, recordingProjection } from "../support/recording-projection.js";
import { settle, startGeneratedBroker, violations, type GeneratedBroker } from "./generated-broker.js";

/**
 * Issue 9 item 1: a request's reply subject is the sender's choice, and the service publishes as a user
 * that may write the streams. An agent that aims a `show` reply at a stream subject must not get junk
 * into the log; and no user may read replies meant for another (each has its own inbox prefix).
 */

const APP = "app1";
const until = (what: string, check: () => unknown, timeoutMs = 15_000) => untilHolds(what, check, timeoutMs);
const POLICY = {
  version: 1,
  apps: [APP],
  roles: {
    agent: { allow: [{ verbs: ["*"], scopes: ["agent:self"], autoApprove: true }, { verbs: ["propose"], scopes: ["app"] }] },
    reviewer: { allow: [{ verbs: ["*"], scopes: ["app", "team:*"] }] },
  },
  actors: {
    "agent:coder-1": { roles: ["agent"] },
    "agent:coder-2": { roles: ["agent"] },
    "human:alice": { roles: ["reviewer"] },
  },
};

describe("reply subjects and inboxes under the generated broker configuration", () => {
  let broker: GeneratedBroker;
  let serviceNc: NatsConnection;
  let service: CommandService;
  let runner: ProjectionRunner;
  let store: EventStore;
  const disk = newDisk();
  const serviceErrors: { err: unknown; subject: string }[] = [];
  let seedId: string;

  const names = () => naming(broker.prefix);
  const clientAs = async (name: string) => new MemoryClient(await broker.connectAs(name), { app: APP, as: name, prefix: broker.prefix });

  beforeAll(async () => {
    broker = await startGeneratedBroker(POLICY, "reply");
    serviceNc = await broker.connectAs("memledger");
    service = await CommandService.start(serviceNc, {
      prefix: broker.prefix,
      policy: await loadPolicy(broker.policyFile),
      onError: (err, subject) => serviceErrors.push({ err, subject }),
    });
    const alice = await clientAs("human:alice");
    const seed = await alice.propose({ title: "seed", body: "so the app stream exists" });
    await alice.approve(seed.memoryId);
    seedId = seed.memoryId;
    store = await EventStore.open(serviceNc, names());
    await store.ensureOrgStream();
    // A projection of the app stream, run as the service user, as `memledger up` does.
    runner = new ProjectionRunner(store, recordingProjection(disk), { prefix: broker.prefix, app: APP, stream: names().appStream(APP) }, { statusEveryMs: 50 });
    await runner.start();
    expect(await runner.waitFor(2, 10_000)).toBe(true);
  }, 60_000);

  afterAll(async () => {
    await runner?.stop().catch(() => undefined);
    await service?.stop().catch(() => undefined);
    await broker?.stop();
  });

  it("the SDK uses the user's own inbox prefix, which the credentials file names", async () => {
    expect(broker.creds.users["agent:coder-1"]).toMatchObject({ user: "agent.coder-1", inboxPrefix: "_INBOX_agent.coder-1" });
    expect(broker.creds.users.memledger).toMatchObject({ inboxPrefix: "_INBOX_memledger" });
    const coder = await clientAs("agent:coder-1");
    expect((coder.nc as unknown as { options: { inboxPrefix: string } }).options.inboxPrefix).toBe("_INBOX_agent.coder-1");
    // The service can still answer it: replies go into the user's own inbox.
    expect((await coder.show(seedId)).status).toBe("active");
  });

  it("a show whose reply subject is a stream subject, the org, the JetStream API or someone else's inbox gets no reply, is logged, and appends nothing", async () => {
    const nc = await broker.connectAs("agent:coder-1");
    const seen = violations(nc);
    const before = await broker.streamCounts();
    expect(Object.keys(before).sort()).toEqual([names().appStream(APP), names().orgStream()].sort());
    const checkpoint = runner.checkpoint;
    const hostileReplies = [
      names().aggregate(APP, "memory", seedId),
      names().aggregate(APP, "memory", "brand-new"),
      names().orgMemory("org-junk"),
      names().quarantine(APP, 1),
      `${broker.prefix}.org.>`,
      `${broker.prefix}.app.${APP}.>`,
      `$JS.API.STREAM.PURGE.${names().appStream(APP)}`,
      "_INBOX_human.alice.stolen",
      "_INBOX_agent.coder-2.x",
      "_INBOX",
      "elsewhere.entirely",
    ];
    const errorsBefore = serviceErrors.length;
    const subject = names().command(APP, "agent", "coder-1", "show");
    for (const reply of hostileReplies) nc.publish(subject, JSON.stringify({ memoryId: seedId }), { reply });
    await settle(nc);
    // The agent may publish its own command subject with any reply: the broker does not refuse it.
    expect(seen).toEqual([]);
    // Handled: each refused (logged), or else answered (and then some stream grew: the check below fails).
    await until("every hostile request handled", async () =>
      expect(serviceErrors.length - errorsBefore === hostileReplies.length || !isDeepStrictEqual(await broker.streamCounts(), before)).toBe(true),
    );
    expect(await broker.streamCounts()).toEqual(before);
    const refusals = serviceErrors.slice(errorsBefore);
    for (const [i, reply] of hostileReplies.entries()) {
      const { err, subject: where } = refusals.find((r) => (r.err as MemledgerError).details?.reply === reply)!;
      expect(where).toBe(subject);
      expect(err).toBeInstanceOf(MemledgerError);
      expect(err).toMatchObject({ code: "forbidden", details: { reply, subject } });
      expect((err as Error).message).toMatch(/without running it: reply subject .* (is under the ledger prefix|is not an inbox of the sender|is not a plain subject)/);
      expect(i).toBeGreaterThanOrEqual(0);
    }
    // Nothing reached any stream; the projection did not block and has nothing new to apply.
    expect(await broker.streamCounts()).toEqual(before);
    await new Promise((r) => setTimeout(r, 200));
    expect(runner.checkpoint).toBe(checkpoint);
    const statuses = (await readStatuses(store)).filter((s) => s.stream === names().appStream(APP));
    expect(statuses.length).toBeGreaterThan(0);
    for (const s of statuses) expect(s.blocked).toBeNull();
    // And the agent still gets answers the proper way.
    const coder = await clientAs("agent:coder-1");
    expect((await coder.show(seedId)).memoryId).toBe(seedId);
  });

  it("a command with a hostile reply subject is not run at all: a propose aimed at the stream appends nothing", async () => {
    const nc = await broker.connectAs("agent:coder-1");
    const before = await broker.streamCounts();
    const errorsBefore = serviceErrors.length;
    const reply = names().aggregate(APP, "memory", seedId);
    nc.publish(names().command(APP, "agent", "coder-1", "propose"), JSON.stringify({ title: "smuggled", body: "x" }), { reply });
    await settle(nc);
    await until("handled", async () => expect(serviceErrors.length === errorsBefore + 1 || !isDeepStrictEqual(await broker.streamCounts(), before)).toBe(true));
    expect(await broker.streamCounts()).toEqual(before);
    expect(serviceErrors.at(-1)!.err).toMatchObject({ code: "forbidden", details: { reply } });
  });

  it("a user cannot subscribe to another user's inbox nor the shared _INBOX.>, and never sees another's reply", async () => {
    const thief = await broker.connectAs("agent:coder-2");
    const seen = violations(thief);
    const stolen: string[] = [];
    for (const subject of ["_INBOX_agent.coder-1.>", "_INBOX.>", "_INBOX_human.alice.>", ">"]) {
      // A refused subscription ends with its error; a message would be a stolen reply.
      thief.subscribe(subject, { callback: (err, msg) => void (err ? undefined : stolen.push(msg.subject)) });
    }
    await settle(thief);
    await until("four subscription violations", () => expect(seen.filter((v) => v.operation === "subscription")).toHaveLength(4));
    expect(seen.map((v) => v.subject).sort()).toEqual([">", "_INBOX.>", "_INBOX_agent.coder-1.>", "_INBOX_human.alice.>"].sort());
    for (const v of seen) expect(v.message).toMatch(/permissions violation for subscription/i);

    // The victim's requests are answered, into its own inbox only.
    const victim = await clientAs("agent:coder-1");
    const alice = await clientAs("human:alice");
    expect((await victim.show(seedId)).memoryId).toBe(seedId);
    expect((await alice.show(seedId)).memoryId).toBe(seedId);
    await settle(thief);
    expect(stolen).toEqual([]);

    // Nor can the thief have the service aim a reply into the victim's inbox.
    const errorsBefore = serviceErrors.length;
    thief.publish(names().command(APP, "agent", "coder-2", "show"), JSON.stringify({ memoryId: seedId }), { reply: "_INBOX_agent.coder-1.planted" });
    await settle(thief);
    await until("refused", () => expect(serviceErrors.length).toBe(errorsBefore + 1));
    expect((serviceErrors.at(-1)!.err as Error).message).toMatch(/not an inbox of the sender \(_INBOX\.> or _INBOX_agent\.coder-2\.>\)/);
  });

  it("the SDK of a user whose inbox prefix is forced to the shared one gets no answer: the broker refuses its reply subscription", async () => {
    const { connectNats } = await import("../../services/nats.js");
    const nc = await connectNats({ servers: broker.creds.users["agent:coder-1"]!.url, reconnect: false, inboxPrefix: "_INBOX" });
    const seen = violations(nc);
    const client = new MemoryClient(nc, { app: APP, as: "agent:coder-1", prefix: broker.prefix, timeoutMs: 1_000 });
    const before = await broker.streamCounts();
    await expect(client.show(seedId)).rejects.toBeInstanceOf(MemledgerError);
    await until("subscription refused", () => expect(seen.some((v) => v.operation === "subscription" && v.subject.startsWith("_INBOX."))).toBe(true));
    expect(await broker.streamCounts()).toEqual(before);
    await nc.close();
  });
});

describe("memledger up's components, as the service user of the generated configuration", () => {
  let broker: GeneratedBroker;
  let ledger: Memledger;
  let dir: string;
  const errors: string[] = [];
  const refusedByBroker: string[] = [];

  beforeAll(async () => {
    broker = await startGeneratedBroker(
      {
        ...POLICY,
        roles: { ...POLICY.roles, curator: { allow: [{ verbs: ["*"], scopes: ["org"] }] } },
        actors: { ...POLICY.actors, "service:curator": { roles: ["curator"] } },
      },
      "upauth",
    );
    dir = await mkdtemp(join(tmpdir(), "memledger-upauth-"));
    const readModels = readModelConfig({}, { filesRoot: join(dir, "files"), searchDir: join(dir, "search"), vectors: null });
    ledger = await startMemledger({
      servers: broker.creds.users.memledger!.url,
      prefix: broker.prefix,
      policy: await loadPolicy(broker.policyFile),
      components: defaultComponents({
        readModels,
        instance: { dataDir: join(dir, "data"), heartbeatMs: 500, lapseMs: 2_500, leaseTtlMs: 3_000 },
        curatorPolicy: { autoApprove: true },
      }),
      onError: (err, where) => errors.push(`${where}: ${(err as Error).message}`),
    });
    void (async () => {
      for await (const s of ledger.nc.status()) {
        if (s.type === "error" && s.error instanceof PermissionViolationError) refusedByBroker.push(`${s.error.operation} ${s.error.subject}`);
      }
    })();
  }, 60_000);

  afterAll(async () => {
    await ledger?.stop().catch(() => undefined);
    await broker?.stop();
    await deleteRedisKeys(broker.prefix).catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("commands, projections (files, claims, search), hydrate and the curator all work, and the broker refuses nothing of theirs", async () => {
    expect(ledger.components).toEqual(expect.arrayContaining(["command-service", "projections", "curator"]));
    expect((ledger.nc as unknown as { options: { inboxPrefix: string } }).options.inboxPrefix).toBe("_INBOX_memledger");
    const connect = async (name: string) => new MemoryClient(await broker.connectAs(name), { app: APP, as: name, prefix: broker.prefix });
    const alice = await connect("human:alice");
    const coder = await connect("agent:coder-1");
    const proposed = await coder.propose({ title: "webhook retries", body: "Stripe webhooks retry with exponential backoff.", tags: ["payments"] });
    const approved = await alice.approve(proposed.memoryId);
    await coder.openTask("fix-webhooks");
    const claimed = await coder.claim("fix-webhooks");
    expect(claimed.holder).toBe("coder-1");
    const found = await eventually("the search projection has the memory", async () => {
      const hits = await coder.search("webhook retries", { minSeq: approved.seq });
      return hits.length > 0 ? hits : undefined;
    });
    expect(found[0]).toMatchObject({ memoryId: proposed.memoryId });
    const pack = await coder.hydrate({ task: "webhook retries", minSeq: claimed.seq });
    expect(pack.markdown).toContain("webhook retries");
    const tasks = await eventually("the claims projection has the task", async () => {
      const open = await coder.tasks({ minSeq: claimed.seq });
      return open.length > 0 ? open : undefined;
    });
    expect(tasks[0]).toMatchObject({ name: "fix-webhooks" });

    await alice.promote(proposed.memoryId);
    const promotion = await eventually(
      "the curator decides",
      async () => {
        const [p] = (await alice.show(proposed.memoryId)).promotions;
        return p?.status === "accepted" ? p : undefined;
      },
      30_000,
    );
    expect(promotion.decision).toMatchObject({ outcome: "created", approved: true });
    await settle(ledger.nc);
    expect(refusedByBroker).toEqual([]);
    expect(errors.filter((e) => /permission|authorization/i.test(e))).toEqual([]);
  });
});
