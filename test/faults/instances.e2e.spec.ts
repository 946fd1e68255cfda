import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { naming } from "../../events/subjects.js";
import { treeHash } from "../../projections/files/index.js";
import { MemoryClient } from "../../services/client.js";
import { EventStore } from "../../services/event-store.js";
import { listInstances, type InstancePresence } from "../../services/instance.js";
import { connectNats } from "../../services/nats.js";
import { CLI, cleanEnv, cli, collect, type Ran } from "../cli/support.js";
import { eventually } from "../support/eventually.js";
import { NATS_URL, deleteRedisKeys, deleteStreams, uniquePrefix } from "../support/env.js";

/**
 * Several `memledger up` processes on one NATS and one Redis, each with its own data directory and file
 * store, as an operator runs them: all become ready, every file store equals a fresh rebuild, the
 * claims (one shared Redis) have one writer at a time and survive a SIGKILL of that writer, and SIGTERM
 * stops an instance within 5 s with nothing acknowledged lost.
 */

const APP = "inst";
const LEASE_TTL_MS = 3_000;

interface Instance {
  name: string;
  dir: string;
  files: string;
  child: ChildProcess;
  exit: Promise<Ran>;
  stdout: () => string;
}

describe("instances: two and three `up` processes side by side", () => {
  const prefix = uniquePrefix("inst");
  let tmp: string;
  let nc: NatsConnection;
  let store: EventStore;
  const instances: Instance[] = [];
  const env = (dir: string) =>
    cleanEnv({
      MEMLEDGER_DATA: dir,
      MEMLEDGER_VECTORS: "off",
      MEMLEDGER_LEASE_TTL_MS: String(LEASE_TTL_MS),
      MEMLEDGER_HEARTBEAT_MS: "500",
    });

  const startUp = async (name: string): Promise<Instance> => {
    const dir = join(tmp, name);
    const files = join(dir, "files");
    const child = spawn(process.execPath, [CLI, "up", "--prefix", prefix, "--files", files], { env: env(dir) });
    let out = "";
    child.stdout!.setEncoding("utf8").on("data", (s: string) => (out += s));
    const exit = collect(child);
    const instance: Instance = { name, dir, files, child, exit, stdout: () => out };
    instances.push(instance);
    await eventually(`${name} to print ready`, async () => {
      if (child.exitCode !== null) throw new Error(`${name} exited ${child.exitCode}: ${(await exit).stderr}`);
      return out.includes("memledger ready") ? true : undefined;
    }, 90_000, 100);
    return instance;
  };

  const client = (as: string) => new MemoryClient(nc, { app: APP, as, prefix, timeoutMs: 20_000 });
  const live = async () => (await listInstances(nc, store.names)).filter((i) => i.state === "live");
  const idOf = async (instance: Instance) => (await readFile(join(instance.dir, "instance-id"), "utf8")).trim();
  const roleOf = (p: InstancePresence, projection: string, stream: string) => p.roles.find((r) => r.projection === projection && r.stream === stream);

  const fileCheckpoint = async (files: string): Promise<number> => {
    try {
      return JSON.parse(await readFile(join(files, APP, ".checkpoint.json"), "utf8")).seq as number;
    } catch {
      return 0;
    }
  };

  /** Every running instance's file store, once caught up to the stream, hashes like a fresh rebuild. */
  const expectFileStoresEqualRebuild = async (label: string) => {
    const last = await store.lastSeq(store.names.appStream(APP));
    const rebuildDir = join(tmp, `rebuild-${label}`);
    const rebuilt = await cli(["--prefix", prefix, "--app", APP, "rebuild", "files", "--files", join(rebuildDir, "files")], {
      env: { MEMLEDGER_DATA: rebuildDir, MEMLEDGER_VECTORS: "off" },
    });
    expect(rebuilt.code, rebuilt.stderr).toBe(0);
    const expected = await treeHash(join(rebuildDir, "files", APP));
    for (const instance of instances.filter((i) => i.child.exitCode === null && i.child.signalCode === null)) {
      await eventually(`${instance.name}'s file store at seq ${last}`, async () => ((await fileCheckpoint(instance.files)) >= last ? true : undefined), 60_000, 100);
      expect(await treeHash(join(instance.files, APP)), `${instance.name}'s file store`).toBe(expected);
    }
  };

  /** A few writes through whichever instances answer (one queue group): proposals, approvals, claims. */
  const write = async (round: string) => {
    const alice = client("alice");
    const rita = client("human:rita");
    for (let i = 0; i < 3; i++) {
      const p = await alice.propose({ title: `${round} note ${i}`, body: `What ${round} learned, part ${i}.` });
      if (i % 2 === 0) await rita.approve(p.memoryId);
    }
    await alice.claim(`${round}-task`, { ttlMs: 600_000 });
  };

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first (npm run build)`);
    tmp = await mkdtemp(join(tmpdir(), "memledger-instances-"));
    nc = await connectNats({ servers: NATS_URL, name: `test-${prefix}` });
    store = await EventStore.open(nc, naming(prefix));
  });

  afterAll(async () => {
    for (const instance of instances) {
      if (instance.child.exitCode === null && instance.child.signalCode === null) instance.child.kill("SIGKILL");
      await instance.exit;
    }
    await deleteStreams(nc, prefix);
    await nc.close();
    await deleteRedisKeys(prefix);
    await rm(tmp, { recursive: true, force: true });
  });

  it("two, then three instances all become ready; one claims leader per stream; each leads its own file store, which equals a fresh rebuild", async () => {
    // A retried attempt starts as the first did: what an earlier attempt left running is stopped (its
    // data directories, reused, would refuse a second `up`).
    for (const instance of instances.splice(0)) {
      if (instance.child.exitCode === null && instance.child.signalCode === null) instance.child.kill("SIGKILL");
      await instance.exit;
    }
    await Promise.all([startUp("one"), startUp("two")]);
    await write("r1");
    await expectFileStoresEqualRebuild("two");

    await startUp("three");
    await write("r2");
    await expectFileStoresEqualRebuild("three");

    const appStream = store.names.appStream(APP);
    // A follower names the claims leader "as last seen": null until it has seen the lease, so the
    // snapshot checked is one where every instance has seen it.
    const present = await eventually("three live instances with their roles, each knowing the claims leader", async () => {
      const now = await live();
      const ready = now.length === 3 && now.every((p) => roleOf(p, "claims", appStream) && roleOf(p, "files", appStream));
      return ready && now.every((p) => roleOf(p, "claims", appStream)!.leader !== null) ? now : undefined;
    }, 30_000);
    const ids = await Promise.all(instances.map(idOf));
    expect(present.map((p) => p.id).sort()).toEqual([...ids].sort());
    // One Redis: exactly one instance writes the claims of the stream, the others follow it.
    const claimLeaders = present.filter((p) => roleOf(p, "claims", appStream)!.role === "leader");
    expect(claimLeaders).toHaveLength(1);
    for (const p of present) expect(roleOf(p, "claims", appStream)!.leader).toBe(claimLeaders[0]!.id);
    // Separate directories are separate stores: every instance leads its own.
    for (const p of present) expect(roleOf(p, "files", appStream)!.role).toBe("leader");
    expect(new Set(present.map((p) => roleOf(p, "files", appStream)!.store)).size).toBe(3);

    const status = await cli(["--prefix", prefix, "--json", "status"], { env: { MEMLEDGER_VECTORS: "off" } });
    expect(status.code, status.stderr).toBe(0);
    const rows = status.stdout.trim().split("\n").map((l) => JSON.parse(l));
    expect(rows.filter((r) => r.kind === "instance" && r.state === "live"), status.stdout).toHaveLength(3);
    // Every live instance reports its own search projection (a read model of its own).
    expect(new Set(rows.filter((r) => r.projection === "search" && r.app === APP).map((r) => r.instance))).toEqual(new Set(ids));
  }, 240_000);

  it("SIGKILL of the claims leader: a follower takes over from the shared checkpoint and the claims stay correct", async () => {
    const appStream = store.names.appStream(APP);
    const leaderId = (await live()).find((p) => roleOf(p, "claims", appStream)?.role === "leader")!.id;
    const leader = (await Promise.all(instances.map(async (i) => ((await idOf(i)) === leaderId ? i : null)))).find(Boolean)!;
    leader.child.kill("SIGKILL");
    await leader.exit;

    // The command service of the others keeps answering; the claims read model waits for a new writer.
    const bob = client("bob");
    const alice = client("alice");
    await bob.claim("after-kill", { ttlMs: 600_000 });
    await alice.release("r1-task", { done: true });
    // Alice reads her own writes: the instance answering waits (bounded) until the claims in Redis
    // reached her release, which takes a new writer once the killed leader's lease lapsed.
    const held = await eventually("alice's read of the claims after her release", async () => {
      try {
        return await alice.claims();
      } catch (err) {
        if ((err as { code?: string }).code === "unavailable") return undefined;
        throw err;
      }
    }, 30_000);
    expect(held.map((c) => [c.name, c.holder]).sort()).toEqual([
      ["after-kill", "bob"],
      ["r2-task", "alice"],
    ]);

    const next = await eventually("another instance to lead the claims", async () => {
      const found = (await live()).find((p) => p.id !== leaderId && roleOf(p, "claims", appStream)?.role === "leader");
      return found;
    }, 30_000);
    expect(next.id).not.toBe(leaderId);
    await expectFileStoresEqualRebuild("after-kill");
  }, 120_000);

  it("SIGTERM: an instance exits within 5 s, and every command it acknowledged is in the log", async () => {
    const running = instances.filter((i) => i.child.exitCode === null && i.child.signalCode === null);
    // Leave one instance, so that it is the one answering the writes in flight.
    for (const other of running.slice(1)) {
      other.child.kill("SIGTERM");
      await other.exit;
    }
    const last = running[0]!;
    const writer = client("dave");
    const acknowledged: number[] = [];
    let writing = true;
    const writes = (async () => {
      for (let i = 0; writing; i++) {
        try {
          acknowledged.push((await writer.propose({ title: `in flight ${i}`, body: "written while stopping" })).seq);
        } catch {
          return; // the instance stopped answering: no acknowledgement, nothing promised
        }
      }
    })();
    await eventually("a few writes acknowledged", () => (acknowledged.length >= 3 ? true : undefined), 30_000);
    const started = performance.now();
    last.child.kill("SIGTERM");
    const ran = await last.exit;
    const took = performance.now() - started;
    writing = false;
    await writes;
    expect(ran.code, ran.stderr).toBe(0);
    expect(took).toBeLessThan(5_000);
    expect(ran.stdout).toMatch(/memledger stopped/);
    const stream = store.names.appStream(APP);
    for (const seq of acknowledged) expect((await store.jsm.streams.getMessage(stream, { seq }))?.seq).toBe(seq);
    // And the instance marked itself stopped (status shows it so, not as departed).
    const id = await idOf(last);
    expect((await listInstances(nc, store.names)).find((p) => p.id === id)?.state).toBe("stopped");
  }, 120_000);
});
