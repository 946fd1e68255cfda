import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemoryClient } from "../../services/client.js";
import { connectNats } from "../../services/nats.js";
import { commandServiceComponent, startMemledger, type Component, type RuntimeContext } from "../../services/runtime.js";
import { MemledgerError } from "../../schemas/errors.js";
import { NATS_URL, deleteStreams, uniquePrefix } from "../support/env.js";

/** A component that records what happens to it, in one shared journal. */
const recorder = (name: string, journal: string[], seen?: (ctx: RuntimeContext) => void): Component => ({
  name,
  async start(ctx) {
    seen?.(ctx);
    journal.push(`start ${name}`);
    return {
      async stop() {
        journal.push(`stop ${name} (connection ${ctx.nc.isClosed() ? "closed" : "open"})`);
      },
    };
  },
});

describe("startMemledger", () => {
  let nc: NatsConnection;
  const prefixes: string[] = [];
  const fresh = () => {
    const p = uniquePrefix("rt");
    prefixes.push(p);
    return p;
  };

  beforeAll(async () => {
    nc = await connectNats({ servers: NATS_URL, name: "test-runtime" });
  });
  afterAll(async () => {
    for (const p of prefixes) await deleteStreams(nc, p);
    await nc?.close();
  });

  it("starts components in order, serves commands, stops them in reverse, then closes the connection", async () => {
    const prefix = fresh();
    const journal: string[] = [];
    let ctxSeen: RuntimeContext | undefined;
    const runtime = await startMemledger({
      servers: NATS_URL,
      prefix,
      replicas: 1,
      components: [recorder("a", journal, (ctx) => (ctxSeen = ctx)), commandServiceComponent(), recorder("b", journal)],
    });
    expect(runtime.components).toEqual(["a", "command-service", "b"]);
    expect(ctxSeen).toMatchObject({ prefix, replicas: 1 });

    const client = new MemoryClient(nc, { app: "rtapp", as: "agent-r", prefix });
    const proposed = await client.propose({ title: "Runtime", body: "served by the runtime" });
    expect((await client.show(proposed.memoryId)).seq).toBe(proposed.seq);

    await runtime.stop();
    await runtime.stop(); // idempotent
    expect(journal).toEqual(["start a", "start b", "stop b (connection open)", "stop a (connection open)"]);
    expect(runtime.nc.isClosed()).toBe(true);
    await expect(runtime.closed).resolves.toBeUndefined();
    await expect(client.show(proposed.memoryId)).rejects.toMatchObject({ code: "unavailable" });
  });

  it("stops what it started and closes the connection when a component fails to start", async () => {
    const journal: string[] = [];
    let conn: NatsConnection | undefined;
    const broken: Component = {
      name: "broken",
      async start() {
        throw new Error("cannot start");
      },
    };
    await expect(
      startMemledger({
        servers: NATS_URL,
        prefix: fresh(),
        components: [recorder("a", journal, (ctx) => (conn = ctx.nc)), broken, recorder("never", journal)],
      }),
    ).rejects.toThrow("cannot start");
    expect(journal).toEqual(["start a", "stop a (connection open)"]);
    expect(conn?.isClosed()).toBe(true);
  });

  it("takes the prefix from MEMLEDGER_PREFIX when none is given", async () => {
    const prefix = fresh();
    const saved = process.env.MEMLEDGER_PREFIX;
    process.env.MEMLEDGER_PREFIX = prefix;
    try {
      const runtime = await startMemledger({ servers: NATS_URL, components: [] });
      expect(runtime.prefix).toBe(prefix);
      await runtime.stop();
    } finally {
      if (saved === undefined) delete process.env.MEMLEDGER_PREFIX;
      else process.env.MEMLEDGER_PREFIX = saved;
    }
  });

  it("refuses a bad prefix or replica count with an invalid error, and an unreachable server as unavailable", async () => {
    await expect(startMemledger({ servers: NATS_URL, prefix: "no.dots", components: [] })).rejects.toMatchObject({ code: "invalid" });
    await expect(startMemledger({ servers: NATS_URL, prefix: fresh(), replicas: 0, components: [] })).rejects.toMatchObject({ code: "invalid" });
    const err = await startMemledger({ servers: "nats://127.0.0.1:1", prefix: fresh(), components: [] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MemledgerError);
    expect(err).toMatchObject({ code: "unavailable" });
    expect((err as Error).message).toContain("nats://127.0.0.1:1");
  });
});
