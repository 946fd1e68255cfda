import { mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import type { OpenProgress, ProjectionTarget } from "../../projections/projection.js";
import { openSearchIndex, retrieve, searchMemories, searchProjection, vectorSetup, type SearchIndex, type VectorSource } from "../../projections/search/index.js";
import { isMemledgerError } from "../../schemas/errors.js";
import { CountingEmbedder } from "../embeddings/support.js";
import { EventLog } from "./events.js";

/**
 * Whatever search state is on disk when the live projection opens (none, empty, cut short, damaged, of
 * an older or unknown format, a damaged CURRENT, damaged vectors), it opens at once: a usable snapshot
 * is loaded, an unusable one is set aside (renamed `<name>.unusable-<time>`, said so) and the index is
 * rebuilt from the log, with the same answers as a projection that never stopped. Issue 8, item 1.
 */
const scope = { prefix: "t", app: "app1", stream: "t_app_app1" };
const QUERIES = ["queue workers", "cache redis", "deploy thursday", "migrations"];

function history(): EventLog {
  const log = new EventLog(scope.app);
  for (let i = 0; i < 12; i++) log.write(`n${i}`, { title: `Queue note ${i}`, body: `Workers drain queue ${i} every ${i} minutes.` });
  log.write("cache", { title: "Cache settings", body: "The cache uses memcached." });
  log.write("cache", { title: "Cache settings", body: "The cache uses redis with a 300s TTL." });
  log.write("deploy", { title: "Deploy window", body: "Deploys happen on thursday." });
  log.propose("pending", { title: "Migrations", body: "Migrations run by hand." });
  return log;
}

async function feed(target: ProjectionTarget, log: EventLog, batch = 5): Promise<void> {
  const events = log.after(target.checkpoint.seq);
  for (let i = 0; i < events.length; i += batch) {
    const slice = events.slice(i, i + batch);
    await target.apply(slice);
    await target.commit(slice.at(-1)!.seq);
  }
}

const bm25Answers = (index: SearchIndex) => QUERIES.map((q) => searchMemories(index, q, { k: 20 }).map((hit) => hit.memoryId));
const vectorAnswers = async (index: SearchIndex) =>
  Promise.all(QUERIES.map(async (q) => (await retrieve(index, q, { k: 20, mode: "vector" })).map((hit) => hit.memoryId)));

describe("search projection: opening over damaged or foreign state", () => {
  let dir: string;
  const embedder = new CountingEmbedder("counting@1", 16);
  const setup = () => vectorSetup({ embedder, prefix: "t", backend: { kind: "hnsw" } });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "memledger-search-damage-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A projection with vectors that ran over the whole log and stopped (its snapshot written). */
  async function ranAndStopped(log: EventLog): Promise<{ generation: string; bm25: string[][]; vectors: string[][] }> {
    const projection = searchProjection({ dir, snapshotEveryEvents: 1, vectors: setup() });
    const live = await projection.openLive(scope);
    await feed(live, log);
    const index = projection.index(scope.app)!;
    const result = { generation: live.checkpoint.generation, bm25: bm25Answers(index), vectors: await vectorAnswers(index) };
    await live.close();
    return result;
  }

  /** Opens again (timed), collecting what the projection says; then catches up from its checkpoint. */
  async function reopen(log: EventLog) {
    const said: OpenProgress[] = [];
    const sources: VectorSource[] = [];
    const projection = searchProjection({ dir, snapshotEveryEvents: 1, vectors: setup(), onVectors: (_a, _g, source) => sources.push(source) });
    const started = performance.now();
    const live = await projection.openLive(scope, { onProgress: (p) => said.push(p) });
    const openMs = performance.now() - started;
    const resumedAt = live.checkpoint.seq;
    await feed(live, log);
    const index = projection.index(scope.app)!;
    return { live, index, said, sources, openMs, resumedAt, bm25: bm25Answers(index), vectors: await vectorAnswers(index) };
  }

  const appFiles = async () => (await readdir(join(dir, scope.app))).sort();

  test("no state: opens at sequence 0 and says nothing was set aside", async () => {
    const log = history();
    const { said, resumedAt, bm25 } = await reopen(log);
    expect(resumedAt).toBe(0);
    expect(said.filter((p) => p.phase === "set-aside")).toEqual([]);
    expect(bm25[0]).toContain("n3");
  });

  test("a good snapshot loads at its checkpoint, says how much it loads, and answers as before", async () => {
    const log = history();
    const before = await ranAndStopped(log);
    const again = await reopen(log);
    expect(again.resumedAt).toBe(log.lastSeq);
    expect(again.said.map((p) => p.phase)).toEqual(["loading"]);
    expect(again.said[0]!.message).toMatch(/loading snapshot \(15 memories, seq \d+\)/);
    expect(again.sources).toEqual(["snapshot"]);
    expect(again.bm25).toEqual(before.bm25);
    expect(again.vectors).toEqual(before.vectors);
  });

  const damages: [string, (file: string) => Promise<void>][] = [
    ["empty", (file) => writeFile(file, "")],
    ["cut short in the middle of a line", async (file) => truncate(file, Math.floor((await readFile(file)).length / 2) + 3)],
    ["cut short before its trailer", async (file) => writeFile(file, (await readFile(file, "utf8")).split("\n").slice(0, -2).join("\n") + "\n")],
    ["binary garbage", (file) => writeFile(file, Buffer.from([0, 1, 2, 255, 254, 10, 0, 0, 7]))],
    ["of an unknown format version", async (file) => writeFile(file, (await readFile(file, "utf8")).replace(/"version":4/, '"version":99'))],
    ["of another app", async (file) => writeFile(file, (await readFile(file, "utf8")).replace(/"app":"app1"/, '"app":"other"'))],
    ["with a record line that is not JSON", async (file) => {
      const lines = (await readFile(file, "utf8")).split("\n");
      lines[2] = "{not json";
      await writeFile(file, lines.join("\n"));
    }],
  ];

  for (const [what, damage] of damages) {
    test(`a snapshot ${what} is set aside and rebuilt from the log, with the same answers`, async () => {
      const log = history();
      const before = await ranAndStopped(log);
      const file = join(dir, scope.app, `${before.generation}.snapshot`);
      await damage(file);
      // A reader (the CLI) treats it as no snapshot and replays the whole log: never half a file.
      expect((await openSearchIndex(dir, scope.app)).appliedSeq).toBe(0);

      const again = await reopen(log);
      expect(again.openMs).toBeLessThan(5_000);
      expect(again.resumedAt).toBe(0);
      const setAside = again.said.filter((p) => p.phase === "set-aside");
      expect(setAside).toHaveLength(1);
      expect(setAside[0]!.message).toContain(file);
      expect(setAside[0]!.message).toMatch(/unusable.*set aside as .*\.unusable-.*rebuilding from the log/);
      const files = await appFiles();
      expect(files.filter((name) => name.startsWith(`${before.generation}.snapshot.unusable-`))).toHaveLength(1);
      expect(files.filter((name) => name.startsWith(`${before.generation}.vectors.unusable-`))).toHaveLength(1);
      expect(again.bm25).toEqual(before.bm25);
      expect(again.vectors).toEqual(before.vectors);

      // And the rebuilt state is a good snapshot: the next start loads it.
      await again.live.close();
      const third = await reopen(log);
      expect(third.resumedAt).toBe(log.lastSeq);
      expect(third.said.filter((p) => p.phase === "set-aside")).toEqual([]);
    });
  }

  test("a snapshot of the older format v2 (no tokenizer named) loads at its checkpoint and answers as before", async () => {
    const log = history();
    const before = await ranAndStopped(log);
    const file = join(dir, scope.app, `${before.generation}.snapshot`);
    const text = await readFile(file, "utf8");
    const newline = text.indexOf("\n");
    const { tokenizer: _tokenizer, ...header } = JSON.parse(text.slice(0, newline)) as Record<string, unknown>;
    await writeFile(file, JSON.stringify({ ...header, version: 2 }) + text.slice(newline));
    const again = await reopen(log);
    expect(again.resumedAt).toBe(log.lastSeq);
    expect(again.said[0]!.message).toMatch(/format v2: BM25 re-indexed/);
    expect(again.bm25).toEqual(before.bm25);
    expect(again.vectors).toEqual(before.vectors);
  });

  test("a damaged CURRENT pointer is set aside and the index rebuilt from the log", async () => {
    const log = history();
    const before = await ranAndStopped(log);
    await writeFile(join(dir, scope.app, "CURRENT"), "../../etc/passwd\n");
    const again = await reopen(log);
    expect(again.resumedAt).toBe(0);
    expect(again.said.find((p) => p.phase === "set-aside")?.message).toMatch(/CURRENT is unusable/);
    expect((await appFiles()).some((name) => name.startsWith("CURRENT.unusable-"))).toBe(true);
    expect(again.bm25).toEqual(before.bm25);
  });

  test("a deleted snapshot (CURRENT names a missing file) is rebuilt from the log", async () => {
    const log = history();
    const before = await ranAndStopped(log);
    await rm(join(dir, scope.app, `${before.generation}.snapshot`));
    const again = await reopen(log);
    expect(again.resumedAt).toBe(0);
    expect(again.bm25).toEqual(before.bm25);
    expect(again.vectors).toEqual(before.vectors);
  });

  const vectorDamages: [string, (vectors: string) => Promise<void>][] = [
    ["its vector file cut short", async (vectors) => truncate(join(vectors, "vectors.f32"), 10)],
    ["its graph cut short", async (vectors) => truncate(join(vectors, "hnsw.index"), 100)],
    ["its manifest not JSON", async (vectors) => writeFile(join(vectors, "manifest.json"), "{")],
    ["a manifest of an unknown version", async (vectors) => {
      const manifest = JSON.parse(await readFile(join(vectors, "manifest.json"), "utf8")) as Record<string, unknown>;
      await writeFile(join(vectors, "manifest.json"), JSON.stringify({ ...manifest, version: 7 }));
    }],
  ];

  for (const [what, damage] of vectorDamages) {
    test(`saved vectors with ${what} are set aside and derived again; BM25 still loads from the snapshot`, async () => {
      const log = history();
      const before = await ranAndStopped(log);
      const vectors = join(dir, scope.app, `${before.generation}.vectors`);
      await damage(vectors);
      const again = await reopen(log);
      expect(again.resumedAt).toBe(log.lastSeq);
      expect(again.sources).toEqual(["derived"]);
      expect(again.said.find((p) => p.phase === "set-aside")?.message).toMatch(/vector snapshot.*set aside as .*\.vectors\.unusable-.*deriving the vectors again/);
      expect((await appFiles()).filter((name) => name.startsWith(`${before.generation}.vectors.unusable-`))).toHaveLength(1);
      expect(again.bm25).toEqual(before.bm25);
      expect(again.vectors).toEqual(before.vectors);
    });
  }

  test("proposals only (an empty HNSW graph saved), restart, approve: the index takes the approved memory (the restart hang)", async () => {
    const log = new EventLog(scope.app);
    log.propose("first", { title: "Retry policy", body: "Payments retry three times with backoff." });
    const before = await ranAndStopped(log);
    expect(before.vectors.every((ids) => ids.length === 0)).toBe(true);
    log.approve("first", 1);
    const again = await reopen(log);
    expect(again.resumedAt).toBe(1);
    expect(again.sources).toEqual(["snapshot"]);
    const hits = await retrieve(again.index, "payments retry", { k: 3, mode: "vector" });
    expect(hits.map((hit) => hit.memoryId)).toEqual(["first"]);
  });

  test("a snapshot that cannot be read at all (a directory in its place) fails at once, naming the file and what to do", async () => {
    const log = history();
    const before = await ranAndStopped(log);
    const file = join(dir, scope.app, `${before.generation}.snapshot`);
    await rm(file);
    await mkdir(file);
    const projection = searchProjection({ dir });
    const started = performance.now();
    const error = await projection.openLive(scope).then(
      () => null,
      (e: unknown) => e,
    );
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(isMemledgerError(error) && error.code).toBe("unavailable");
    expect(String((error as Error).message)).toContain(file);
    expect(String((error as Error).message)).toMatch(/move the search directory away/);
  });
});
