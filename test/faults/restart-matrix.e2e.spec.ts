import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rename, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { treeHash } from "../../projections/files/index.js";
import { MemoryClient } from "../../services/client.js";
import { connectNats } from "../../services/nats.js";
import { CLI, cleanEnv, collect, lines } from "../cli/support.js";
import { deleteRedisKeys, deleteStreams, NATS_URL, uniquePrefix } from "../support/env.js";
import { eventually } from "../support/eventually.js";

/**
 * Issue 8, "Restart matrix": `memledger up` as a child process is stopped (SIGTERM) and started again at
 * each state of one ledger: no data; proposals only; after approvals; mid-rebuild (a `memledger rebuild
 * all` killed with SIGKILL partway); after `rebuild all`; search snapshot truncated; snapshot deleted;
 * snapshot of the older format v2; snapshot of an unknown version; file-store checkpoint cut short.
 * Each time it must print `ready` within 10 s and then give the same answers as before the stop: `show`,
 * `search` (the CLI), `hydrate`, and the file tree's hash. Restart times are printed for the closing note.
 */
const APP = "app1";
/**
 * The issue's bound. On a machine whose cores are shared by other jobs, `up`'s start (2.3 s of CPU with
 * no data, most of it loading modules) stretches with the load; MEMLEDGER_TEST_READY_MS raises the bound
 * for such a machine, and the times measured are printed either way.
 */
const READY_WITHIN_MS = Number(process.env.MEMLEDGER_TEST_READY_MS ?? 10_000);
/** The CLI under test: the build in dist/, or (MEMLEDGER_TEST_CLI) a private build that others' rebuilds do not change mid-run. */
const UP_CLI = process.env.MEMLEDGER_TEST_CLI ?? CLI;
const QUERY = "payment retries backoff";

interface Running {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  readyMs: number;
  exited: Promise<void>;
}

