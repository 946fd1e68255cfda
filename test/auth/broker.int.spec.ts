import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { openSync, closeSync } from "node:fs";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { PermissionViolationError, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { naming } from "../../events/subjects.js";
import { MemledgerError } from "../../schemas/errors.js";
import type { AppendOutcome } from "../../schemas/commands.js";
import type { CredentialsFile } from "../../services/auth/broker-config.js";
import type { AutoApproved } from "../../services/auth/guard.js";
import { loadPolicy } from "../../services/auth/load.js";
import { run } from "../../services/cli/program.js";
import { MemoryClient } from "../../services/client.js";
import { CommandService } from "../../services/command-service.js";
import { connectNats } from "../../services/nats.js";
import { uniquePrefix } from "../support/env.js";
import { freePort } from "../support/servers.js";

/**
 * Identity from the broker, end to end: `memledger auth config` turns a policy into a nats-server
 * configuration; a private nats-server runs with it; the command service connects as the service user
 * with the same policy; agents, a reviewer and the curator connect as themselves.
 */

const NATS_SERVER = process.env.NATS_SERVER_BIN ?? "/usr/sbin/nats-server";
const APP = "app1";

const POLICY = {
  version: 1,
  roles: {
    agent: {
      allow: [
        { verbs: ["*"], scopes: ["agent:self"], autoApprove: true },
        { verbs: ["propose"], scopes: ["team:*", "app"] },
      ],
    },
    reviewer: { allow: [{ verbs: ["propose", "approve", "reject", "supersede", "rollback"], scopes: ["team:*", "app"] }] },
    curator: { allow: [{ verbs: ["*"], scopes: ["org"] }] },
    admin: { allow: [{ verbs: ["*"], scopes: ["*"] }] },
  },
  actors: {
    "agent:*": { roles: ["agent"] },
    "agent:coder-1": { roles: ["agent"] },
    "agent:coder-2": { roles: ["agent"] },
    "human:alice": { roles: ["reviewer"] },
    "service:curator": { roles: ["curator"] },
  },
};

/** Every permission violation the server reported on a connection, as the v3 client surfaces them: status events of type "error". */
function violations(nc: NatsConnection): PermissionViolationError[] {
  const seen: PermissionViolationError[] = [];
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === "error" && s.error instanceof PermissionViolationError) seen.push(s.error);
    }
  })();
  return seen;
}

/**
 * Publishes, then flushes: the server answers a refused PUB with -ERR before the PONG of the flush, so
 * once the flush resolved the violation has been dispatched (a few turns of the event loop let the
 * status iterator deliver it).
 */
async function publishRefused(nc: NatsConnection, seen: PermissionViolationError[], subject: string, data = "{}"): Promise<PermissionViolationError | undefined> {
  const before = seen.length;
  nc.publish(subject, data);
  await nc.flush();
  for (let i = 0; i < 20 && seen.length === before; i++) await new Promise((r) => setImmediate(r));
  return seen.slice(before).find((v) => v.subject === subject);
}

