import { jetstreamManager } from "@nats-io/jetstream";
import { NoRespondersError, TimeoutError } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { causedBy, connectNats, isStreamNotFound } from "../../services/nats.js";
import { MemoryClient } from "../../services/client.js";
import { NATS_URL, uniquePrefix } from "../support/env.js";
import type { NatsConnection } from "@nats-io/transport-node";

/** Failure decisions branch on the NATS clients' error classes and codes, as the real server raises them. */
describe("NATS errors by class, never by message text", () => {
  let nc: NatsConnection;
  beforeAll(async () => {
    nc = await connectNats({ servers: NATS_URL, name: "test-errors" });
  });
  afterAll(async () => {
    await nc.close();
  });

  it("a missing stream is recognised by its code, from the manager and from a consumer lookup", async () => {
    const jsm = await jetstreamManager(nc);
    const missing = `${uniquePrefix("nostream")}_app_x`;
    const fromInfo = await jsm.streams.info(missing).catch((e: unknown) => e);
    expect(isStreamNotFound(fromInfo)).toBe(true);
    const fromDelete = await jsm.streams.delete(missing).catch((e: unknown) => e);
    expect(isStreamNotFound(fromDelete)).toBe(true);
    expect(isStreamNotFound(new Error("stream not found"))).toBe(false);
  });

  it("no responders and timeouts are found through the request error's cause", async () => {
    const noResponders = await nc.request(`${uniquePrefix("nobody")}.x`, "{}", { timeout: 500 }).catch((e: unknown) => e);
    expect(causedBy(noResponders, NoRespondersError)).toBe(true);
    expect(causedBy(noResponders, TimeoutError)).toBe(false);
    // The SDK maps it to `unavailable`, keeping the client's error as the cause.
    const client = new MemoryClient(nc, { app: "app1", as: "agent-a", prefix: uniquePrefix("noservice"), timeoutMs: 500 });
    const err = await client.show("m1").catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "unavailable" });
    expect(causedBy(err, NoRespondersError)).toBe(true);
  });
});
