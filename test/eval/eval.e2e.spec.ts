import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Writable } from "node:stream";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { isStreamOfPrefix } from "../../events/subjects.js";
import { run } from "../../services/cli/program.js";
import { connectNats } from "../../services/nats.js";
import { NATS_URL, uniquePrefix } from "../support/env.js";

/**
 * `memledger eval` end to end on a handmade corpus: two conversations (scopes), six docs, queries in three
 * categories (one with its relevant doc in the other conversation, one without any relevant doc), run
 * in-process through the CLI against real NATS with the real USE-lite model.
 */
const corpus = [
  { id: "a:1", conv: "conv-a", speaker: "Alice", text: "Alice: I keep my zeppelin in the red hangar by the lake." },
  { id: "a:2", conv: "conv-a", speaker: "Bob", text: "Bob: I bought a violin in Vienna last spring." },
  { id: "a:3", conv: "conv-a", speaker: "Alice", text: "Alice: My sister teaches chemistry at the university." },
  { id: "a:4", conv: "conv-a", speaker: "Bob", text: "Bob: The marathon was exhausting but fun." },
  { id: "b:1", conv: "conv-b", speaker: "Carol", text: "Carol: I keep my zeppelin in a blue hangar near the airport." },
  { id: "b:2", conv: "conv-b", speaker: "Dan", text: "Dan: I planted tomatoes and basil this year." },
];
const queries = [
  { id: "qa1", conv: "conv-a", q: "Where does Alice keep the zeppelin?", cat: 1 },
  { id: "qa2", conv: "conv-a", q: "Which violin did Bob buy in Vienna?", cat: 2 },
  { id: "qa3", conv: "conv-a", q: "What does Alice's sister teach?", cat: 5 },
  { id: "qb1", conv: "conv-b", q: "Where is Carol's zeppelin kept?", cat: 1 },
  // Its relevant doc is in the other conversation: scoped search can never find it.
  { id: "qx", conv: "conv-a", q: "Who planted tomatoes?", cat: 1 },
  // No relevant doc at all: skipped, not scored.
  { id: "qnone", conv: "conv-b", q: "Anything about trains?", cat: 2 },
];
const qrels = ["qid\tdoc\tscore", "qa1\ta:1\t1", "qa2\ta:2\t1", "qa3\ta:3\t1", "qb1\tb:1\t1", "qx\tb:2\t1", "qnone\ta:1\t0"];

function captured() {
  let text = "";
  const stream = new Writable({
    write(chunk, _encoding, done) {
      text += String(chunk);
      done();
    },
  });
  return { stream, text: () => text };
}

async function evalCli(args: string[]) {
  const stdout = captured();
  const stderr = captured();
  const stdin = new PassThrough();
  stdin.end();
  const code = await run(["--nats", NATS_URL, "eval", ...args], { stdout: stdout.stream, stderr: stderr.stream, stdin, env: {} });
  const prefix = /temporary prefix (\S+)/.exec(stderr.text())?.[1];
  return { code, stdout: stdout.text(), stderr: stderr.text(), prefix };
}

async function streamsOf(nc: NatsConnection, prefix: string): Promise<string[]> {
  const jsm = await jetstreamManager(nc);
  const found: string[] = [];
  for await (const name of jsm.streams.names()) if (isStreamOfPrefix(prefix, name)) found.push(name);
  return found;
}

describe("memledger eval", () => {
  let dir: string;
  let files: string[];
  let nc: NatsConnection;
  const cachePrefix = uniquePrefix("evc");

  beforeAll(async () => {
    nc = await connectNats({ servers: NATS_URL });
    dir = await mkdtemp(join(tmpdir(), "memledger-eval-test-"));
    const corpusFile = join(dir, "corpus.jsonl");
    const queriesFile = join(dir, "queries.jsonl");
    const qrelsFile = join(dir, "qrels.tsv");
    await writeFile(corpusFile, corpus.map((d) => JSON.stringify(d)).join("\n"));
    await writeFile(queriesFile, queries.map((q) => JSON.stringify(q)).join("\n"));
    await writeFile(qrelsFile, qrels.join("\n"));
    files = ["--corpus", corpusFile, "--queries", queriesFile, "--qrels", qrelsFile, "--id-field", "id", "--scope-field", "conv", "--query-field", "q", "--category-field", "cat"];
  });

  afterAll(async () => {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(`KV_${cachePrefix}_embeddings`).catch(() => undefined);
    await nc.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("--json: per mode overall (category 5 left out) and every category; the temporary prefix is gone afterwards, cache too with --no-keep-cache", async () => {
    const ran = await evalCli([...files, "--mode", "all", "--exclude-category", "5", "--no-keep-cache", "--json"]);
    expect(ran.code, ran.stderr).toBe(0);
    expect(ran.prefix).toMatch(/^mleval[0-9a-f]{10}$/);
    const lines = ran.stdout.trim().split("\n");
    expect(lines).toHaveLength(1);
    const report = JSON.parse(lines[0]!);
    expect(Object.keys(report)).toEqual(["bm25", "vector", "hybrid"]);
    const summary = { "recall@5": expect.any(Number), "recall@10": expect.any(Number), "ndcg@10": expect.any(Number), mrr: expect.any(Number), n: expect.any(Number) };
    for (const mode of ["bm25", "vector", "hybrid"]) {
      const m = report[mode];
      expect(m.overall).toEqual(summary);
      expect(Object.keys(m.byCategory)).toEqual(["1", "2", "5"]);
      for (const category of Object.values(m.byCategory)) expect(category).toEqual(summary);
      // qa1, qa2, qb1, qx; qa3 (category 5) only in `all` and byCategory; qnone skipped.
      expect(m.overall.n).toBe(4);
      expect(m.all.n).toBe(5);
      expect(m.skipped).toBe(1);
      expect(m.byCategory["1"].n).toBe(3);
      // Every in-scope relevant doc is within the top 10 of a scope of at most 4 docs; qx's never is.
      expect(m.byCategory["1"]["recall@10"]).toBeCloseTo(2 / 3);
      expect(m.overall["recall@10"]).toBeCloseTo(3 / 4);
      expect(m.byCategory["5"]["recall@10"]).toBe(1);
    }
    // BM25 ranks the doc naming the zeppelin (qa1, qb1) and the violin (qa2) first.
    expect(report.bm25.byCategory["2"]).toMatchObject({ n: 1, mrr: 1, "recall@5": 1, "ndcg@10": 1 });
    expect(report.bm25.byCategory["1"].mrr).toBeCloseTo(2 / 3);
    expect(await streamsOf(nc, ran.prefix!)).toEqual([]);
  });

  test("the embedding cache is kept across runs by default: a second run embeds nothing", async () => {
    const args = [...files, "--mode", "vector", "--cache-prefix", cachePrefix];
    const first = await evalCli(args);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/embedding cache: \d+ hits, [1-9]\d* embedded/);
    const second = await evalCli(args);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/embedding cache: [1-9]\d* hits, 0 embedded/);
    expect(second.stdout).toMatch(/^vector\s/m);
    expect(second.stdout).toMatch(/overall/);
    expect(await streamsOf(nc, second.prefix!)).toEqual([]);
    expect(await streamsOf(nc, cachePrefix)).toEqual([`KV_${cachePrefix}_embeddings`]);
  });
});
