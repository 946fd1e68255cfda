import path from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { Redis } from "ioredis";
import { claimsProjection, claimsReader, type ClaimsReader } from "../projections/claims/index.js";
import { monitorRedis } from "../projections/claims/redis-health.js";
import { DEFAULT_FILES_ROOT, filesProjection } from "../projections/files/index.js";
import type { ProjectionDefinition } from "../projections/projection.js";
import type { SearchProjection, VectorSetup } from "../projections/search/index.js";
import { vectorBackendFromEnv, type VectorBackendConfig } from "../projections/vectors/backend.js";
import { invalid } from "../schemas/errors.js";
import { embedderConfigFromEnv, type EmbedderConfig } from "./embeddings/config.js";
import type { Embedder } from "./embeddings/embedder.js";
import type { ConnectOptions } from "./nats.js";
import { openVectorSetup, searchFromDescription } from "./search-definition.js";

export const DEFAULT_REDIS_URL = "redis://127.0.0.1:6379";
export const DEFAULT_DATA_DIR = ".memledger";

/** Where the read models live. One source for `up`, `rebuild`, `search` and the tests. */
export interface ReadModelConfig {
  /** Markdown file store root (`--files`, MEMLEDGER_FILES). */
  filesRoot: string;
  /** Search index snapshots (under MEMLEDGER_DATA). */
  searchDir: string;
  /** Redis for live claims (REDIS_URL). */
  redisUrl: string;
  /** Where the search projection keeps vectors (MEMLEDGER_VECTORS, QDRANT_URL); null: BM25 only. */
  vectors: VectorBackendConfig | null;
  /** The model that embeds memories and queries (MEMLEDGER_EMBEDDER, MEMLEDGER_EMBED_*). */
  embedder: EmbedderConfig;
}

const nonEmpty = (s: string | undefined): string | undefined => (s === undefined || s.trim() === "" ? undefined : s);

export function readModelConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<ReadModelConfig> = {}): ReadModelConfig {
  const dataDir = nonEmpty(env.MEMLEDGER_DATA) ?? DEFAULT_DATA_DIR;
  return {
    filesRoot: overrides.filesRoot ?? nonEmpty(env.MEMLEDGER_FILES) ?? (nonEmpty(env.MEMLEDGER_DATA) ? path.join(dataDir, "files") : DEFAULT_FILES_ROOT),
    searchDir: overrides.searchDir ?? path.join(dataDir, "search"),
    redisUrl: overrides.redisUrl ?? nonEmpty(env.REDIS_URL) ?? DEFAULT_REDIS_URL,
    vectors: overrides.vectors !== undefined ? overrides.vectors : vectorBackendFromEnv(env),
    embedder: overrides.embedder ?? embedderConfigFromEnv(env),
  };
}

/** Every projection memledger runs, by name. */
export const PROJECTION_NAMES = ["files", "claims", "search"] as const;
export type ProjectionName = (typeof PROJECTION_NAMES)[number];

export interface ReadModels {
  readonly config: ReadModelConfig;
  readonly definitions: readonly ProjectionDefinition[];
  /** The claims read side for the command service's `claims` and `tasks` queries. */
  readonly claims: ClaimsReader;
  /** The search projection, whose live indexes answer queries in this process. */
  readonly search: SearchProjection;
  /** The projections named, or all for "all"; an unknown name is `invalid`. */
  select(name: string): ProjectionDefinition[];
  close(): Promise<void>;
}

export interface ReadModelResources {
  /**
   * The connection whose KV bucket caches embeddings (`<prefix>_embeddings`). Without it the search
   * projection runs BM25 only: embedding without the cache would re-embed every memory on each rebuild.
   */
  nc?: NatsConnection;
  /** The model, instead of the one `config.embedder` describes (tests pass a small deterministic one). */
  embedder?: Embedder;
  /**
   * How `nc` was opened. With it (and no `embedder` object), a rebuild can run the search projection
   * on a worker thread with a connection of its own (services/search-definition.ts).
   */
  connection?: ConnectOptions;
}

/**
 * The search projection's vector setup: the configured model behind the prefix's embedding cache, and
 * the configured backend. Opened on first use (the KV bucket is created then).
 */
export async function searchVectorSetup(
  nc: NatsConnection,
  prefix: string,
  config: Pick<ReadModelConfig, "vectors" | "embedder">,
  embedder?: Embedder,
  backend: VectorBackendConfig | null = config.vectors,
): Promise<VectorSetup> {
  if (!backend) throw invalid("vectors are off (MEMLEDGER_VECTORS=off): only BM25 search is available");
  return openVectorSetup({ prefix, backend, embedder: config.embedder }, { nc, embedder });
}

/** Opens the read models' shared resources (one Redis connection for readers; targets open their own). */
export function openReadModels(prefix: string, config: ReadModelConfig = readModelConfig(), resources: ReadModelResources = {}): ReadModels {
  const redis = monitorRedis(new Redis(config.redisUrl, { maxRetriesPerRequest: 3, lazyConnect: true }));
  const keyPrefix = `${prefix}:claims`;
  const { nc } = resources;
  const search = searchFromDescription(
    {
      dir: config.searchDir,
      ...(nc && config.vectors ? { vectors: { prefix, backend: config.vectors, embedder: config.embedder, ...(resources.connection ? { nats: resources.connection } : {}) } } : {}),
    },
    { nc, embedder: resources.embedder },
  );
  const definitions: ProjectionDefinition[] = [
    filesProjection({ root: config.filesRoot }),
    claimsProjection({ redis: config.redisUrl, keyPrefix }),
    search,
  ];
  return {
    config,
    definitions,
    claims: claimsReader({ redis, keyPrefix }),
    search,
    select(name) {
      if (name === "all") return [...definitions];
      const found = definitions.filter((d) => d.name === name);
      if (found.length === 0) {
        throw invalid(`unknown projection '${name}'; known: ${definitions.map((d) => d.name).join(", ")}, all`);
      }
      return found;
    },
    async close() {
      redis.disconnect();
    },
  };
}
