import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FileWriter } from "../../projections/files/writer.js";

/** The fresh files target's writer thread (projections/files/writer.ts), against the real file system. */
describe("FileWriter.whenWritten", () => {
  let dir: string;
  let writer: FileWriter;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "memledger-file-writer-"));
    writer = new FileWriter(dir);
  });

  afterEach(async () => {
    await writer.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("resolves once the last content queued for a tracked file is on disk, with other files still queued before and after it", async () => {
    const bundle = path.join(dir, ".state", "bundle-10.jsonl");
    for (let i = 0; i < 300; i++) writer.enqueue(path.join(dir, "app", `m${i}.md`), `first ${i}`);
    writer.enqueue(bundle, "old\n", true);
    for (let i = 0; i < 300; i++) writer.enqueue(path.join(dir, "app", `m${i}.md`), `second ${i}`);
    writer.enqueue(bundle, "new\n", true);
    writer.enqueue(path.join(dir, "after.md"), "after");
    await writer.whenWritten(bundle);
    expect(await readFile(bundle, "utf8")).toBe("new\n");
    // Everything queued before the tracked file's last content is written too: one queue, in order.
    expect(await readFile(path.join(dir, "app", "m299.md"), "utf8")).toBe("second 299");
    // Nothing pending: at once, and again after a drain.
    await writer.whenWritten(bundle);
    await writer.drain();
    expect(await readFile(path.join(dir, "after.md"), "utf8")).toBe("after");
    await writer.whenWritten(path.join(dir, "never-queued.md"));
  });

  it("rejects with the write's error when the file cannot be written, and so does every later call", async () => {
    // A file where a folder must be: the tracked file below cannot be created.
    await writeFile(path.join(dir, "blocker"), "a file, not a folder");
    const bundle = path.join(dir, "blocker", "bundle-1.jsonl");
    writer.enqueue(bundle, "x\n", true);
    await expect(writer.whenWritten(bundle)).rejects.toMatchObject({ code: "ENOTDIR" });
    await expect(writer.whenWritten(path.join(dir, "other"))).rejects.toMatchObject({ code: "ENOTDIR" });
    await expect(writer.drain()).rejects.toMatchObject({ code: "ENOTDIR" });
  });
});
