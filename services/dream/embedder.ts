import type { NatsConnection } from "@nats-io/transport-node";
import type { Embedder } from "../../projections/embedder.js";
import { cachedEmbedder } from "../embeddings/cache.js";
import { embedderFromConfig } from "../embeddings/config.js";
import { readModelConfig } from "../read-models.js";

/**
 * The embedder a run's merge phase scores similarity with: the model the search projection's vector
 * channel is configured with, behind the prefix's embedding cache, so the vectors `up` already computed
 * for every memory are reused (same model id, same content hash) rather than embedded again. Undefined
 * when vectors are off (MEMLEDGER_VECTORS=off): merge then scores BM25 alone, as the search does.
 */
export async function dreamEmbedder(nc: NatsConnection, prefix: string, env: NodeJS.ProcessEnv): Promise<Embedder | undefined> {
  const config = readModelConfig(env);
  if (!config.vectors) return undefined;
  return cachedEmbedder(nc, prefix, embedderFromConfig(config.embedder));
}