describe("restart matrix: up is ready within seconds at every state, with the same answers", () => {
  const prefix = uniquePrefix("rm");
  let data: string;
  let client: MemoryClient;
  let up: Running | undefined;
  const env = () => cleanEnv({ MEMLEDGER_PREFIX: prefix, MEMLEDGER_DATA: data, MEMLEDGER_APP: APP });
  const memoryIds: string[] = [];
  const restarts: { state: string; readyMs: number; sameAnswersMs: number }[] = [];

  beforeAll(async () => {
    data = await mkdtemp(path.join(tmpdir(), "memledger-restart-"));
    const nc = await connectNats({ servers: NATS_URL, name: `test-${prefix}` });
    client = new MemoryClient(nc, { app: APP, as: "agent-a", prefix, timeoutMs: 30_000 });
  });

  afterAll(async () => {
    if (up) await stop(up);
    console.log(
      `restart times (spawn to "ready", then to the same answers):\n${restarts
        .map((r) => `  ${r.state.padEnd(36)} ready ${String(Math.round(r.readyMs)).padStart(5)} ms, same answers ${String(Math.round(r.sameAnswersMs)).padStart(5)} ms`)
        .join("\n")}`,
    );
    const nc = client?.nc;
    if (nc) {
      await deleteStreams(nc, prefix);
      await nc.close();
    }
    await deleteRedisKeys(prefix);
    if (data) await rm(data, { recursive: true, force: true });
  });

  /** Starts `up`; resolves at its `ready` line, fails at once if it exits first or takes over 10 s. */
  async function start(): Promise<Running> {
    const started = performance.now();
    const child = spawn(process.execPath, [UP_CLI, "up", "--no-embedded"], { env: env() });
    const running: Running = { child, stdout: "", stderr: "", readyMs: 0, exited: new Promise((resolve) => child.on("close", () => resolve())) };
    child.stdout!.setEncoding("utf8");
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (s: string) => (running.stderr += s));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`up was not ready within ${READY_WITHIN_MS} ms; stderr:\n${running.stderr}`));
      }, READY_WITHIN_MS);
      child.stdout!.on("data", (s: string) => {
        running.stdout += s;
        if (running.readyMs === 0 && /ready/.test(running.stdout)) {
          running.readyMs = performance.now() - started;
          clearTimeout(timer);
          resolve();
        }
      });
      child.on("close", (code) => {
        clearTimeout(timer);
        reject(new Error(`up exited (${code}) before ready; stderr:\n${running.stderr}`));
      });
    });
    return running;
  }

  async function stop(running: Running): Promise<void> {
    running.child.kill("SIGTERM");
    // A process stuck in a synchronous loop (the old HNSW hang) never runs its signal handler.
    const killer = setTimeout(() => running.child.kill("SIGKILL"), 15_000);
    await running.exited;
    clearTimeout(killer);
    up = undefined;
  }

  /** The file store's checkpoint as readers see it (the app link's generation). */
  async function filesCheckpoint(): Promise<number> {
    const text = await readFile(path.join(data, "files", APP, ".checkpoint.json"), "utf8").catch(() => null);
    return text === null ? -1 : (JSON.parse(text) as { seq: number }).seq;
  }

  async function searchCli(): Promise<unknown[]> {
    // BM25 keeps this reader light (no model to load); up's vectors are exercised by hydrate, which ranks with them.
    const ran = await collect(spawn(process.execPath, [UP_CLI, "search", QUERY, "--json", "--k", "20", "--mode", "bm25"], { env: env() }));
    expect(ran.code, ran.stderr).toBe(0);
    return lines(ran.stdout).map((line) => {
      const hit = JSON.parse(line) as { memoryId: string; title: string; score: number };
      return { memoryId: hit.memoryId, title: hit.title, score: hit.score.toFixed(6) };
    });
  }

  /**
   * What a user sees: every memory's `show`, the CLI's search, the hydration pack and the file tree.
   * Read once `up`'s file store has applied the whole log (hydrate waits for the client's own writes).
   */
  async function answers() {
    const last = client.seenSeq;
    if (last > 0) await eventually("the file store to apply the log", async () => ((await filesCheckpoint()) >= last ? true : undefined), 20_000);
    const shows = [];
    for (const id of memoryIds) shows.push(await client.show(id));
    const pack = await client.request<"hydrate", { markdown: string }>("hydrate", { task: QUERY });
    const tree = last > 0 ? await treeHash(path.join(data, "files", APP)) : "no app yet";
    return { shows, search: await searchCli(), hydrate: pack.markdown, tree };
  }

  /** The answers after the last restart, while nothing was written since (reading them again costs a CLI run). */
  let lastAnswers: { seen: number; answers: Awaited<ReturnType<typeof answers>> } | undefined;

  /** Stops `up`, changes what is on disk (optionally), starts it again, and checks the answers. */
  async function restartAt(state: string, onDisk?: () => Promise<void>, expectOnStderr?: RegExp): Promise<Running> {
    const before = lastAnswers?.seen === client.seenSeq ? lastAnswers.answers : await answers();
    await stop(up!);
    await onDisk?.();
    const started = performance.now();
    up = await start();
    const again = await answers();
    restarts.push({ state, readyMs: up.readyMs, sameAnswersMs: performance.now() - started });
    expect(again).toEqual(before);
    lastAnswers = { seen: client.seenSeq, answers: again };
    console.log(`restart at "${state}": ready in ${Math.round(up.readyMs)} ms, same answers after ${Math.round(performance.now() - started)} ms`);
    if (expectOnStderr) expect(up.stderr).toMatch(expectOnStderr);
    expect(up.stderr).not.toMatch(/error:/);
    return up;
  }

  async function propose(title: string, body: string): Promise<string> {
    const outcome = (await client.propose({ title, body, kind: "procedure", tags: ["payments"] })) as { memoryId: string };
    memoryIds.push(outcome.memoryId);
    return outcome.memoryId;
  }

  const searchDir = () => path.join(data, "search", APP);
  async function currentSnapshot(): Promise<string> {
    const generation = (await readFile(path.join(searchDir(), "CURRENT"), "utf8")).trim();
    return path.join(searchDir(), `${generation}.snapshot`);
  }

  /** `memledger rebuild all` as a child; `killWhen` (polled) SIGKILLs it partway. */
  async function rebuild(killWhen?: () => Promise<boolean>): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
    const child = spawn(process.execPath, [UP_CLI, "rebuild", "all"], { env: env() });
    const done = collect(child);
    if (killWhen) {
      await eventually("the rebuild to be under way", async () => ((await killWhen()) ? true : undefined), 20_000, 5);
      child.kill("SIGKILL");
    }
    const ran = await done;
    return { code: ran.code, signal: ran.signal, stderr: ran.stderr };
  }

  test("no data, proposals only (the empty HNSW graph), approvals, rebuilds and damaged snapshots", { timeout: 600_000 }, async () => {
    // No data: nothing on disk, no stream yet.
    up = await start();
    restarts.push({ state: "first start, no data", readyMs: up.readyMs, sameAnswersMs: up.readyMs });
    await restartAt("no data");

    // Proposals only: the search snapshot written at stop holds an empty vector graph. Approving after the
    // restart used to hang `up` at 100% CPU (a graph of capacity 0 was doubled forever).
    await propose("Payment retries", "Failed payments are retried three times with exponential backoff.");
    await propose("Refund window", "Refunds are accepted for thirty days after payment.");
    await restartAt("proposals only");
    for (const id of memoryIds) await client.approve(id);
    await eventually("the approved memories to be searchable in up", async () => {
      const pack = await client.request<"hydrate", { markdown: string }>("hydrate", { task: QUERY });
      return pack.markdown.includes("Payment retries") ? true : undefined;
    }, 15_000);

    // After approvals, with more history (a revision, a rejection).
    await propose("Webhook signatures", "Verify the webhook signature before trusting a payment event.");
    await client.approve(memoryIds[2]!);
    await client.propose({ memoryId: memoryIds[0]!, title: "Payment retries", body: "Failed payments are retried five times with exponential backoff and jitter.", kind: "procedure", tags: ["payments"] });
    await client.approve(memoryIds[0]!);
    await propose("Card storage", "Card numbers are stored in plain text.");
    await client.reject(memoryIds[3]!, "never store card numbers");
    await restartAt("after approvals");

    // Mid-rebuild: a rebuild killed once its fresh file-store generation exists (before it is promoted).
    const generationsBefore = await readdir(path.join(data, "files.gen", APP));
    const killed = await rebuild(async () => (await readdir(path.join(data, "files.gen", APP))).some((name) => !generationsBefore.includes(name)));
    expect(killed.signal).toBe("SIGKILL");
    await restartAt("mid-rebuild (rebuild SIGKILLed)");

    // After a completed rebuild: the live runners follow the promoted generations.
    const rebuilt = await rebuild();
    expect(rebuilt.code, rebuilt.stderr).toBe(0);
    await restartAt("after rebuild all");

    // Search snapshot cut short: set aside, rebuilt from the log.
    await restartAt(
      "search snapshot truncated",
      async () => {
        const file = await currentSnapshot();
        await truncate(file, Math.floor((await readFile(file)).length / 2));
      },
      /search app1: search snapshot .* is unusable.*set aside as .*\.unusable-.*rebuilding from the log/,
    );

    // Search snapshot deleted: rebuilt from the log.
    await restartAt("search snapshot deleted", async () => rm(await currentSnapshot()));

    // A snapshot of the older format v2 (no tokenizer named): loaded, BM25 re-indexed from its records.
    await restartAt(
      "search snapshot of older format v2",
      async () => {
        const file = await currentSnapshot();
        const text = await readFile(file, "utf8");
        const newline = text.indexOf("\n");
        const { tokenizer: _tokenizer, ...header } = JSON.parse(text.slice(0, newline)) as Record<string, unknown>;
        await writeFile(file, JSON.stringify({ ...header, version: 2 }) + text.slice(newline));
      },
      /search app1: loading snapshot \(\d+ memories, seq \d+, format v2: BM25 re-indexed\)/,
    );

    // A snapshot of a version this build does not know (a newer build's, or garbage): set aside.
    await restartAt(
      "search snapshot of unknown version",
      async () => {
        const file = await currentSnapshot();
        // The header is the first line, so the first "version" is the snapshot's (v2 after the step above).
        await writeFile(file, (await readFile(file, "utf8")).replace(/"version":\d+/, '"version":99'));
      },
      /unknown format memledger-search-snapshot v99.*rebuilding from the log/,
    );

    // The file store's checkpoint cut short: its generation set aside, the tree rebuilt byte for byte.
    await restartAt(
      "file-store checkpoint truncated",
      async () => truncate(path.join(data, "files", APP, ".checkpoint.json"), 3),
      /files app1: file store checkpoint .*\.checkpoint\.json is unusable.*set aside as .*rebuilding from the log/,
    );

    // State up may not replace (a directory where the app's link belongs, someone's files): it stops at
    // once with exit 1, naming the directory and what to do, and leaves it untouched.
    await stop(up!);
    const link = path.join(data, "files", APP);
    await rename(link, `${link}.moved`);
    await mkdir(link);
    await writeFile(path.join(link, "notes.md"), "mine\n");
    const refusedStart = performance.now();
    const refused = await collect(spawn(process.execPath, [UP_CLI, "up", "--no-embedded"], { env: env() }));
    const refusedMs = performance.now() - refusedStart;
    expect(refused.code, refused.stderr).toBe(1);
    expect(refusedMs).toBeLessThan(READY_WITHIN_MS + 5_000);
    expect(refused.stderr).toContain(`${link} is not a link to a generation: move it away`);
    expect(await readFile(path.join(link, "notes.md"), "utf8")).toBe("mine\n");
    restarts.push({ state: "directory in the way (exit 1)", readyMs: refusedMs, sameAnswersMs: refusedMs });
    await rm(link, { recursive: true });
    await rename(`${link}.moved`, link);
    up = await start();
    expect(await answers()).toEqual(lastAnswers!.answers);
    // (Each start above failed at once had it not printed ready within READY_WITHIN_MS: see start().)
  });
});
