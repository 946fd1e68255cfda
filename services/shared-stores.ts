import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { idInFile } from "./id-file.js";
import { Redis } from "ioredis";
import { claimKeys } from "../projections/claims/keys.js";
import { AppLayout } from "../projections/files/layout.js";
import { CHECKPOINT_FILE } from "../projections/files/paths.js";
import { readTextIfExists } from "../projections/files/fs.js";
import type { ProjectionDefinition, ProjectionScope } from "../projections/projection.js";
import type { SharedStore } from "./projection-supervisor.js";
import type { ReadModelConfig } from "./read-models.js";
import { monitorRedis } from "../projections/claims/redis-health.js";

/**
 * Which read models live in a store other instances may write too, and how a follower reads how far
 * that store got.
 *
 * - claims: Redis. Every instance of a prefix must use the same Redis (the command service answers
 *   `claims` and `tasks` from it), so the store is one: id "redis", one lease per stream.
 * - files: the file store is usually an instance's own directory, but may be a network disk several
 *   instances mount. Its id is kept in the store itself (`<root>.gen/.store-id`, made on first use), so
 *   instances on one shared directory compete for one lease, and instances with their own directories
 *   each lead their own store.
 * - search: always the instance's own (in memory, snapshots in its data directory): not shared.
 */
export interface SharedStores {
  of(definition: ProjectionDefinition, scope: ProjectionScope): Promise<SharedStore | null>;
  close(): Promise<void>;
}

export const STORE_ID_FILE = ".store-id";

/** The id a file store carries (made exclusively on first use: instances racing on a shared disk agree). */
export async function fileStoreId(root: string): Promise<string> {
  const file = path.join(`${path.resolve(root)}.gen`, STORE_ID_FILE);
  const candidate = `files-${randomBytes(6).toString("hex")}`;
  const { id } = await idInFile(file, candidate);
  // Written before it is read, but a crash between create and write leaves it empty: make it again.
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
    await writeFile(file, `${candidate}\n`);
    return candidate;
  }
  return id;
}

/** The claims projection's key prefix, as services/read-models.ts gives it to the projection and readers. */
const claimsKeyPrefix = (prefix: string) => `${prefix}:claims`;

export function sharedStores(prefix: string, config: Pick<ReadModelConfig, "redisUrl" | "filesRoot">): SharedStores {
  let redis: Redis | undefined;
  const redisOf = () => (redis ??= monitorRedis(new Redis(config.redisUrl, { maxRetriesPerRequest: 3 })));
  let filesId: Promise<string> | undefined;

  const claims: SharedStore = {
    id: "redis",
    async checkpoint(scope) {
      const keys = claimKeys(claimsKeyPrefix(prefix), scope.app);
      const generation = await redisOf().get(keys.pointer);
      if (generation === null) return 0;
      return Number((await redisOf().get(keys.generation(generation).checkpoint)) ?? 0);
    },
  };

  const files = async (): Promise<SharedStore> => ({
    id: await (filesId ??= fileStoreId(config.filesRoot)),
    async checkpoint(scope) {
      const text = await readTextIfExists(path.join(new AppLayout(config.filesRoot, scope.app).appDir, CHECKPOINT_FILE));
      if (text === null) return 0;
      return Number((JSON.parse(text) as { seq?: unknown }).seq) || 0;
    },
  });

  return {
    async of(definition) {
      if (definition.name === "claims") return claims;
      if (definition.name === "files") return files();
      return null;
    },
    async close() {
      redis?.disconnect();
      redis = undefined;
    },
  };
}
