import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { SearchIndex, searchMemories } from "../../projections/search/index.js";
import { readSnapshot, writeSnapshot } from "../../projections/search/snapshot.js";
import { TOKENIZER_VERSION } from "../../projections/search/tokenizer.js";
import { EventLog } from "./events.js";

interface Parts {
  header: Record<string, unknown>;
  /** Record and branch lines. */
  records: string[];
  /** The saved Orama index, as chunked JSON lines. */
  fullText: string[];
}

/** Splits a snapshot file into its header, record and branch lines, and saved-index lines (the trailer dropped). */
async function partsOf(file: string): Promise<Parts> {
  const lines = (await readFile(file, "utf8")).split("\n").filter((line) => line.length > 0);
  const header = JSON.parse(lines[0]!) as Record<string, unknown> & { records: number; branches?: number };
  const recordLines = header.records + (header.branches ?? 0);
  return { header, records: lines.slice(1, 1 + recordLines), fullText: lines.slice(1 + recordLines, -1) };
}

async function writeParts(file: string, { header, records, fullText }: Parts): Promise<void> {
  const lines = [JSON.stringify(header), ...records, ...fullText];
  lines.push(JSON.stringify({ end: true, lines: lines.length + 1 }));
  await writeFile(file, `${lines.join("\n")}\n`);
}

describe("search snapshots and the tokenizer that built them", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "memledger-snapshot-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("a snapshot names its tokenizer; one saved by an older tokenizer is re-indexed from its records, not loaded", async () => {
    const log = new EventLog("app1");
    log.write("m1", { title: "Payment retries", body: "Failed payments are retried three times with backoff." });
    log.write("m2", { title: "Zahlungen — Wiederholung", body: "Fehlgeschlagene Zahlungen: dreimal, mit Pause ⏳ 日本" });
    const index = new SearchIndex("app1", "g1");
    index.apply(log.events);
    const file = join(dir, "g1.snapshot");
    // What it says it wrote is what is on disk, counted in bytes (multi-byte text included).
    const stats = await writeSnapshot(file, index);
    const written = await readFile(file);
    expect(stats).toEqual({ bytes: written.length, lines: written.toString("utf8").split("\n").length - 1 });
    const current = await partsOf(file);
    expect(current.header).toMatchObject({ version: 4, tokenizer: TOKENIZER_VERSION });
    expect(searchMemories(await readSnapshot(file), "retrying a payment", { k: 5 }).map((hit) => hit.memoryId)).toEqual(["m1"]);

    // The saved index of another index (empty: it lacks m1). Loading it would be refused, so a snapshot
    // that reads shows that the saved index was dropped and BM25 rebuilt from the records.
    const emptyFile = join(dir, "empty.snapshot");
    await writeSnapshot(emptyFile, new SearchIndex("app1", "g0"));
    const foreign = (await partsOf(emptyFile)).fullText;

    const spliced = join(dir, "spliced.snapshot");
    await writeParts(spliced, { ...current, fullText: foreign });
    await expect(readSnapshot(spliced)).rejects.toThrow(/missing from the saved index/);

    // The same file as a version-2 snapshot (written before stemming: no tokenizer in the header).
    const { tokenizer: _tokenizer, ...v2Header } = current.header;
    await writeParts(spliced, { ...current, header: { ...v2Header, version: 2 }, fullText: foreign });
    const reindexed = await readSnapshot(spliced);
    expect(reindexed.appliedSeq).toBe(index.appliedSeq);
    expect(searchMemories(reindexed, "retrying a payment", { k: 5 }).map((hit) => hit.memoryId)).toEqual(["m1"]);
  });
});
