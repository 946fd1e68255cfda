import { readFileSync } from "node:fs";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { SearchIndex, searchMemories } from "../../projections/search/index.js";
import { readSnapshot, writeSnapshot } from "../../projections/search/snapshot.js";
import { EventLog } from "./events.js";

/**
 * Measurements, not a regular test (no timing is asserted; it checks that the loaded index answers like
 * the live one). Run:
 *   MEMLEDGER_SEARCH_MEASURE=1 [MEMLEDGER_SEARCH_N=10000] npx vitest run test/search/measure.test.ts
 * Corpus: LoCoMo dialogue turns (/work/shared/eval/locomo, CC BY-NC 4.0), four turns per memory, one
 * scope per conversation; queries: LoCoMo questions.
 */
const LOCOMO = process.env.MEMLEDGER_LOCOMO ?? "/work/shared/eval/locomo";
const N = Number(process.env.MEMLEDGER_SEARCH_N ?? 10_000);

const jsonl = <T>(file: string): T[] =>
  readFileSync(join(LOCOMO, file), "utf8").split("\n").filter(Boolean).map((line) => JSON.parse(line) as T);

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
const ms = (n: number) => `${n.toFixed(2)} ms`;

describe.skipIf(!process.env.MEMLEDGER_SEARCH_MEASURE)("search measurements", () => {
  test(`insert, query, snapshot at ${N} memories`, async () => {
    const turns = jsonl<{ conv_id: string; text: string }>("turns/corpus.jsonl");
    const questions = jsonl<{ conv_id: string; question: string }>("queries.jsonl");
    const log = new EventLog("bench");
    for (let i = 0; i < N; i++) {
      const parts = [0, 1, 2, 3].map((j) => turns[(i * 4 + j) % turns.length]!);
      const body = parts.map((t) => t.text).join("\n") + (i % 10 === 0 ? `\nSee src/conv/${parts[0]!.conv_id}/Turn${i}Handler.ts` : "");
      log.write(`m${i}`, {
        title: parts[0]!.text.split(/\s+/).slice(0, 8).join(" "),
        body,
        scope: `team:${parts[0]!.conv_id}`,
        tags: [parts[0]!.conv_id],
      });
    }

    const index = new SearchIndex("bench", "measure");
    let started = performance.now();
    index.apply(log.events);
    const applyMs = performance.now() - started;
    console.log(`apply ${log.events.length} events (${N} memories): ${ms(applyMs)}, ${((N / applyMs) * 1000).toFixed(0)} memories/s`);

    const queries = questions.slice(0, 500);
    const time = (run: (q: (typeof queries)[number]) => unknown) => {
      const latencies = queries.map((q) => {
        const t = performance.now();
        run(q);
        return performance.now() - t;
      });
      latencies.sort((a, b) => a - b);
      return `p50 ${ms(percentile(latencies, 0.5))}, p99 ${ms(percentile(latencies, 0.99))}`;
    };
    console.log(`query k=10: ${time((q) => searchMemories(index, q.question, { k: 10 }))}`);
    console.log(`query k=10 with scope filter: ${time((q) => searchMemories(index, q.question, { k: 10, scope: `team:${q.conv_id}` }))}`);
    console.log(`query for an identifier: ${time((_, ) => searchMemories(index, "src/conv/conv-26/Turn40Handler.ts", { k: 10 }))}`);

    const dir = await mkdtemp(join(tmpdir(), "memledger-search-measure-"));
    try {
      const file = join(dir, "snapshot");
      started = performance.now();
      const stats = await writeSnapshot(file, index);
      const saveMs = performance.now() - started;
      console.log(`snapshot write: ${ms(saveMs)}, ${(stats.bytes / 1e6).toFixed(1)} MB, ${stats.lines} lines (file ${((await stat(file)).size / 1e6).toFixed(1)} MB)`);

      started = performance.now();
      const loaded = await readSnapshot(file);
      console.log(`snapshot load (Orama load()): ${ms(performance.now() - started)}`);

      // The alternative: keep only the records and insert every active memory again on load.
      const records = [...index.exportState().records].map((r) => JSON.parse(JSON.stringify(r)));
      started = performance.now();
      const reinserted = SearchIndex.restore({ app: "bench", generation: "x", seq: index.appliedSeq, records });
      console.log(`restore by re-inserting (records already parsed): ${ms(performance.now() - started)}`);

      const rss = process.memoryUsage().rss;
      console.log(`RSS with three indexes loaded: ${(rss / 1e6).toFixed(0)} MB`);

      for (const q of queries.slice(0, 50)) {
        const expected = searchMemories(index, q.question, { k: 10 });
        expect(searchMemories(loaded, q.question, { k: 10 })).toEqual(expected);
        expect(searchMemories(reinserted, q.question, { k: 10 }).map((h) => h.memoryId)).toEqual(expected.map((h) => h.memoryId));
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 600_000);
});
