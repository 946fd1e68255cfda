import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectNats, deliveryOf, deliveryPosition } from "../../services/nats.js";
import { uniquePrefix } from "../support/env.js";

/**
 * Replays read each delivery's stream sequence and pending count from its reply subject
 * (services/nats.ts, deliveryPosition) instead of the client's parse of every field. It must agree with
 * the client on every delivery of a real server, and say "not mine" (undefined) rather than guess.
 */
describe("deliveryPosition", () => {
  it("reads both reply-subject layouts the client reads, and refuses anything else", () => {
    expect(deliveryPosition("$JS.ACK.s_app_x.c0nsumer.1.4711.12.1764500000000000000.3")).toEqual({ seq: 4711, pending: 3 });
    expect(deliveryPosition("$JS.ACK.hub.ACCHASH.s_app_x.c0nsumer.2.9007199254740991.12.1764500000000000000.0.rAnD0m")).toEqual({ seq: 9007199254740991, pending: 0 });
    expect(deliveryPosition("$JS.ACK._..s.c.1.5.5.1.7")).toEqual({ seq: 5, pending: 7 });
    for (const refused of [
      "",
      "_INBOX.abc.1",
      "$JS.ACK.s.c.1.5.5.1", // 8 tokens
      "$JS.ACK.d.h.s.c.1.5.5.1", // 10 tokens
      "$JS.ACK.s.c.1.x5.5.1.0", // not digits
      "$JS.ACK.s.c.1.5.5.1.", // empty pending
      "$JS.ACK.s.c.1.-5.5.1.0",
      "$JS.NAK.s.c.1.5.5.1.0",
    ]) {
      expect(deliveryPosition(refused), refused).toBeUndefined();
    }
    expect(deliveryPosition(undefined as unknown as string)).toBeUndefined();
  });

  describe("against a real consumer", () => {
    let nc: NatsConnection;
    let stream: string;

    beforeAll(async () => {
      nc = await connectNats({ name: "delivery-position-test" });
      stream = `${uniquePrefix()}_dp`;
      await jetstreamManager(nc).then((jsm) => jsm.streams.add({ name: stream, subjects: [`${stream}.>`] }));
      const js = jetstream(nc);
      for (let i = 0; i < 300; i++) await js.publish(`${stream}.m${i % 7}`, new Uint8Array([i % 256]));
    });
    afterAll(async () => {
      await jetstreamManager(nc).then((jsm) => jsm.streams.delete(stream)).catch(() => undefined);
      await nc?.close();
    });

    it("agrees with the client's own parse on every delivery of an ordered consumer, from any start", async () => {
      for (const start of [1, 150, 300]) {
        const consumer = await jetstream(nc).consumers.get(stream, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: start });
        const messages = await consumer.consume({ max_messages: 64 });
        let seen = 0;
        for await (const m of messages) {
          const fast = deliveryPosition((m as unknown as { reply: string }).reply);
          expect(fast).toEqual({ seq: m.seq, pending: m.info.pending });
          expect(deliveryOf(m)).toEqual(fast);
          seen++;
          if (m.info.pending === 0) break;
        }
        messages.stop();
        expect(seen).toBe(301 - start);
      }
    });
  });
});
