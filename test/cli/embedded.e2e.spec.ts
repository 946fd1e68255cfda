import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { eventually } from "../support/eventually.js";
import { REDIS_SERVER_BIN, freePort, waitForPort } from "../support/servers.js";
import { CLI, cleanEnv, cli, jsonLine } from "./support.js";

/** `memledger up` with nothing listening: the embedded default, and a Redis outage said once. */

const dirs: string[] = [];
const children: ChildProcess[] = [];
const extraPids: number[] = [];

afterAll(async () => {
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
  for (const pid of extraPids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

function startUp(args: string[], env: Record<string, string>, cwd: string) {
  const child = spawn(process.execPath, [CLI, "up", ...args], { env: cleanEnv(env), cwd, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  const out = { stdout: "", stderr: "" };
  child.stdout!.setEncoding("utf8").on("data", (s: string) => (out.stdout += s));
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (out.stderr += s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  return { child, out, exited };
}

const pidOf = (stderr: string, name: string): number => Number(new RegExp(`started embedded ${name} \\(pid (\\d+)\\)`).exec(stderr)?.[1]);

describe("memledger up --embedded", () => {
  it("starts nats-server and redis-server where nothing answers, serves commands, and stops them on SIGTERM", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "memledger-embedded-"));
    dirs.push(dir);
    const [natsPort, redisPort] = [await freePort(), await freePort()];
    const nats = `nats://127.0.0.1:${natsPort}`;
    const env = { NATS_URL: nats, REDIS_URL: `redis://127.0.0.1:${redisPort}`, MEMLEDGER_DATA: path.join(dir, "data") };
    const up = startUp(["--embedded", "--nats", nats, "--prefix", "emb"], env, dir);
    await eventually("up is ready", () => (up.out.stdout.includes("memledger ready") ? true : undefined), 60_000);

    const natsPid = pidOf(up.out.stderr, "nats-server");
    const redisPid = pidOf(up.out.stderr, "redis-server");
    expect(natsPid, up.out.stderr).toBeGreaterThan(0);
    expect(redisPid, up.out.stderr).toBeGreaterThan(0);
    extraPids.push(natsPid, redisPid);
    expect(up.out.stderr).toContain(`data in ${path.join(dir, "data", "nats")}`);

    const proposed = jsonLine(await cli(["--nats", nats, "--prefix", "emb", "propose", "--title", "Embedded works", "--body", "Served by an embedded nats-server."], { env }));
    expect(proposed).toMatchObject({ version: 1 });
    const claims = await cli(["--nats", nats, "--prefix", "emb", "--json", "claims"], { env });
    expect(claims.code, claims.stderr).toBe(0);

    up.child.kill("SIGTERM");
    expect(await up.exited).toEqual({ code: 0, signal: null });
    expect(up.out.stderr).toContain(`stopped embedded nats-server (pid ${natsPid})`);
    expect(up.out.stderr).toContain(`stopped embedded redis-server (pid ${redisPid})`);
    expect(alive(natsPid)).toBe(false);
    expect(alive(redisPid)).toBe(false);
  }, 120_000);

  it("never starts a server for a URL it was not asked to embed: one line naming the URL and the way out, exit 1", async () => {
    const port = await freePort();
    const ran = await cli(["up", "--nats", `nats://127.0.0.1:${port}`, "--prefix", "emb"], { env: { REDIS_URL: `redis://127.0.0.1:${await freePort()}` } });
    expect(ran.code).toBe(1);
    expect(ran.stderr.trim().split("\n")).toHaveLength(1);
    expect(ran.stderr).toContain(`memledger: unavailable: nothing answers on nats://127.0.0.1:${port} (NATS): start nats-server -js there, or run memledger up --embedded`);
    expect(ran.stderr).not.toContain("started embedded");
  }, 30_000);
});

describe("memledger up with Redis down (not embedded)", () => {
  it("says so once, with what is affected, no stack traces, keeps serving, and says when Redis is back", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "memledger-redisdown-"));
    dirs.push(dir);
    const redisPort = await freePort();
    const redisUrl = `redis://127.0.0.1:${redisPort}`;
    const env = { REDIS_URL: redisUrl, MEMLEDGER_DATA: path.join(dir, "data") };
    const prefix = `rd${process.pid}`;
    const up = startUp(["--no-embedded", "--prefix", prefix], env, dir);
    await eventually("up is ready", () => (up.out.stdout.includes("memledger ready") ? true : undefined), 60_000);
    await eventually("the outage is reported", () => (up.out.stderr.includes("is unreachable") ? true : undefined), 20_000);

    // Commands are still served while Redis is down.
    const proposed = await cli(["--prefix", prefix, "propose", "--title", "Still served", "--body", "Without Redis."], { env });
    expect(proposed.code, proposed.stderr).toBe(0);
    // Let ioredis retry for a while: it used to print a stack trace per attempt.
    await new Promise((r) => setTimeout(r, 4_000));
    const stderrLines = up.out.stderr.split("\n").filter((l) => l.length > 0);
    const outage = stderrLines.filter((l) => l.includes("is unreachable"));
    expect(outage).toEqual([
      expect.stringContaining(`memledger: Redis at ${redisUrl} is unreachable (connect ECONNREFUSED 127.0.0.1:${redisPort}): the claims projection and the claims section of hydration wait for it`),
    ]);
    expect(up.out.stderr).not.toContain("[ioredis]");
    expect(up.out.stderr).not.toMatch(/^\s+at /m);
    expect(stderrLines.length, up.out.stderr).toBeLessThan(12);

    const redis = spawn(REDIS_SERVER_BIN, ["--bind", "127.0.0.1", "--port", String(redisPort), "--save", "", "--appendonly", "no", "--dir", dir], { stdio: "ignore" });
    extraPids.push(redis.pid!);
    await waitForPort(redisPort);
    await eventually("Redis is back", () => (up.out.stderr.includes(`Redis at ${redisUrl} is back`) ? true : undefined), 30_000);
    expect(up.out.stderr.split("\n").filter((l) => l.includes("is back"))).toHaveLength(1);

    up.child.kill("SIGTERM");
    expect((await up.exited).code).toBe(0);
    redis.kill("SIGTERM");
    const { deleteStreams } = await import("../support/env.js");
    const { connectNats } = await import("../../services/nats.js");
    const nc = await connectNats({});
    await deleteStreams(nc, prefix);
    await nc.close();
  }, 120_000);
});