describe("auth-enabled broker with a policy", () => {
  let dir: string;
  let server: ChildProcess;
  let prefix: string;
  let creds: CredentialsFile;
  let serviceNc: NatsConnection;
  let service: CommandService;
  const connections: NatsConnection[] = [];
  let authConfigStdout = "";

  const names = () => naming(prefix);
  const stream = () => names().appStream(APP);
  const messages = async (): Promise<number> => {
    const jsm = await jetstreamManager(serviceNc);
    try {
      return (await jsm.streams.info(stream())).state.messages;
    } catch {
      return 0;
    }
  };
  const connectAs = async (name: string): Promise<NatsConnection> => {
    const nc = await connectNats({ servers: creds.users[name]!.url, name: `test-${name}`, reconnect: false });
    connections.push(nc);
    return nc;
  };
  const clientAs = async (name: string): Promise<{ nc: NatsConnection; client: MemoryClient; seen: PermissionViolationError[] }> => {
    const nc = await connectAs(name);
    const seen = violations(nc);
    return { nc, seen, client: new MemoryClient(nc, { app: APP, as: name, prefix }) };
  };
  const refusal = async (work: Promise<unknown>): Promise<MemledgerError> => {
    const err = await work.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MemledgerError);
    return err as MemledgerError;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "memledger-auth-"));
    prefix = uniquePrefix("auth");
    const policyFile = join(dir, "policy.json");
    await writeFile(policyFile, JSON.stringify(POLICY));
    const port = await freePort();

    // The CLI writes the config and the credentials; nothing secret goes to stdout.
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let out = "";
    let err = "";
    stdout.on("data", (c: Buffer) => (out += c.toString()));
    stderr.on("data", (c: Buffer) => (err += c.toString()));
    const code = await run(
      ["auth", "config", "--policy", policyFile, "--out", join(dir, "nats.conf"), "--port", String(port), "--prefix", prefix, "--json"],
      { stdin: process.stdin, stdout, stderr, env: {} } as never,
    );
    expect({ code, err }).toEqual({ code: 0, err: "" });
    authConfigStdout = out;
    creds = JSON.parse(await readFile(join(dir, "nats.credentials.json"), "utf8")) as CredentialsFile;

    const log = openSync(join(dir, "nats-server.log"), "a");
    server = spawn(NATS_SERVER, ["-c", join(dir, "nats.conf")], { stdio: ["ignore", log, log] });
    closeSync(log);

    // Wait until the server takes connections (readiness, not a timing assertion).
    for (let attempt = 0; ; attempt++) {
      try {
        serviceNc = await connectNats({ servers: creds.users.memledger!.url, name: "test-service", reconnect: false, timeoutMs: 1_000 });
        break;
      } catch (e) {
        if (attempt >= 100 || server.exitCode !== null) {
          throw new Error(`nats-server did not start: ${(e as Error).message}\n${await readFile(join(dir, "nats-server.log"), "utf8")}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    service = await CommandService.start(serviceNc, { prefix, policy: await loadPolicy(policyFile) });
  });

  afterAll(async () => {
    for (const nc of connections) await nc.close().catch(() => undefined);
    await service?.stop().catch(() => undefined);
    await serviceNc?.close().catch(() => undefined);
    if (server && server.exitCode === null) {
      const exited = once(server, "exit");
      process.kill(server.pid!, "SIGTERM");
      await exited;
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("auth config wrote a private config and credentials file, and printed no password", async () => {
    const printed = JSON.parse(authConfigStdout) as { users: { name: string; user: string }[]; config: string; credentials: string };
    expect(printed.users.map((u) => u.name)).toEqual(["memledger", "agent:coder-1", "agent:coder-2", "human:alice", "service:curator", "auditor"]);
    for (const { password } of Object.values(creds.users)) {
      expect(password.length).toBeGreaterThanOrEqual(24);
      expect(authConfigStdout).not.toContain(password);
    }
    expect((await stat(printed.config)).mode & 0o777).toBe(0o600);
    expect((await stat(printed.credentials)).mode & 0o777).toBe(0o600);
    // A wrong password does not get in.
    const wrong = creds.users["agent:coder-1"]!.url.replace(/:[^:@/]+@/, ":not-the-password@");
    await expect(connectNats({ servers: wrong, reconnect: false })).rejects.toMatchObject({ code: "unavailable" });
  });

  it("an agent cannot publish on a stream subject or the JetStream API: the broker refuses, nothing lands", async () => {
    const { client, nc, seen } = await clientAs("agent:coder-1");
    const seed = await client.propose({ title: "seed", body: "so the stream exists" });
    const before = await messages();
    expect(before).toBeGreaterThanOrEqual(1);

    const forged = JSON.stringify({ id: "forged", type: "memory.approved", data: { version: 1 } });
    const onStream = names().aggregate(APP, "memory", seed.memoryId);
    const v1 = await publishRefused(nc, seen, onStream, forged);
    expect(v1).toBeInstanceOf(PermissionViolationError);
    expect(v1).toMatchObject({ operation: "publish", subject: onStream });
    expect(v1!.message).toMatch(/permissions violation/i);

    const other = names().aggregate(APP, "memory", "x");
    expect(await publishRefused(nc, seen, other, forged)).toMatchObject({ operation: "publish", subject: other });

    const deleteStream = `$JS.API.STREAM.DELETE.${stream()}`;
    expect(await publishRefused(nc, seen, deleteStream)).toMatchObject({ operation: "publish", subject: deleteStream });
    const purge = `$JS.API.STREAM.PURGE.${stream()}`;
    expect(await publishRefused(nc, seen, purge)).toMatchObject({ operation: "publish", subject: purge });

    expect(await messages()).toBe(before);
    // Still connected and still able to use the ledger the proper way.
    expect((await client.show(seed.memoryId)).status).toBe("proposed");
  });

  it("an agent stores its transcript in the bucket the service created, and cannot create or reconfigure that bucket", async () => {
    const { client, nc, seen } = await clientAs("agent:coder-1");
    const transcriptsStream = `OBJ_${names().transcriptsBucket()}`;
    const before = await jetstreamManager(serviceNc).then((jsm) => jsm.streams.info(transcriptsStream));
    // A bucket of the agent's own making could drop transcripts (a max age of a second, say).
    const hostile = JSON.stringify({ name: transcriptsStream, subjects: [`$O.${names().transcriptsBucket()}.>`], max_age: 1_000_000_000 });
    for (const verb of ["CREATE", "UPDATE"]) {
      const subject = `$JS.API.STREAM.${verb}.${transcriptsStream}`;
      expect(await publishRefused(nc, seen, subject, hostile)).toMatchObject({ operation: "publish", subject });
    }
    const after = await jetstreamManager(serviceNc).then((jsm) => jsm.streams.info(transcriptsStream));
    expect(after.config.max_age).toBe(before.config.max_age);
    expect(after.created).toBe(before.created);

    // The proper way still works: the SDK stores it (digest-addressed) and session.ended references it.
    const session = await client.startSession({ task: "transcript" });
    const ended = await client.endSession(session.sessionId, { transcriptBytes: new TextEncoder().encode('{"role":"user","content":"hi"}\n') });
    expect(ended.type).toBe("session.ended");
    expect((await client.showSession(session.sessionId)).transcript).toMatchObject({ digest: expect.stringMatching(/^sha256:/) });
  });

  it("an agent cannot publish on another agent's command subject", async () => {
    const { nc, seen } = await clientAs("agent:coder-1");
    const before = await messages();
    const asOther = names().command(APP, "agent", "coder-2", "propose");
    const v = await publishRefused(nc, seen, asOther, JSON.stringify({ title: "impersonation", body: "x" }));
    expect(v).toMatchObject({ operation: "publish", subject: asOther });
    const asHuman = names().command(APP, "human", "alice", "approve");
    expect(await publishRefused(nc, seen, asHuman, JSON.stringify({ memoryId: "x" }))).toMatchObject({ subject: asHuman });
    // Through the SDK, the broker's refusal is a typed `forbidden`.
    const impostor = new MemoryClient(nc, { app: APP, as: "agent:coder-2", prefix });
    const err = await refusal(impostor.propose({ title: "impersonation", body: "x" }));
    expect(err).toMatchObject({ code: "forbidden", message: expect.stringMatching(/^the broker refused propose on .*may not act as agent:coder-2/) });
    expect(await messages()).toBe(before);
  });

  it("a payload claiming another identity is recorded as the subject's actor", async () => {
    const { client } = await clientAs("agent:coder-1");
    const { client: alice } = await clientAs("human:alice");
    const forged = { title: "who am I", body: "claims to be root", actor: { kind: "human", id: "root" } } as never;
    const proposed = await client.propose(forged);
    const events = await alice.log({ memoryId: proposed.memoryId });
    expect(events.map((e) => [e.type, e.actor])).toEqual([["memory.proposed", { kind: "agent", id: "coder-1" }]]);
  });

  it("an agent approving an app memory is forbidden, naming actor, verb, scope and permission; nothing is appended", async () => {
    const { client } = await clientAs("agent:coder-1");
    const { client: coder2 } = await clientAs("agent:coder-2");
    const proposed = await client.propose({ title: "an app memory", body: "x" });
    const before = await messages();
    for (const attempt of [() => client.approve(proposed.memoryId), () => coder2.approve(proposed.memoryId), () => coder2.reject(proposed.memoryId, "no")]) {
      const err = await refusal(attempt());
      expect(err.code).toBe("forbidden");
      expect(err.message).toMatch(/^agent:coder-[12] may not (approve|reject) in scope app: missing permission (approve|reject) on app; its roles \(agent\) do not allow it/);
      expect(err.details).toMatchObject({ verb: expect.stringMatching(/approve|reject/), scope: "app", memoryId: proposed.memoryId });
    }
    expect(await messages()).toBe(before);
    expect((await client.show(proposed.memoryId)).status).toBe("proposed");
  });

  it("a reviewer (human) approves an app memory", async () => {
    const { client } = await clientAs("agent:coder-1");
    const { client: alice } = await clientAs("human:alice");
    const proposed = await client.propose({ title: "reviewed", body: "x", scope: "team:payments" });
    const approved = await alice.approve(proposed.memoryId);
    expect(approved).toMatchObject({ type: "memory.approved", version: 1 });
    const app = await client.propose({ title: "reviewed app memory", body: "x" });
    await alice.approve(app.memoryId);
    const events = await alice.log({ memoryId: app.memoryId });
    expect(events.map((e) => [e.type, `${e.actor.kind}:${e.actor.id}`])).toEqual([
      ["memory.proposed", "agent:coder-1"],
      ["memory.approved", "human:alice"],
    ]);
    expect((await alice.show(app.memoryId)).status).toBe("active");
  });

  it("an agent's scratchpad proposal is auto-approved by the policy, once, also when retried", async () => {
    const { client } = await clientAs("agent:coder-1");
    const proposed = (await client.propose({ title: "my note", body: "x", scope: "agent:coder-1", key: "note-1" })) as AutoApproved;
    expect(proposed.autoApproved).toMatchObject({ type: "memory.approved", version: 1, replayed: false });
    // A scratchpad is read by its agent (a reviewer may not read it: test/hostile/read-scopes.int.spec.ts).
    const events = await client.log({ memoryId: proposed.memoryId });
    expect(events.map((e) => [e.type, `${e.actor.kind}:${e.actor.id}`, e.scope])).toEqual([
      ["memory.proposed", "agent:coder-1", "agent:coder-1"],
      ["memory.approved", "service:policy", "agent:coder-1"],
    ]);
    expect(events[1]!.causationId).toBe(proposed.eventId);
    expect(events[1]!.seq).toBe(proposed.autoApproved!.seq);
    expect((await client.show(proposed.memoryId)).status).toBe("active");

    // The retry replays both decisions: no third event.
    const retry = (await client.propose({ title: "my note", body: "x", scope: "agent:coder-1", key: "note-1" })) as AutoApproved;
    expect(retry).toMatchObject({ memoryId: proposed.memoryId, replayed: true, autoApproved: { replayed: true, seq: proposed.autoApproved!.seq } });
    expect(await client.log({ memoryId: proposed.memoryId })).toHaveLength(2);

    // A revision in the scratchpad is auto-approved too.
    const v2 = (await client.propose({ memoryId: proposed.memoryId, title: "my note, v2", body: "y", scope: "agent:coder-1" })) as AutoApproved;
    expect(v2).toMatchObject({ version: 2, autoApproved: { version: 2 } });
    expect((await client.show(proposed.memoryId)).activeVersion).toBe(2);
  });

  it("an agent cannot write another agent's scratchpad nor change a memory in it", async () => {
    const { client } = await clientAs("agent:coder-1");
    const { client: coder2 } = await clientAs("agent:coder-2");
    const mine = await client.propose({ title: "mine", body: "x", scope: "agent:coder-1" });
    const before = await messages();
    const write = await refusal(coder2.propose({ title: "into coder-1's pad", body: "x", scope: "agent:coder-1" }));
    expect(write).toMatchObject({ code: "forbidden", message: expect.stringMatching(/^agent:coder-2 may not propose in scope agent:coder-1/) });
    const supersede = await refusal(coder2.supersede(mine.memoryId, "mine now"));
    expect(supersede).toMatchObject({ code: "forbidden", message: expect.stringMatching(/^agent:coder-2 may not supersede in scope agent:coder-1/) });
    // A revision is judged by the memory's stored scope, not by the scope the payload names.
    const revise = await refusal(coder2.propose({ memoryId: mine.memoryId, title: "hijack", body: "x", scope: "agent:coder-2" }));
    expect(revise).toMatchObject({ code: "forbidden", message: expect.stringMatching(/may not propose in scope agent:coder-1/) });
    expect(await messages()).toBe(before);
  });

  it("an agent cannot write org scope; the curator can", async () => {
    const { client } = await clientAs("agent:coder-1");
    const { client: alice } = await clientAs("human:alice");
    const { client: curator } = await clientAs("service:curator");
    const before = await messages();
    const err = await refusal(client.propose({ title: "org-wide rule", body: "x", scope: "org" }));
    expect(err).toMatchObject({ code: "forbidden", details: { verb: "propose", scope: "org", actor: { kind: "agent", id: "coder-1" } } });
    expect(err.message).toMatch(/^agent:coder-1 may not propose in scope org: missing permission propose on org/);
    // Not even a reviewer writes org memories.
    expect(await refusal(alice.propose({ title: "org-wide rule", body: "x", scope: "org" }))).toMatchObject({ code: "forbidden" });
    expect(await messages()).toBe(before);

    const org: AppendOutcome = await curator.propose({ title: "org-wide rule", body: "x", scope: "org" });
    await curator.approve(org.memoryId);
    expect(await curator.show(org.memoryId)).toMatchObject({ scope: "org", status: "active" });
    expect(await messages()).toBe(before + 2);
    // And an agent cannot retire it.
    expect(await refusal(client.supersede(org.memoryId, "stale"))).toMatchObject({ code: "forbidden" });
  });
});
