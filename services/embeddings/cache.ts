import { hash } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import { DeliverPolicy, jetstream, type JetStreamClient } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { LRUCache } from "lru-cache";
import { naming } from "../../events/subjects.js";
import { isMemledgerError, unavailable } from "../../schemas/errors.js";
import { isBlankText, type Embedder } from "./embedder.js";
import { createJetStreamResource } from "../nats.js";

/**
 * Embedding is the slowest step of the pipeline, so a text is embedded once per model, ever: vectors are
 * kept in a NATS KV bucket (one per prefix, shared by every process and every projection generation),
 * keyed by the model id and the exact text. A projection rebuild with a warm cache calls the model zero times.
 */

/**
 * sha256(modelId + "\0" + text), hex: a valid KV key of fixed length whatever the text, and a new model
 * never hits. One-shot: a Hash object per text (create, three updates, digest) took twice as long, and a
 * rebuild keys every active memory's text (81k at 1M events). The same UTF-8 bytes either way: the NUL
 * between the two keeps a surrogate at the end of one from pairing with one at the start of the other.
 */
export function embeddingCacheKey(modelId: string, text: string): string {
  return hash("sha256", `${modelId}\0${text}`, "hex");
}

/** Float32 little-endian bytes, whatever the host's byte order, so any machine can read any other's entries. */
export function encodeVector(vector: Float32Array): Uint8Array {
  const bytes = new Uint8Array(vector.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < vector.length; i++) view.setFloat32(i * 4, vector[i]!, true);
  return bytes;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * The inverse of encodeVector; undefined for bytes that cannot be a vector (empty, or not a multiple of 4).
 * Bytes that own their whole buffer (a copy made for this read, as a bucket scan makes) are read in place
 * on a little-endian host: the vector shares their memory, which nothing else holds. Anything else, such
 * as a view of a socket chunk, is copied, so that the vector does not keep its neighbours alive.
 */
export function decodeVector(bytes: Uint8Array): Float32Array | undefined {
  if (bytes.length === 0 || bytes.length % 4 !== 0) return undefined;
  if (LITTLE_ENDIAN && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength) return new Float32Array(bytes.buffer, 0, bytes.length / 4);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const vector = new Float32Array(bytes.length / 4);
  for (let i = 0; i < vector.length; i++) vector[i] = view.getFloat32(i * 4, true);
  return vector;
}

/** Runs fn over items with at most `limit` in flight, results in item order. */
export async function mapBounded<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Where vectors persist between processes. The KV implementation is the real one; the interface keeps CachedEmbedder's logic apart from NATS. */
export interface VectorStore {
  get(key: string): Promise<Uint8Array | undefined>;
  put(key: string, value: Uint8Array): Promise<void>;
  /**
   * Many keys at once, however the store does that best: `each` is called once for every key it holds, in
   * no particular order, and may be async (the read waits for it); the keys it does not hold are skipped.
   */
  getEach?(keys: readonly string[], concurrency: number, each: (key: string, value: Uint8Array) => void | Promise<void>): Promise<void>;
}

/**
 * A read of many keys scans the whole bucket once, rather than asking for each key, when the keys are at
 * least this share of its entries (and at least SCAN_MIN_KEYS): a get is a request and a reply (~150 µs
 * of client CPU here), a scanned entry ~10 µs. A rebuild with a warm cache asks for every active memory's
 * text at once, usually most of the bucket: 8,061 gets were about 2 s of a 100k-event rebuild.
 */
const SCAN_SHARE = 1 / 8;
const SCAN_MIN_KEYS = 256;

/** The embedding cache bucket of one prefix. Values are small (2 KiB for 512-d), one revision per key is enough. */
export class KvVectorStore implements VectorStore {
  /** How this store has read: one request per key, or whole-bucket scans (getMany). */
  readonly reads = { gets: 0, scans: 0 };

  private constructor(
    readonly bucket: string,
    private readonly kv: KV,
    private readonly js: JetStreamClient,
  ) {}

  static async open(nc: NatsConnection, prefix: string): Promise<KvVectorStore> {
    const bucket = naming(prefix).embeddingCacheBucket();
    try {
      const kv = await createJetStreamResource(`the embedding cache bucket ${bucket}`, () =>
        new Kvm(nc).create(bucket, { history: 1, description: "memledger embeddings by sha256(modelId \\0 text)" }),
      );
      return new KvVectorStore(bucket, kv, jetstream(nc));
    } catch (err) {
      throw unavailable(`cannot open the embedding cache bucket ${bucket}: ${(err as Error).message}`, { bucket }, err);
    }
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    this.reads.gets++;
    try {
      const entry = await this.kv.get(key);
      // A deleted or purged key reads back as an entry with an operation other than PUT.
      return entry && entry.operation === "PUT" ? entry.value : undefined;
    } catch (err) {
      throw unavailable(`embedding cache ${this.bucket}: get failed: ${(err as Error).message}`, { bucket: this.bucket });
    }
  }

  /** The keys of `keys` this bucket holds, with their bytes (getEach, collected). */
  async getMany(keys: readonly string[], concurrency: number): Promise<Map<string, Uint8Array>> {
    const found = new Map<string, Uint8Array>();
    await this.getEach(keys, concurrency, (key, value) => void found.set(key, value));
    return found;
  }

  async getEach(keys: readonly string[], concurrency: number, each: (key: string, value: Uint8Array) => void | Promise<void>): Promise<void> {
    if (keys.length === 0) return;
    let entries = Number.POSITIVE_INFINITY;
    if (keys.length >= SCAN_MIN_KEYS) {
      try {
        entries = (await this.kv.status()).values;
      } catch (err) {
        throw unavailable(`embedding cache ${this.bucket}: status failed: ${(err as Error).message}`, { bucket: this.bucket });
      }
    }
    if (keys.length < entries * SCAN_SHARE) {
      await mapBounded(keys, concurrency, async (key) => {
        const value = await this.get(key);
        if (value) await each(key, value);
      });
      return;
    }
    if (entries === 0) return;
    this.reads.scans++;
    const wanted = new Set(keys);
    const subjectPrefix = `$KV.${this.bucket}.`;
    // What `each` throws is the caller's own failure, thrown as it is; only the read's are the bucket's.
    let refused: { error: unknown } | undefined;
    try {
      // The latest message of every key (history is 1 anyway), read once with an ordered consumer.
      const consumer = await this.js.consumers.get(`KV_${this.bucket}`, {
        // A single string: 2.9 servers accept one filter subject, not a list.
        filter_subjects: `${subjectPrefix}>`,
        deliver_policy: DeliverPolicy.LastPerSubject,
      });
      const messages = await consumer.consume({ max_messages: 1000 });
      try {
        for await (const m of messages) {
          // A deleted or purged key's last message is its marker, with an operation header.
          const key = m.subject.slice(subjectPrefix.length);
          if (!m.headers?.get("KV-Operation") && wanted.has(key)) {
            try {
              // Copied into bytes of their own: a message's data is a view of the socket's chunk, which
              // holds its neighbours too. Not with `slice()`: the data is a Buffer, whose slice is
              // another view; a copy that owns its buffer is also what decodeVector reads in place.
              const handed = each(key, new Uint8Array(m.data));
              if (handed) await handed;
            } catch (error) {
              refused = { error };
              break;
            }
          }
          if (m.info.pending === 0) break;
        }
      } finally {
        messages.stop();
      }
    } catch (err) {
      throw unavailable(`embedding cache ${this.bucket}: scan failed: ${(err as Error).message}`, { bucket: this.bucket });
    }
    if (refused) throw refused.error;
  }

  async put(key: string, value: Uint8Array): Promise<void> {
    try {
      await this.kv.put(key, value);
    } catch (err) {
      throw unavailable(`embedding cache ${this.bucket}: put failed: ${(err as Error).message}`, { bucket: this.bucket });
    }
  }
}

export interface EmbeddingCacheStats {
  /** Distinct non-blank texts found in the LRU or the KV bucket. */
  hits: number;
  /** Distinct non-blank texts found in neither, each sent to the embedder once. */
  misses: number;
  /** Texts the wrapped embedder was asked to embed (misses, and all-blank calls it sized). */
  embedded: number;
  /** Calls made to the wrapped embedder: zero on a rebuild with a warm cache. */
  embedderCalls: number;
  /** Of the hits, those answered by the in-process LRU without a KV read. */
  lruHits: number;
}

export interface CachedEmbedderOptions {
  /** KV reads and writes in flight at once per embed call. */
  concurrency?: number;
  /** Bytes of vectors held in the in-process LRU in front of the bucket. */
  lruMaxBytes?: number;
}

export const CACHE_DEFAULTS = { concurrency: 32, lruMaxBytes: 64 * 1024 * 1024 } as const;

/**
 * Wraps any Embedder with the two-level cache: an in-process LRU in front of the KV bucket. One embed call
 * reads every distinct text (bounded parallel), sends only the misses to the wrapped embedder in a single
 * call (it does its own batching), stores them, and answers in input order. Identical texts within a call
 * are embedded once. Blank texts get zero vectors here (the Embedder contract), are never stored, and
 * never call the wrapped embedder unless nothing else in the call tells their width.
 *
 * Cache failures are not hidden: a KV read or write that fails rejects the call as `unavailable`. Silently
 * skipping the cache would turn the next rebuild into a full, slow re-embedding. Fresh vectors enter the
 * LRU before the KV write, so a retry after a failed write does not embed again.
 */
export class CachedEmbedder implements Embedder {
  private readonly lru: LRUCache<string, Float32Array>;
  private readonly concurrency: number;
  private readonly counters: EmbeddingCacheStats = { hits: 0, misses: 0, embedded: 0, embedderCalls: 0, lruHits: 0 };

  constructor(
    readonly inner: Embedder,
    private readonly store: VectorStore,
    options: CachedEmbedderOptions = {},
  ) {
    this.concurrency = options.concurrency ?? CACHE_DEFAULTS.concurrency;
    this.lru = new LRUCache<string, Float32Array>({
      maxSize: options.lruMaxBytes ?? CACHE_DEFAULTS.lruMaxBytes,
      // 64-character hex key, plus the vector's bytes.
      sizeCalculation: (vector) => vector.byteLength + 64,
    });
  }

  /** The wrapped model's id: cached vectors are only valid for the model that made them. */
  get modelId(): string {
    return this.inner.modelId;
  }

  get dimensions(): number {
    return this.inner.dimensions;
  }

  stats(): EmbeddingCacheStats {
    return { ...this.counters };
  }

  async embed(texts: readonly string[]): Promise<Float32Array[]> {
    const out: Float32Array[] = new Array(texts.length);
    await this.embedEach(texts, (index, vector) => void (out[index] = vector));
    return out;
  }

  /**
   * `embed` without holding every vector at once: `each(index, vector)` is called once per position of
   * `texts`, in no particular order (as the LRU, the bucket and then the model answer), and may be async.
   * A rebuild writes 80k vectors at 1M events this way as they are read, in one scan of the bucket.
   *
   * A vector the LRU holds, or one already handed out for an earlier copy of its text, is handed out as a
   * copy, so that a caller scaling or zeroing its vector cannot change what the cache or another position
   * answers; the rest (read for this call only) are handed out as they are.
   */
  async embedEach(texts: readonly string[], each: (index: number, vector: Float32Array) => void | Promise<void>): Promise<void> {
    const modelId = this.inner.modelId;
    // Each distinct non-blank text once, by its cache key, with the positions it holds (first-seen order).
    const positionsOf = new Map<string, number[]>();
    const textOf = new Map<string, string>();
    const keyOfText = new Map<string, string>();
    const blanks: number[] = [];
    texts.forEach((text, index) => {
      if (isBlankText(text)) return void blanks.push(index);
      let key = keyOfText.get(text);
      if (key === undefined) {
        keyOfText.set(text, (key = embeddingCacheKey(modelId, text)));
        textOf.set(key, text);
        positionsOf.set(key, []);
      }
      positionsOf.get(key)!.push(index);
    });
    let width = 0;
    // Waits only for what `each` returns to wait for: a rebuild hands 80k vectors over here, and with a
    // promise per vector at every step, writing 81k cached vectors through a VectorChannel took 4.38 s
    // against 4.15 s without (three runs each, alternated).
    const handOut = (key: string, vector: Float32Array, shared: boolean): void | Promise<void> => {
      width ||= vector.length;
      const positions = positionsOf.get(key)!;
      if (positions.length === 1) return each(positions[0]!, shared ? vector.slice() : vector);
      return (async () => {
        for (let i = 0; i < positions.length; i++) await each(positions[i]!, shared || i > 0 ? vector.slice() : vector);
      })();
    };

    // The LRU, then the store, then the model, each for what the one before did not have.
    const absent = new Set<string>();
    for (const key of positionsOf.keys()) {
      const inMemory = this.lru.get(key);
      if (!inMemory) {
        absent.add(key);
        continue;
      }
      this.counters.lruHits++;
      this.counters.hits++;
      await handOut(key, inMemory, true);
    }
    if (absent.size > 0) {
      // A read larger than the LRU would only churn it (each entry evicting an earlier one of the same
      // read): such a read (a rebuild's) leaves the LRU as it was. Sized from the first vector read: a
      // remote model's width may not be known before its first answer.
      let remember: boolean | undefined;
      const reading = absent.size;
      const found = (key: string, bytes: Uint8Array | undefined): void | Promise<void> => {
        // Unreadable bytes count as a miss: the text is embedded again and the entry overwritten.
        const vector = bytes && decodeVector(bytes);
        if (!vector || !absent.delete(key)) return;
        this.counters.hits++;
        remember ??= reading * (vector.byteLength + 64) <= this.lru.maxSize;
        if (remember) this.lru.set(key, vector);
        return handOut(key, vector, remember);
      };
      const keys = [...absent];
      if (this.store.getEach) await this.store.getEach(keys, this.concurrency, found);
      else await mapBounded(keys, this.concurrency, async (key) => found(key, await this.store.get(key)));
    }
    if (absent.size > 0) {
      const missing = [...absent].map((key) => textOf.get(key)!);
      this.counters.misses += missing.length;
      const fresh = await this.callInner(missing);
      missing.forEach((text, i) => this.lru.set(keyOfText.get(text)!, fresh[i]!));
      await mapBounded(missing, this.concurrency, (text, i) => this.store.put(keyOfText.get(text)!, encodeVector(fresh[i]!)));
      for (let i = 0; i < missing.length; i++) await handOut(keyOfText.get(missing[i]!)!, fresh[i]!, true);
    }
    if (blanks.length > 0) {
      width ||= await this.widthForBlanks();
      for (const index of blanks) await each(index, new Float32Array(width));
    }
  }

  private async callInner(texts: string[]): Promise<Float32Array[]> {
    this.counters.embedderCalls++;
    this.counters.embedded += texts.length;
    return this.inner.embed(texts);
  }

  /** Zero vectors for blank texts need a width, when no vector of the call gave it: the wrapped embedder says. */
  private async widthForBlanks(): Promise<number> {
    try {
      return this.inner.dimensions;
    } catch (err) {
      // An OpenAI-compatible embedder that has not seen a response yet: it sizes the zero vector itself.
      if (!isMemledgerError(err)) throw err;
      const [zero] = await this.callInner([""]);
      return zero!.length;
    }
  }
}

/** The usual wiring: the prefix's KV bucket behind the LRU, in front of the configured model. */
export async function cachedEmbedder(
  nc: NatsConnection,
  prefix: string,
  inner: Embedder,
  options: CachedEmbedderOptions = {},
): Promise<CachedEmbedder> {
  return new CachedEmbedder(inner, await KvVectorStore.open(nc, prefix), options);
}
