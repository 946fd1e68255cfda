import path from "node:path";
import { Redis } from "ioredis";
import { claimsProjection, claimsReader, type ClaimsReader } from "../projections/claims/index.js";
import { DEFAULT_FILES_ROOT, filesProjection } from "../projections/files/index.js";
import type { ProjectionDefinition } from "../projections/projection.js";
import { searchProjection, type SearchProjection } from "../projections/search/index.js";
import { invalid } from "../schemas/errors.js";

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
}

const nonEmpty = (s: string | undefined): string | undefined => (s === undefined || s.trim() === "" ? undefined : s);

export function readModelConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<ReadModelConfig> = {}): ReadModelConfig {
  const dataDir = nonEmpty(env.MEMLEDGER_DATA) ?? DEFAULT_DATA_DIR;
  return {
    filesRoot: overrides.filesRoot ?? nonEmpty(env.MEMLEDGER_FILES) ?? (nonEmpty(env.MEMLEDGER_DATA) ? path.join(dataDir, "files") : DEFAULT_FILES_ROOT),
    searchDir: overrides.searchDir ?? path.join(dataDir, "search"),
    redisUrl: overrides.redisUrl ?? nonEmpty(env.REDIS_URL) ?? DEFAULT_REDIS_URL,
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

/** Opens the read models' shared resources (one Redis connection for readers; targets open their own). */
export function openReadModels(prefix: string, config: ReadModelConfig = readModelConfig()): ReadModels {
  const redis = new Redis(config.redisUrl, { maxRetriesPerRequest: 3, lazyConnect: true });
  const keyPrefix = `${prefix}:claims`;
  const search = searchProjection({ dir: config.searchDir });
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
