import { afterEach, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { naming } from "../../events/subjects.js";
import { EventStore } from "../../services/event-store.js";
import { watchScopes, type ScopeWatch } from "../../services/discovery.js";
import { connectNats } from "../../services/nats.js";
import { NATS_URL, deleteStreams, uniquePrefix } from "../support/env.js";
import { until } from "../support/eventually.js";

/**
 * watchScopes is how the projection supervisor, the curator and the consolidation components follow the
 * ledger's streams as apps appear: each stream offered once, streams created later found, and a stream
 * whose follower failed (threw, or said false) offered again rather than forgotten.
 */
describe("watchScopes", () => {
  let nc: NatsConnection | undefined;
  let watch: ScopeWatch | undefined;
  let prefix = "";

  afterEach(async () => {
    await watch?.stop();
    watch = undefined;
    if (nc) {
      await deleteStreams(nc, prefix);
      await nc.close();
    }
    nc = undefined;
  });

  async function open(): Promise<EventStore> {
    prefix = uniquePrefix("ws");
    nc = await connectNats({ servers: NATS_URL, name: `test-${prefix}` });
    return EventStore.open(nc, naming(prefix));
  }

  it("offers the streams there at start before it resolves, then each new one once", async () => {
    const store = await open();
    await store.ensureAppStream("alpha");
    await store.ensureOrgStream();
    const seen: string[] = [];
    watch = await watchScopes(store, async (scope) => void seen.push(scope.app), { everyMs: 50 });
    expect(seen.sort()).toEqual(["alpha", "org"]);

    await store.ensureAppStream("beta");
    await until("beta offered", () => seen.includes("beta"), 10_000, 25);
    await new Promise((resolve) => setTimeout(resolve, 300)); // several more looks
    expect(seen.sort()).toEqual(["alpha", "beta", "org"]);
  });

  it("offers a stream again after its follower threw or answered false, and reports the throw", async () => {
    const store = await open();
    await store.ensureAppStream("flaky");
    let attempts = 0;
    const errors: unknown[] = [];
    watch = await watchScopes(
      store,
      async () => {
        attempts++;
        if (attempts === 1) throw new Error("first start failed");
        if (attempts === 2) return false;
        return true;
      },
      { everyMs: 50, onError: (err) => errors.push(err) },
    );
    await until("taken on the third offer", () => attempts >= 3, 10_000, 25);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(attempts).toBe(3);
    expect(errors.map((e) => (e as Error).message)).toEqual(["first start failed"]);
  });

  it("calls nothing after stop() resolved", async () => {
    const store = await open();
    const seen: string[] = [];
    watch = await watchScopes(store, async (scope) => void seen.push(scope.app), { everyMs: 50 });
    await watch.stop();
    await store.ensureAppStream("late");
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(seen).toEqual([]);
  });
});
