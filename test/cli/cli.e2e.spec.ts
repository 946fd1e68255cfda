import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { naming } from "../../events/subjects.js";
import { connectNats } from "../../services/nats.js";
import { NATS_URL, deleteRedisKeys, deleteStreams, streamMessageCount, uniquePrefix } from "../support/env.js";
import { CLI, cleanEnv, cli, collect, failed, jsonLine, lines, type Ran } from "./support.js";

describe("memledger CLI against a real NATS", () => {
  const prefix = uniquePrefix("cli");
  const app = "cliapp";
  const g = ["--prefix", prefix, "--app", app];
  let nc: NatsConnection;
  let up: ChildProcess | undefined;
  let upExit: Promise<Ran>;
  let upOut = "";
  let tmp: string;
  const count = () => streamMessageCount(nc, naming(prefix).appStream(app));

  // Shared by the steps below, which run in order.
  let memoryId = "";
  let lastSeq = 0;

  beforeAll(async () => {
    if (!existsSync(CLI)) {
      throw new Error(`${CLI} is missing: build first (npm run build; npm test does it in pretest)`);
    }
    nc = await connectNats({ servers: NATS_URL, name: `test-${prefix}` });
    tmp = await mkdtemp(join(tmpdir(), "memledger-cli-"));
    // Read models go to the test's own directory, never the working tree's .memledger.
    up = spawn(process.execPath, [CLI, "up", "--prefix", prefix], { env: cleanEnv({ MEMLEDGER_DATA: tmp }) });
    upExit = collect(up);
    await new Promise<void>((resolveReady, reject) => {
      up!.stdout!.on("data", (s: string) => {
        upOut += s;
        if (upOut.includes("ready")) resolveReady();
      });
      void upExit.then((ran) => reject(new Error(`memledger up exited (${ran.code}) before ready: ${ran.stderr}`)));
    });
  });

  afterAll(async () => {
    if (up && up.exitCode === null && up.signalCode === null) {
      up.kill("SIGKILL");
      await upExit.catch(() => undefined);
    }
    await deleteRedisKeys(prefix);
    if (nc) {
      await deleteStreams(nc, prefix);
      await nc.close();
    }
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it("the built CLI (the package's bin) is executable by itself, as npx and a global install run it", async () => {
    // The build marks it executable (package.json postbuild): tsc writes it 0644, and npx links a bin
    // without marking its target when it reuses a cached link.
    expect(statSync(CLI).mode & 0o111).toBe(0o111);
    const ran = await new Promise<{ code: number | null; out: string }>((resolveRun) => {
      const child = spawn(CLI, ["--help"], { env: cleanEnv({}) });
      let out = "";
      child.stdout.on("data", (s: Buffer) => (out += s.toString()));
      child.on("close", (code) => resolveRun({ code, out }));
    });
    expect(ran.code).toBe(0);
    expect(ran.out).toContain("Usage: memledger");
  });

  it("takes global options before the verb, after it, and from the environment", async () => {
    const proposed = jsonLine(
      await cli([...g, "--as", "human:alice", "--json", "propose", "--title", "Use pnpm", "--body", "We use pnpm, not npm.", "--kind", "convention", "--tags", "tooling,js", "--paths", "package.json"]),
    );
    expect(proposed).toMatchObject({ version: 1, type: "memory.proposed", replayed: false });
    expect(typeof proposed.memoryId).toBe("string");
    expect(proposed.seq).toBeGreaterThan(0);
    memoryId = proposed.memoryId;

    // Globals after the verb: were they ignored, the memory would not be found in the default app/prefix.
    const approved = jsonLine(await cli(["approve", memoryId, "--expected-seq", String(proposed.seq), "--prefix", prefix, "--as", "human:bob", "--app", app]));
    expect(approved).toMatchObject({ memoryId, version: 1, type: "memory.approved" });
    expect(approved.seq).toBeGreaterThan(proposed.seq);
    lastSeq = approved.seq;

    const shown = jsonLine(await cli(["show", memoryId, "--json"], { env: { MEMLEDGER_PREFIX: prefix, MEMLEDGER_APP: app } }));
    expect(shown).toMatchObject({ memoryId, app, status: "active", activeVersion: 1, seq: approved.seq });
    expect(shown.versions).toHaveLength(1);
    expect(shown.versions[0]).toMatchObject({ title: "Use pnpm", kind: "convention", tags: ["tooling", "js"], paths: ["package.json"] });

    // MEMLEDGER_AGENT names the actor; a plain id is an agent.
    const other = jsonLine(await cli([...g, "propose", "--title", "t", "--body", "b"], { env: { MEMLEDGER_AGENT: "robo-1" } }));
    const log = lines((await cli([...g, "log", "--json"])).stdout).map((l) => JSON.parse(l));
    const actorOf = (seq: number) => log.find((e) => e.seq === seq)?.actor;
    expect(actorOf(proposed.seq)).toEqual({ kind: "human", id: "alice" });
    expect(actorOf(approved.seq)).toEqual({ kind: "human", id: "bob" });
    expect(actorOf(other.seq)).toEqual({ kind: "agent", id: "robo-1" });
  });

  it("revises from stdin, approves a version, rolls back, and shows every version with the last sequence", async () => {
    const revised = jsonLine(
      await cli(["propose", "--memory", memoryId, "--expected-seq", String(lastSeq), "--title", "Use pnpm 9", "--body", "-", ...g], { input: "pnpm 9 only.\n" }),
    );
    expect(revised).toMatchObject({ memoryId, version: 2 });
    jsonLine(await cli([...g, "approve", memoryId, "--version", "2"]));
    const rolledBack = jsonLine(await cli([...g, "rollback", memoryId, "--to-version", "1"]));
    expect(rolledBack).toMatchObject({ memoryId, version: 1, type: "memory.rolled_back" });
    lastSeq = rolledBack.seq;

    const pretty = await cli([...g, "show", memoryId]);
    expect(pretty.code).toBe(0);
    expect(lines(pretty.stdout).length).toBeGreaterThan(1);
    const shown = JSON.parse(pretty.stdout);
    expect(shown).toMatchObject({ activeVersion: 1, seq: rolledBack.seq });
    expect(shown.versions.map((v: { version: number; status: string }) => [v.version, v.status])).toEqual([
      [1, "approved"],
      [2, "approved"],
    ]);
    expect(shown.versions[1].body).toBe("pnpm 9 only.\n");

    const file = join(tmp, "body.md");
    await writeFile(file, "# From a file\n\nLine two.\n");
    const fromFile = jsonLine(await cli([...g, "propose", "--title", "From a file", "--body-file", file]));
    expect(jsonLine(await cli([...g, "--json", "show", fromFile.memoryId])).versions[0].body).toBe("# From a file\n\nLine two.\n");
  });

  it("rejects and supersedes, and the log tells who did what", async () => {
    const v3 = jsonLine(await cli([...g, "propose", "--memory", memoryId, "--title", "Use npm", "--body", "npm after all"]));
    expect(v3.version).toBe(3);
    const rejected = jsonLine(await cli([...g, "reject", memoryId, "--version", "3", "--reason", "we stay on pnpm"]));
    expect(rejected).toMatchObject({ memoryId, version: 3, type: "memory.rejected" });

    const replacement = jsonLine(await cli([...g, "propose", "--title", "Use bun", "--body", "bun replaces pnpm"]));
    const superseded = jsonLine(await cli([...g, "supersede", memoryId, "--by", replacement.memoryId, "--reason", "moved to bun"]));
    expect(superseded).toMatchObject({ memoryId, type: "memory.superseded" });
    const shown = jsonLine(await cli([...g, "show", memoryId, "--json"]));
    expect(shown.superseded).toMatchObject({ by: replacement.memoryId, reason: "moved to bun" });
    expect(shown.seq).toBe(superseded.seq);

    const human = await cli([...g, "log", "--memory", memoryId]);
    expect(human.code).toBe(0);
    const humanLines = lines(human.stdout);
    expect(humanLines.map((l) => l.match(/memory\.\w+/)?.[0])).toEqual([
      "memory.proposed",
      "memory.approved",
      "memory.proposed",
      "memory.approved",
      "memory.rolled_back",
      "memory.proposed",
      "memory.rejected",
      "memory.superseded",
    ]);
    expect(humanLines[1]).toMatch(/human:bob\s+v1$/);
    expect(humanLines[4]).toContain("v2 -> v1");
    expect(humanLines[6]).toContain('reason: "we stay on pnpm"');
    expect(humanLines[7]).toContain(`by ${replacement.memoryId}`);
    expect(humanLines[7]?.trim().startsWith(String(superseded.seq))).toBe(true);

    const all = lines((await cli([...g, "log", "--json"])).stdout).map((l) => JSON.parse(l));
    const since = all[2].seq as number;
    const page = lines((await cli([...g, "log", "--json", "--since-seq", String(since), "--limit", "2"])).stdout).map((l) => JSON.parse(l));
    // The service reads from --since-seq inclusive.
    expect(page.map((e) => e.seq)).toEqual([all[2].seq, all[3].seq]);
  });

  it("starts, uses, ends and shows a session", async () => {
    const started = jsonLine(await cli([...g, "session", "start", "--task", "tidy tooling", "--branch", "main"]));
    expect(started).toMatchObject({ type: "session.started" });
    const sessionId: string = started.sessionId;

    const inSession = jsonLine(await cli(["propose", "--title", "In a session", "--body", "b", "--session", sessionId, ...g]));
    const viaEnv = jsonLine(await cli([...g, "propose", "--title", "Via env", "--body", "b"], { env: { MEMLEDGER_SESSION: sessionId } }));
    const log = lines((await cli([...g, "log", "--json"])).stdout).map((l) => JSON.parse(l));
    expect(log.find((e) => e.seq === inSession.seq)?.sessionId).toBe(sessionId);
    expect(log.find((e) => e.seq === viaEnv.seq)?.sessionId).toBe(sessionId);

    const ended = jsonLine(await cli(["session", "end", sessionId, "--summary", "done", ...g, "--json"]));
    expect(ended).toMatchObject({ sessionId, type: "session.ended" });
    const shown = jsonLine(await cli([...g, "--json", "session", "show", sessionId]));
    expect(shown).toMatchObject({ sessionId, task: "tidy tooling", branch: "main", summary: "done", seq: ended.seq });
    expect(shown.endedAt).not.toBeNull();

    failed(await cli([...g, "session", "end", sessionId]), 3, "conflict");
  });

  it("refuses invalid input with exit 2, one line on stderr, and appends nothing", async () => {
    const before = await count();
    expect(before).toBeGreaterThan(0);
    const bad: [string[], RegExp][] = [
      [["approve", memoryId, "--expected-seq", "abc"], /--expected-seq.*'abc'/],
      [["approve", memoryId, "--version", "1.5"], /--version/],
      [["rollback", memoryId, "--to-version", "0"], /--to-version/],
      [["log", "--limit", "many"], /--limit/],
      [["propose", "--title", "x", "--body", "b", "--importance", "9"], /--importance/],
      [["propose", "--title", "x", "--body", "b", "--scope", "galaxy"], /--scope/],
      [["propose", "--title", "x", "--body", "b", "--kind", "poem"], /--kind/],
      [["propose", "--title", "   ", "--body", "b"], /--title.*blank/],
      [["propose", "--title", "x"], /body/],
      [["propose", "--body", "b"], /--title/],
      [["propose", "--title", "x", "--body-file", join(tmp, "missing.md")], /missing\.md/],
      [["reject", memoryId], /--reason/],
      [["approve"], /id/],
      [["frobnicate"], /frobnicate/],
      [["propose", "--title", "x", "--body", "b", "--bogus"], /--bogus/],
      [["--as", "robot:x", "show", memoryId], /actor/],
      [["show", memoryId, "--app", "Not An App"], /--app/],
      [["show", "not.an.id"], /memory id/],
      [["session", "end"], /session id/],
    ];
    for (const [args, message] of bad) {
      const ran = await cli([...g, ...args]);
      expect(failed(ran, 2, "invalid"), args.join(" ")).toMatch(message);
    }
    const asJson = await cli([...g, "--json", "approve", memoryId, "--expected-seq", "abc"]);
    expect(asJson.code).toBe(2);
    expect(JSON.parse(asJson.stderr)).toMatchObject({ ok: false, error: { code: "invalid" } });
    expect(await count()).toBe(before);
    // About twenty process starts: leave room on a loaded two-core machine.
  }, 180_000);

  it("exits 3 on a stale --expected-seq and 5 for what does not exist", async () => {
    const pending = jsonLine(await cli([...g, "propose", "--title", "Pending", "--body", "b"]));
    const before = await count();
    expect(failed(await cli([...g, "approve", pending.memoryId, "--expected-seq", String(pending.seq + 100)]), 3, "conflict")).toContain(String(pending.seq));
    const staleJson = await cli([...g, "approve", pending.memoryId, "--expected-seq", "0", "--json"]);
    expect(staleJson.code).toBe(3);
    expect(JSON.parse(staleJson.stderr)).toMatchObject({ ok: false, error: { code: "conflict" } });

    failed(await cli([...g, "show", "no-such-memory"]), 5, "not_found");
    failed(await cli([...g, "approve", "no-such-memory"]), 5, "not_found");
    failed(await cli([...g, "session", "show", "no-such-session"]), 5, "not_found");
    failed(await cli([...g, "rollback", pending.memoryId, "--to-version", "7"]), 5, "not_found");
    expect(await count()).toBe(before);
  });

  it("names the URL when NATS is unreachable and says so when no service answers", async () => {
    const unreachable = failed(await cli([...g, "--nats", "nats://127.0.0.1:1", "show", memoryId]), 1, "unavailable");
    expect(unreachable).toContain("cannot reach NATS at nats://127.0.0.1:1");
    const asJson = await cli([...g, "show", memoryId, "--nats", "nats://127.0.0.1:1", "--json"]);
    expect(asJson.code).toBe(1);
    expect(JSON.parse(asJson.stderr)).toMatchObject({ ok: false, error: { code: "unavailable" } });

    const withSecret = failed(await cli([...g, "--nats", "nats://alice:s3cret@127.0.0.1:1", "show", memoryId]), 1, "unavailable");
    expect(withSecret).toContain("127.0.0.1:1");
    expect(withSecret).not.toContain("s3cret");

    const noService = failed(await cli(["--prefix", uniquePrefix("none"), "--app", app, "show", memoryId]), 1, "unavailable");
    expect(noService).toMatch(/no memledger service/);

    const upUnreachable = failed(await cli(["up", "--prefix", uniquePrefix("none"), "--nats", "nats://127.0.0.1:1"]), 1, "unavailable");
    expect(upUnreachable).toContain("nats://127.0.0.1:1");
    failed(await cli(["up", "--prefix", uniquePrefix("none"), "--replicas", "three"]), 2, "invalid");
  });

  it("drains and exits 0 on SIGTERM", async () => {
    expect(upOut).toMatch(/ready/);
    up!.kill("SIGTERM");
    const ran = await upExit;
    expect(ran.code, ran.stderr).toBe(0);
    expect(ran.signal).toBeNull();
    expect(ran.stderr).not.toMatch(/\n\s+at /);
    // Nobody serves the prefix any more.
    expect(failed(await cli([...g, "show", memoryId]), 1, "unavailable")).toMatch(/no memledger service/);
  });
});
