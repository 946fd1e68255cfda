import { mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { AppLayout, filesProjection, treeHash } from "../../projections/files/index.js";
import type { OpenProgress, ProjectionScope, ProjectionTarget } from "../../projections/projection.js";
import { isMemledgerError } from "../../schemas/errors.js";
import { EventLog } from "../search/events.js";

/**
 * Whatever file-store state is on disk when the live projection opens (a checkpoint or state file cut
 * short, a bundle of a rebuild damaged, a link to a generation that is gone), it opens at once: unusable
 * state is set aside (the generation renamed `<n>.unusable-<time>`, said so) and the store rebuilt from
 * the log, byte for byte what a projection that never stopped holds. A directory in the way of the link
 * is the operator's: it fails at once naming it. Issue 8, item 1.
 */
const scope: ProjectionScope = { prefix: "t", app: "app1", stream: "t_app_app1" };

function history(): EventLog {
  const log = new EventLog(scope.app);
  for (let i = 0; i < 8; i++) log.write(`n${i}`, { title: `Queue note ${i}`, body: `Workers drain queue ${i} every ${i} minutes.` });
  log.write("cache", { title: "Cache settings", body: "The cache uses memcached." });
  log.write("cache", { title: "Cache settings", body: "The cache uses redis." });
  log.propose("pending", { title: "Migrations", body: "Migrations run by hand." });
  return log;
}

async function feed(target: ProjectionTarget, log: EventLog, batch = 4): Promise<void> {
  const events = log.after(target.checkpoint.seq);
  for (let i = 0; i < events.length; i += batch) {
    const slice = events.slice(i, i + batch);
    await target.apply(slice);
    await target.commit(slice.at(-1)!.seq);
  }
}

describe("file store: opening over damaged state", () => {
  let base: string;
  let root: string;
  let reference: string;
  beforeEach(async () => {
    base = await mkdtemp(path.join(tmpdir(), "memledger-files-damage-"));
    root = path.join(base, "files");
    // What a projection that never stopped holds.
    const referenceRoot = path.join(base, "reference");
    const live = await filesProjection({ root: referenceRoot }).openLive(scope);
    await feed(live, history());
    await live.close();
    reference = await treeHash(path.join(referenceRoot, scope.app));
  });
  afterEach(async () => {
    await rm(base, { recursive: true, force: true });
  });

  async function ranAndStopped(log: EventLog): Promise<string> {
    const live = await filesProjection({ root }).openLive(scope);
    await feed(live, log);
    await live.close();
    return live.checkpoint.generation;
  }

  async function reopen(log: EventLog) {
    const said: OpenProgress[] = [];
    const started = performance.now();
    const live = await filesProjection({ root }).openLive(scope, { onProgress: (p) => said.push(p) });
    const openMs = performance.now() - started;
    const resumedAt = live.checkpoint.seq;
    await feed(live, log);
    await live.close();
    return { said, openMs, resumedAt, hash: await treeHash(path.join(root, scope.app)) };
  }

  const generationsDir = () => new AppLayout(root, scope.app).generationsDir;
  const stateFiles = async (generation: string) => (await readdir(path.join(generationsDir(), generation, ".state"))).sort();

  test("a good generation resumes at its checkpoint and says it is loading", async () => {
    const log = history();
    await ranAndStopped(log);
    const again = await reopen(log);
    expect(again.resumedAt).toBe(log.lastSeq);
    expect(again.said.map((p) => p.phase)).toEqual(["loading"]);
    expect(again.hash).toBe(reference);
  });

  const damages: [string, (generationDir: string, generation: string) => Promise<void>][] = [
    ["a checkpoint that is empty", (dir) => writeFile(path.join(dir, ".checkpoint.json"), "")],
    ["a checkpoint cut short", async (dir) => truncate(path.join(dir, ".checkpoint.json"), 5)],
    ["a checkpoint without a sequence", (dir) => writeFile(path.join(dir, ".checkpoint.json"), "{}\n")],
    ["a checkpoint of another generation", (dir) => writeFile(path.join(dir, ".checkpoint.json"), '{"seq":3,"generation":"77"}\n')],
    ["a memory's state file cut short", async (dir, generation) => {
      const [first] = await stateFiles(generation);
      await truncate(path.join(dir, ".state", first!), 7);
    }],
    ["a memory's state file of an unknown shape", async (dir, generation) => {
      const [first] = await stateFiles(generation);
      await writeFile(path.join(dir, ".state", first!), '{"format":9}');
    }],
  ];

  for (const [what, damage] of damages) {
    test(`${what}: the generation is set aside and the store rebuilt from the log, byte for byte`, async () => {
      const log = history();
      const generation = await ranAndStopped(log);
      const generationDir = path.join(generationsDir(), generation);
      await damage(generationDir, generation);
      const again = await reopen(log);
      expect(again.openMs).toBeLessThan(5_000);
      expect(again.resumedAt).toBe(0);
      const setAside = again.said.filter((p) => p.phase === "set-aside");
      expect(setAside).toHaveLength(1);
      expect(setAside[0]!.message).toContain(generationDir);
      expect(setAside[0]!.message).toMatch(/unusable.*set aside as .*\.unusable-.*rebuilding from the log/);
      if (what.includes("checkpoint")) expect(setAside[0]!.message).toMatch(/file store checkpoint .*\.checkpoint\.json is unusable/);
      expect((await readdir(generationsDir())).filter((name) => name.startsWith(`${generation}.unusable-`))).toHaveLength(1);
      expect(again.hash).toBe(reference);
      // The rebuilt generation is good: the next start resumes it.
      const third = await reopen(log);
      expect(third.resumedAt).toBe(log.lastSeq);
      expect(third.said.filter((p) => p.phase === "set-aside")).toEqual([]);
    });
  }

  test("a rebuild's state bundle cut short: set aside and rebuilt from the log", async () => {
    const log = history();
    const projection = filesProjection({ root });
    const fresh = await projection.openFresh(scope);
    await fresh.apply(log.events);
    await fresh.commit(log.lastSeq);
    await projection.promote(scope, fresh);
    await fresh.close();
    const generation = fresh.checkpoint.generation;
    const bundles = (await stateFiles(generation)).filter((name) => name.startsWith("bundle-"));
    expect(bundles).toHaveLength(1);
    const bundle = path.join(generationsDir(), generation, ".state", bundles[0]!);
    await truncate(bundle, Math.floor((await readFile(bundle)).length / 2));
    const again = await reopen(log);
    expect(again.resumedAt).toBe(0);
    expect(again.said.find((p) => p.phase === "set-aside")?.message).toContain(bundle);
    expect(again.hash).toBe(reference);
  });

  test("a link to a generation that is gone: a new generation is rebuilt from the log", async () => {
    const log = history();
    const generation = await ranAndStopped(log);
    await rm(path.join(generationsDir(), generation), { recursive: true });
    const again = await reopen(log);
    expect(again.resumedAt).toBe(0);
    expect(again.said.find((p) => p.phase === "set-aside")?.message).toMatch(/which is gone; rebuilding from the log/);
    expect(again.hash).toBe(reference);
  });

  test("a directory where the app's link belongs fails at once, naming it and what to do, and is left untouched", async () => {
    await mkdir(path.join(root, scope.app), { recursive: true });
    await writeFile(path.join(root, scope.app, "notes.md"), "mine\n");
    const error = await filesProjection({ root })
      .openLive(scope)
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(isMemledgerError(error) && error.details.file).toBe(path.join(root, scope.app));
    expect(String((error as Error).message)).toMatch(/move it away/);
    expect(await readFile(path.join(root, scope.app, "notes.md"), "utf8")).toBe("mine\n");
  });
});
