import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FileWriter } from "../../projections/files/writer.js";

/** The fresh files target's writer thread (projections/files/writer.ts), against the real file system. */
describe("FileWriter", () => {
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

  it("writes every file's exact text, in batches sent as encoded bytes: multi-byte characters, an empty file, a lone surrogate", async () => {
    const texts = ["plain ascii", "", "é ü ß — “quotes” 日本語 🦀 emoji", "a\nb\r\n\u0000c", "lone \ud800 surrogate", "x".repeat(70_000)];
    const files = Array.from({ length: 600 }, (_, i) => ({ file: path.join(dir, `d${i % 7}`, `f${i}.md`), text: `${texts[i % texts.length]} #${i}` }));
    files[5]!.text = "";
    for (const { file, text } of files) writer.enqueue(file, text);
    await writer.drain();
    for (const { file, text } of files) expect((await readFile(file)).equals(Buffer.from(text, "utf8")), `${file} holds its text's UTF-8 bytes`).toBe(true);
    expect(await readFile(files[8]!.file, "utf8")).toBe(`${texts[2]} #8`);
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
