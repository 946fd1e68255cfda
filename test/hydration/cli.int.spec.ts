import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { filesProjection } from "../../projections/files/index.js";
import { run } from "../../services/cli/program.js";
import { rebuildProjection } from "../../services/projection-runner.js";
import { o200kTokens } from "../../services/hydration/tokens.js";
import { NATS_URL, startLedger, uniquePrefix, type Ledger } from "../support/env.js";

function captureIo(env: NodeJS.ProcessEnv) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  stdout.on("data", (d) => (out += d));
  stderr.on("data", (d) => (err += d));
  return { io: { stdout, stderr, stdin: new PassThrough(), env }, out: () => out, err: () => err };
}

describe("memledger hydrate", () => {
  let ledger: Ledger;
  let root: string;

  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), "memledger-hydrate-cli-"));
    ledger = await startLedger({ hydration: { filesRoot: path.join(root, "files") } });
  });
  afterEach(async () => {
    await ledger.cleanup();
    await rm(root, { recursive: true, force: true });
  });

  const argv = (...rest: string[]) => ["--app", ledger.app, "--prefix", ledger.prefix, "--nats", NATS_URL, "--as", "coder-1", ...rest];

  it("prints the service's pack as markdown, or as JSON with its sections", async () => {
    const p = await ledger.client("coder-2").propose({ title: "Webhook retries are idempotent", body: "Handlers skip repeated event ids." });
    await ledger.client("human:rita").approve(p.memoryId);
    const md = captureIo({});
    expect(await run(argv("hydrate", "--task", "webhook retries", "--paths", "src/payments", "--budget", "500"), md.io)).toBe(0);
    expect(md.out()).toContain("# Context pack for `coder-1`");
    expect(md.out()).toContain("Webhook retries are idempotent");
    expect(o200kTokens.count(md.out())).toBeLessThanOrEqual(500);

    const json = captureIo({});
    expect(await run(argv("--json", "hydrate", "--task", "webhook retries", "--budget", "500"), json.io)).toBe(0);
    const pack = JSON.parse(json.out());
    expect(pack).toMatchObject({ budget: 500, encoding: "o200k_base" });
    expect(pack.sections.find((s: { name: string }) => s.name === "relevant").included).toEqual([p.memoryId]);
  });

  it("falls back to the local MEMORY.md when no service answers", async () => {
    await ledger.client("coder-2").propose({ title: "Only in the index", body: "x" });
    const scope = { prefix: ledger.prefix, app: ledger.app, stream: ledger.service.names.appStream(ledger.app) };
    await rebuildProjection(ledger.service.store, filesProjection({ root: path.join(root, "files") }), scope);
    const nobody = captureIo({ MEMLEDGER_FILES: path.join(root, "files") });
    // A prefix no service listens on: the request finds no responders.
    const args = ["--app", ledger.app, "--prefix", uniquePrefix("none"), "--nats", NATS_URL, "--as", "coder-1", "hydrate", "--task", "x"];
    expect(await run(args, nobody.io)).toBe(0);
    expect(nobody.out()).toContain("Only in the index");
    expect(nobody.out()).toContain("Live claims unavailable: no memledger service answered");
    expect(nobody.err()).toContain("falling back to the local MEMORY.md");
  });
});
