import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { deleteRedisKeys, deleteStreams, uniquePrefix } from "../support/env.js";
import { connectNats } from "../../services/nats.js";
import { CLI, cleanEnv, cli, collect, failed, jsonLine, lines, type Ran } from "./support.js";
import { eventually as poll } from "../support/eventually.js";

/** Polls a CLI call until `accept` holds: projections catch up asynchronously. */
const eventually = (args: string[], env: Record<string, string>, accept: (ran: Ran) => boolean): Promise<Ran> =>
  poll(`memledger ${args.join(" ")} to be accepted`, async () => {
    const ran = await cli(args, { env });
    return accept(ran) ? ran : undefined;
  }, 30_000, 200);

describe("memledger CLI: claims, search, status and rebuild against a running `up`", () => {
  const prefix = uniquePrefix("clirm");
  const app = "rmapp";
  const g = ["--prefix", prefix, "--app", app];
  let tmp: string;
  let env: Record<string, string>;
  let up: ChildProcess | undefined;
  let upExit: Promise<Ran>;

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first (npm test does)`);
    tmp = await mkdtemp(join(tmpdir(), "memledger-clirm-"));
    env = { MEMLEDGER_DATA: tmp, MEMLEDGER_VECTORS: "off" };
    up = spawn(process.execPath, [CLI, "up", "--prefix", prefix], { env: cleanEnv(env) });
    upExit = collect(up);
    let out = "";
    await new Promise<void>((ready, reject) => {
      up!.stdout!.on("data", (s: string) => {
        out += s;
        if (out.includes("ready")) ready();
      });
      void upExit.then((ran) => reject(new Error(`up exited before ready: ${ran.stderr}`)));
    });
  });

  afterAll(async () => {
    if (up && up.exitCode === null) {
      up.kill("SIGTERM");
      await upExit;
    }
    const nc = await connectNats({});
    await deleteStreams(nc, prefix);
    await nc.close();
    await deleteRedisKeys(prefix);
    await rm(tmp, { recursive: true, force: true });
  });

  it("two claimants of one task: one wins, the other exits 3 naming the holder; claims and tasks list the live state", async () => {
    const won = jsonLine(await cli([...g, "--as", "alice", "claim", "deploy-api", "--ttl", "10m", "--priority", "1"], { env }));
    expect(won).toMatchObject({ kind: "task", name: "deploy-api", holder: "alice" });
    const lost = failed(await cli([...g, "--as", "bob", "claim", "deploy-api"], { env }), 3, "conflict");
    expect(lost).toMatch(/alice/);
    failed(await cli([...g, "claim", "deploy-api", "--ttl", "soon"], { env }), 2, "invalid");

    jsonLine(await cli([...g, "--as", "bob", "claim", "src/payments", "--lock", "--ttl", "90s"], { env }));
    const claims = await eventually([...g, "--json", "claims"], env, (r) => lines(r.stdout).length === 2);
    const held = lines(claims.stdout).map((l) => JSON.parse(l));
    expect(held.map((c) => [c.kind, c.name, c.holder]).sort()).toEqual([
      ["lock", "src/payments", "bob"],
      ["task", "deploy-api", "alice"],
    ]);
    const bobs = await cli([...g, "--json", "claims", "--agent", "bob"], { env });
    expect(lines(bobs.stdout).map((l) => JSON.parse(l).name)).toEqual(["src/payments"]);

    jsonLine(await cli([...g, "--as", "alice", "release", "deploy-api", "--done"], { env }));
    await eventually([...g, "--json", "claims"], env, (r) => lines(r.stdout).length === 1);
  });

  it("search finds a memory by its exact identifier once the projection has it, and status shows every projection caught up", async () => {
    const p = jsonLine(await cli([...g, "propose", "--title", "StripeWebhookHandler race condition", "--body", "Two deliveries of one event can race; lock on the event id."], { env }));
    jsonLine(await cli([...g, "--as", "human:rita", "approve", p.memoryId], { env }));
    jsonLine(await cli([...g, "propose", "--title", "Webhook retries", "--body", "Providers retry webhooks for days."], { env }));

    const found = await eventually([...g, "--json", "search", "StripeWebhookHandler", "--mode", "bm25"], env, (r) => r.code === 0 && lines(r.stdout).length > 0);
    expect(JSON.parse(lines(found.stdout)[0]!)).toMatchObject({ rank: 1, memoryId: p.memoryId });

    const status = await eventually([...g, "--json", "status"], env, (r) => {
      const rows = lines(r.stdout).map((l) => JSON.parse(l)).filter((row) => row.app === app);
      return rows.length === 3 && rows.every((row) => row.lag === 0);
    });
    const rows = lines(status.stdout).map((l) => JSON.parse(l)).filter((row) => row.app === app);
    expect(rows.map((row) => row.projection).sort()).toEqual(["claims", "files", "search"]);
    expect(rows.every((row) => row.blocked === null)).toBe(true);
  });

  it("rebuild all replays into fresh read models and the files tree keeps the same MEMORY.md", async () => {
    const index = join(tmp, "files", app, "MEMORY.md");
    const before = await readFile(index, "utf8");
    expect(before).toMatch(/StripeWebhookHandler/);
    const rebuilt = await cli([...g, "--json", "rebuild", "all"], { env });
    expect(rebuilt.code, rebuilt.stderr).toBe(0);
    const summaries = lines(rebuilt.stdout).map((l) => JSON.parse(l));
    expect(summaries.map((s) => s.projection).sort()).toEqual(["claims", "files", "search"]);
    expect(await readFile(index, "utf8")).toBe(before);
    failed(await cli([...g, "rebuild", "nonsense"], { env }), 2, "invalid");
  });
});
