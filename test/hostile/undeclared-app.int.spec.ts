import { readdir } from "node:fs/promises";
import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { MemoryClient } from "../../services/client.js";
import { parsePolicy } from "../../services/auth/load.js";
import { startLedger, type Ledger } from "../support/env.js";
import { HOSTILE_POLICY, refusal, startGovernedLedger, type GovernedLedger } from "./governed-ledger.js";

/**
 * Issue 9 item 5: creating streams at will. Under a policy that lists its apps, a command naming any
 * other app (claim, session, propose, anything) is `not_found` and creates nothing: no stream, so no
 * runner, files or consumer either. The generated broker already refuses such subjects for actors whose
 * permissions follow the policy's apps; the service refuses them too, for an actor whose broker entry
 * names more apps than the policy declares, and behind a broker without auth.
 */

const GHOST = "ghost";

/** One attempt per kind of command: writes that would create the stream, and reads. */
const attempts = (c: MemoryClient): [string, () => Promise<unknown>][] => [
  ["claim", () => c.claim("task-1")],
  ["open_task", () => c.openTask("task-2", { title: "a task" })],
  ["session_start", () => c.startSession({ task: "haunting" })],
  ["propose", () => c.propose({ title: "boo", body: "a memory in an app nobody declared" })],
  ["propose keyed", () => c.propose({ title: "boo", body: "again", key: "k1" })],
  ["approve", () => c.approve("some-memory")],
  ["promote", () => c.promote("some-memory")],
  ["show", () => c.show("some-memory")],
  ["log", () => c.log()],
  ["hydrate", () => c.hydrate({ task: "anything" })],
  ["search", () => c.search("anything")],
];

/** Names of every stream of the prefix and the durable consumers on each: what a new app would add to. */
async function serverState(ledger: { serviceNc: Parameters<typeof jetstreamManager>[0]; prefix: string }): Promise<Record<string, string[]>> {
  const jsm = await jetstreamManager(ledger.serviceNc);
  const state: Record<string, string[]> = {};
  for await (const info of jsm.streams.list()) {
    if (!info.config.name.startsWith(`${ledger.prefix}_`)) continue;
    const consumers: string[] = [];
    for await (const c of jsm.consumers.list(info.config.name)) if (c.config.durable_name) consumers.push(c.config.durable_name);
    state[info.config.name] = consumers.sort();
  }
  return state;
}

describe("undeclared apps under a policy, on the generated broker", () => {
  let ledger: GovernedLedger;
  const POLICY = {
    ...HOSTILE_POLICY,
    // eve's broker entry names an app the policy does not declare: the broker lets her send, the service refuses.
    actors: { ...HOSTILE_POLICY.actors, "agent:eve": { roles: ["agent"], apps: ["app1", GHOST] } },
  };

  beforeAll(async () => {
    ledger = await startGovernedLedger(POLICY, { label: "apps" });
    await (await ledger.clientAs("agent:eve")).propose({ title: "declared", body: "app1 exists" });
  });
  afterAll(async () => {
    await ledger?.stop();
  });

  it("every command naming an undeclared app is not_found; no stream, consumer or file appears", async () => {
    const before = await ledger.snapshot(["anything"]);
    const server = await serverState(ledger);
    const eve = await ledger.clientAs("agent:eve", GHOST);
    for (const [verb, attempt] of attempts(eve)) {
      const err = await refusal(attempt());
      expect({ verb, code: err.code }).toEqual({ verb, code: "not_found" });
      expect(err.message).toMatch(/^no app ghost: the policy declares app1/);
    }
    expect(await serverState(ledger)).toEqual(server);
    expect(Object.keys(server)).not.toContain(ledger.service.names.appStream(GHOST));
    expect(await ledger.snapshot(["anything"])).toEqual(before);
    expect(await readdir(ledger.filesRoot)).not.toContain(GHOST);
  });

  it("an actor whose broker permissions follow the policy's apps is refused by the broker itself", async () => {
    const server = await serverState(ledger);
    const alice = await ledger.clientAs("agent:alice", GHOST);
    const err = await refusal(alice.claim("task-1"));
    expect(err).toMatchObject({ code: "forbidden", message: expect.stringMatching(/^the broker refused claim/) });
    expect(await serverState(ledger)).toEqual(server);
  });

  it("control: the same commands on the declared app work", async () => {
    const eve = await ledger.clientAs("agent:eve", "app1");
    await expect(eve.claim("task-1")).resolves.toMatchObject({ holder: "eve" });
    await expect(eve.startSession({ task: "real work" })).resolves.toMatchObject({ type: "session.started" });
  });
});

describe("undeclared apps behind a broker without auth", () => {
  let ledger: Ledger;
  beforeEach(async () => {
    ledger = await startLedger({ policy: parsePolicy(HOSTILE_POLICY) });
  });
  afterEach(async () => {
    await ledger.cleanup();
  });

  it("not_found for every verb and actor, even an admin; nothing is created", async () => {
    const server = await serverState({ serviceNc: ledger.nc, prefix: ledger.prefix });
    for (const who of ["agent:bob", "human:root"]) {
      for (const [verb, attempt] of attempts(ledger.client(who, GHOST))) {
        const err = await refusal(attempt());
        expect({ who, verb, code: err.code }).toEqual({ who, verb, code: "not_found" });
      }
    }
    expect(await serverState({ serviceNc: ledger.nc, prefix: ledger.prefix })).toEqual(server);
    expect(Object.keys(server)).not.toContain(ledger.service.names.appStream(GHOST));
  });
});
