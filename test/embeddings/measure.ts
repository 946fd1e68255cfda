/**
 * Measures the embedders and the cache on this machine; not a test (vitest only runs *.spec.ts).
 *
 *   npx tsc -p test/embeddings/tsconfig.measure.json && node node_modules/.cache/memledger-embeddings-measure/test/embeddings/measure.js
 *
 * Needs NATS at NATS_URL (default 127.0.0.1:4222) for the cache figures; the bucket is deleted afterwards.
 */
import { randomBytes } from "node:crypto";
import { Kvm } from "@nats-io/kv";
import { naming } from "../../events/subjects.js";
import { connectNats } from "../../services/nats.js";
import { CachedEmbedder, KvVectorStore } from "../../services/embeddings/cache.js";
import { UseLiteEmbedder } from "../../services/embeddings/use-lite.js";

const WORDS = (
  "agent deploy database migration timeout retry lease lock claim session memory ledger stream subject " +
  "consumer projection rebuild index vector search cache token budget review approve reject branch commit " +
  "merge conflict test failure flaky network latency queue worker schedule nightly backup restore snapshot " +
  "config secret rotate credential user customer invoice report dashboard metric alert pager incident " +
  "postmortem root cause fix patch release version rollback canary traffic region cluster node disk memory"
).split(" ");

let seed = 42;
const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
const sentence = (words: number): string =>
  Array.from({ length: words }, () => WORDS[Math.floor(rand() * WORDS.length)]).join(" ") + ".";

const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(0)} MB`;
// The kernel's high-water mark: sampling misses peaks, because the model runs synchronously in WebAssembly.
const peakRss = (): number => process.resourceUsage().maxRSS * 1024;

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const start = performance.now();
  const result = await fn();
  return [result, performance.now() - start];
}

async function perSecond(label: string, texts: string[], embed: (t: string[]) => Promise<unknown>, batch: number): Promise<void> {
  const [, ms] = await timed(async () => {
    for (let i = 0; i < texts.length; i += batch) await embed(texts.slice(i, i + batch));
  });
  console.log(`${label}: ${texts.length} texts in ${ms.toFixed(0)} ms = ${((texts.length * 1000) / ms).toFixed(1)}/s (${(ms / texts.length).toFixed(2)} ms/text)`);
}

async function main(): Promise<void> {
  console.log(`node ${process.version}, load average ${(await import("node:os")).loadavg().map((l) => l.toFixed(1)).join(" ")}, rss at start ${mb(process.memoryUsage().rss)}`);
  const [, loadMs] = await timed(() => new UseLiteEmbedder().warmUp());
  console.log(`USE-lite model load (import + weights + wasm init): ${loadMs.toFixed(0)} ms, rss ${mb(process.memoryUsage().rss)}`);

  const short = Array.from({ length: 256 }, () => sentence(8 + Math.floor(rand() * 6)));
  const notes = Array.from({ length: 64 }, () => sentence(70));
  const single = new UseLiteEmbedder({ batchSize: 1 });
  await single.embed(short.slice(0, 5)); // first executions compile kernels
  await perSecond("short sentences, one per call", short.slice(0, 64), (t) => single.embed(t), 1);
  for (const batchSize of [8, 32, 128]) {
    const e = new UseLiteEmbedder({ batchSize });
    await perSecond(`short sentences, batch ${batchSize}`, short, (t) => e.embed(t), short.length);
  }
  await perSecond("70-word notes, one per call", notes.slice(0, 16), (t) => single.embed(t), 1);
  for (const batchSize of [8, 32]) {
    const e = new UseLiteEmbedder({ batchSize });
    await perSecond(`70-word notes, batch ${batchSize}`, notes, (t) => e.embed(t), notes.length);
  }
  console.log(`rss after model runs ${mb(process.memoryUsage().rss)}, peak ${mb(peakRss())}`);

  const nc = await connectNats({ name: "embeddings-measure" });
  const prefix = `measure${randomBytes(4).toString("hex")}`;
  try {
    const texts = [...short, ...notes];
    const cold = new CachedEmbedder(new UseLiteEmbedder(), await KvVectorStore.open(nc, prefix));
    const [, coldMs] = await timed(() => cold.embed(texts));
    console.log(`cache cold: ${texts.length} texts embedded and stored in ${coldMs.toFixed(0)} ms`);
    const warm = new CachedEmbedder(new UseLiteEmbedder(), await KvVectorStore.open(nc, prefix));
    const [, kvMs] = await timed(() => warm.embed(texts));
    console.log(`cache hit from KV (fresh LRU): ${texts.length} texts in ${kvMs.toFixed(1)} ms = ${((kvMs * 1000) / texts.length).toFixed(0)} µs/text; stats ${JSON.stringify(warm.stats())}`);
    const [, lruMs] = await timed(() => warm.embed(texts));
    console.log(`cache hit from LRU: ${texts.length} texts in ${lruMs.toFixed(1)} ms = ${((lruMs * 1000) / texts.length).toFixed(1)} µs/text (includes sha256 of each text)`);
  } finally {
    await new Kvm(nc).open(naming(prefix).embeddingCacheBucket()).then((kv) => kv.destroy()).catch(() => undefined);
    await nc.close();
  }
  console.log(`rss at end ${mb(process.memoryUsage().rss)}, peak ${mb(peakRss())}`);
}

await main();
