import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { naming } from "../../events/subjects.js";
import { vectorSetup, type VectorSetup } from "../../projections/search/index.js";
import type { VectorBackendConfig } from "../../projections/vectors/backend.js";
import { CachedEmbedder, KvVectorStore } from "../../services/embeddings/cache.js";
import type { Embedder } from "../../services/embeddings/embedder.js";
import { connectNats } from "../../services/nats.js";
import { NATS_URL, uniquePrefix } from "../support/env.js";
import { EventLog } from "./events.js";
import { wordHashVector } from "../support/word-hash.mjs";

/**
 * A small deterministic stand-in for the model (not for NATS or Redis): a bag of words hashed into
 * `dimensions` buckets, identifiers split into their parts (StripeWebhookHandler → stripe, webhook,
 * handler), so texts sharing words are close, as they would be for a sentence encoder, and an exact
 * identifier is no closer to its own note than to notes about the same words. Every call is counted.
 */
export class WordHashEmbedder implements Embedder {
  readonly calls: string[][] = [];
  constructor(
    readonly modelId = "word-hash@1",
    readonly dimensions = 64,
  ) {}

  async embed(texts: readonly string[]): Promise<Float32Array[]> {
    this.calls.push([...texts]);
    return texts.map((text) => this.vectorOf(text));
  }

  get embeddedTexts(): number {
    return this.calls.reduce((n, call) => n + call.length, 0);
  }

  private vectorOf(text: string): Float32Array {
    return wordHashVector(text, this.dimensions);
  }
}

/** A private embedding cache bucket on the real NATS server, removed by `cleanup`. */
export interface EmbeddingCacheFixture {
  nc: NatsConnection;
  prefix: string;
  /** A new CachedEmbedder (empty LRU, fresh counters) over the shared bucket: what a new process would have. */
  cached(inner: Embedder): Promise<CachedEmbedder>;
  setup(inner: Embedder, backend?: VectorBackendConfig): Promise<VectorSetup & { embedder: CachedEmbedder }>;
  cleanup(): Promise<void>;
}

export async function embeddingCacheFixture(label = "srch"): Promise<EmbeddingCacheFixture> {
  const prefix = uniquePrefix(label);
  const nc = await connectNats({ servers: NATS_URL, name: `test-${prefix}` });
  const cached = async (inner: Embedder) => new CachedEmbedder(inner, await KvVectorStore.open(nc, prefix));
  return {
    nc,
    prefix,
    cached,
    async setup(inner, backend = { kind: "orama" }) {
      const embedder = await cached(inner);
      return { ...vectorSetup({ embedder, prefix, backend }), embedder };
    },
    async cleanup() {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.delete(`KV_${naming(prefix).embeddingCacheBucket()}`).catch(() => undefined);
      await nc.close();
    },
  };
}

/** About 100 notes on the Stripe webhook handler, none naming the class, plus the one that does. */
export function identifierCorpus(app = "app1"): EventLog {
  const log = new EventLog(app);
  const topics = ["retries", "signature checks", "idempotency keys", "event ordering", "timeouts", "logging", "dead letters", "replays", "alerts", "tests"];
  for (let i = 0; i < 100; i++) {
    const topic = topics[i % topics.length]!;
    log.write(`similar${i}`, {
      title: `Stripe webhook handler: ${topic} (${i})`,
      body:
        `The Stripe webhook handler deals with ${topic}. Webhook events from Stripe reach the handler, ` +
        `which checks them and hands them to the payment workers; handler failures make Stripe retry the webhook (${i}).`,
      tags: ["payments", "webhooks"],
    });
  }
  log.write("target", {
    title: "StripeWebhookHandler race condition",
    body: "Two deliveries of one event can run concurrently in StripeWebhookHandler; take the per-event lock first.",
    tags: ["payments"],
  });
  return log;
}

