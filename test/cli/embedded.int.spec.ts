import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { INSTALL_HINT, isLoopback, startEmbedded } from "../../services/embedded.js";
import { MemledgerError } from "../../schemas/errors.js";
import { freePort } from "../support/servers.js";

/** The embedded default's decisions, without the binaries or with nothing to do. */

const dirs: string[] = [];
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function attempt(options: { nats: string; redis: string; embedded: boolean | undefined; searchDirs?: string[] }) {
  const dir = await mkdtemp(path.join(tmpdir(), "memledger-emb-"));
  dirs.push(dir);
  const logged: string[] = [];
  const outcome = await startEmbedded({
    natsUrl: options.nats,
    redisUrl: options.redis,
    embedded: options.embedded,
    dataDir: dir,
    env: {},
    log: (line) => logged.push(line),
    searchDirs: options.searchDirs,
  }).catch((err: unknown) => err);
  return { outcome, logged };
}

describe("startEmbedded", () => {
  it("names the one install command when nats-server is missing, and starts nothing", async () => {
    const { outcome, logged } = await attempt({ nats: `nats://127.0.0.1:${await freePort()}`, redis: `redis://127.0.0.1:${await freePort()}`, embedded: true, searchDirs: [] });
    expect(outcome).toBeInstanceOf(MemledgerError);
    expect((outcome as MemledgerError).code).toBe("unavailable");
    expect((outcome as MemledgerError).message).toContain(`nats-server is not installed; install it with: ${INSTALL_HINT}`);
    expect(INSTALL_HINT).toBe("apt-get install nats-server redis-server");
    expect(logged).toEqual([]);
  });

  it("starts nothing for URLs that answer, for configured URLs without --embedded, or for remote URLs", async () => {
    const running = await attempt({ nats: "nats://127.0.0.1:4222", redis: "redis://127.0.0.1:6379", embedded: true });
    expect((running.outcome as { started: unknown[] }).started).toEqual([]);

    const configured = await attempt({ nats: `nats://127.0.0.1:${await freePort()}`, redis: `redis://127.0.0.1:${await freePort()}`, embedded: undefined });
    expect((configured.outcome as { started: unknown[] }).started).toEqual([]);

    // 192.0.2.1 is TEST-NET-1: never answers, never ours to replace.
    const remote = await attempt({ nats: "nats://192.0.2.1:4222", redis: "redis://192.0.2.1:6379", embedded: true });
    expect((remote.outcome as { started: unknown[] }).started).toEqual([]);
    expect(remote.logged).toEqual([
      "--embedded ignored for nats://192.0.2.1:4222: a remote server is never replaced",
      "--embedded ignored for redis://192.0.2.1:6379: a remote server is never replaced",
    ]);
  });

  it("tells loopback URLs from the rest", () => {
    expect(isLoopback("nats://127.0.0.1:4222", 4222)).toBe(true);
    expect(isLoopback("nats://user:pw@localhost:4333", 4222)).toBe(true);
    expect(isLoopback("redis://[::1]:6379", 6379)).toBe(true);
    expect(isLoopback("nats://nats.example.com:4222", 4222)).toBe(false);
  });
});

describe("withEmbedded", () => {
  it("serves when any server of a cluster URL answers, and refuses one line when none does", async () => {
    const { withEmbedded } = await import("../../services/embedded.js");
    const down = `nats://127.0.0.1:${await freePort()}`;
    const options = (natsUrl: string) => ({ natsUrl, redisUrl: "redis://127.0.0.1:6379", embedded: false, env: {}, log: () => undefined });
    expect(await withEmbedded(options(`${down},nats://127.0.0.1:4222`), async () => 7)).toBe(7);
    const refused = await withEmbedded(options(down), async () => 7).catch((err: unknown) => err);
    expect((refused as MemledgerError).code).toBe("unavailable");
    expect((refused as MemledgerError).message).toContain(`nothing answers on ${down} (NATS)`);
  });
});
