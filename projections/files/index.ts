import path from "node:path";
import { invalid } from "../../schemas/errors.js";
import { stat } from "node:fs/promises";
import type { OpenOptions, ProjectionDefinition, ProjectionScope, ProjectionTarget } from "../projection.js";
import { portableDefinition } from "../portable.js";
import { isUnusableState, needsOperator, setAside } from "../unusable.js";
import { listFiles, readTextIfExists, writeFileAtomic } from "./fs.js";
import { AppLayout, isIndexFile, scratchpadIndexPath } from "./layout.js";
import { CHECKPOINT_FILE, INDEX_FILE } from "./paths.js";
import { FilesTarget, type FilesTargetOptions } from "./target.js";

/**
 * The file store projection: one markdown file per memory plus a capped MEMORY.md per app, laid out
 *
 *   <root>/<app>/MEMORY.md
 *   <root>/<app>/<scope…>/<memoryId>.md        scope folders: app, org, agent/<id>, team/<name>
 *
 * where `<root>/<app>` is a link to the current generation under `<root>.gen/<app>/` (see layout.ts).
 * The durable, human-readable layer: agents and people read it, git can track it, rebuilds reproduce it
 * byte for byte.
 */

export const DEFAULT_FILES_ROOT = ".memledger/files";

export interface FilesProjectionOptions extends FilesTargetOptions {
  /** The directory readers open; `--files DIR` / `MEMLEDGER_FILES` on the CLI. */
  root: string;
}

export function filesProjection(options: FilesProjectionOptions): ProjectionDefinition {
  const { root, ...targetOptions } = options;
  const layoutOf = (scope: ProjectionScope) => new AppLayout(root, scope.app);

  /** The live target: the current generation, or (none, gone, unusable) a new one replayed from 0. */
  const openLiveTarget = async (scope: ProjectionScope, open: OpenOptions): Promise<ProjectionTarget> => {
    const layout = layoutOf(scope);
    const report = open.onProgress ?? (() => undefined);
    // First start: generation 1 (or the next free number if a rebuild left directories behind),
    // given an empty checkpoint before readers can see it.
    const startAfresh = async (): Promise<string> => {
      const generation = await layout.allocate();
      await writeFileAtomic(
        path.join(layout.generationDir(generation), CHECKPOINT_FILE),
        `${JSON.stringify({ seq: 0, generation })}\n`,
      );
      await layout.switchTo(generation);
      return generation;
    };
    let generation = await layout.current();
    if (generation !== null && !(await isDirectory(layout.generationDir(generation)))) {
      report({ phase: "set-aside", message: `${layout.appDir} links to generation ${generation}, which is gone; rebuilding from the log` });
      generation = null;
    }
    if (generation === null) return FilesTarget.open(layout, await startAfresh(), targetOptions);
    report({ phase: "loading", message: `loading state of generation ${generation}` });
    try {
      return await FilesTarget.open(layout, generation, targetOptions);
    } catch (error) {
      if (!isUnusableState(error)) throw error;
      // The log is the truth: the whole generation is renamed for the operator and rebuilt from the log
      // (readers see the new generation fill up, as on a first start).
      const aside = await setAside(layout.generationDir(generation));
      report({ phase: "set-aside", message: `${error.message}; generation set aside as ${aside}; rebuilding from the log` });
      return FilesTarget.open(layout, await startAfresh(), targetOptions);
    }
  };

  return {
    name: "files",
    consumes: ["memory"],
    portable: portableDefinition(import.meta.url, "filesProjection", options),
    // Live, each commit rewrites MEMORY.md and the checkpoint: a new instance on a 100k-event log took
    // 47 s to catch up that way, against about a second for a rebuild.
    catchUpByRebuild: true,

    async openLive(scope, open: OpenOptions = {}) {
      return openLiveTarget(scope, open).catch((error: unknown) => {
        throw needsOperator(error, `file store cannot use ${layoutOf(scope).appDir}`, "fix the directory's permissions or free space, then start again");
      });
    },

    async openFresh(scope) {
      const layout = layoutOf(scope);
      // One rebuild per app at a time: directories of earlier rebuilds that never got promoted are junk.
      const current = await layout.current();
      for (const abandoned of await layout.generations()) {
        if (abandoned !== current) await layout.remove(abandoned);
      }
      return FilesTarget.open(layout, await layout.allocate(), { ...targetOptions, fresh: true });
    },

    async promote(scope, fresh: ProjectionTarget) {
      const layout = layoutOf(scope);
      if (!(fresh instanceof FilesTarget) || fresh.layout.generationsDir !== layout.generationsDir) {
        throw invalid(`promote needs a files target opened by openFresh for app ${scope.app}`);
      }
      if (fresh.hasUncommitted) throw invalid("commit the fresh target before promoting it");
      const previous = await layout.current();
      await layout.switchTo(fresh.generation);
      if (previous !== null && previous !== fresh.generation) await layout.remove(previous);
    },
  };
}

const isDirectory = (dir: string): Promise<boolean> =>
  stat(dir).then(
    (stats) => stats.isDirectory(),
    () => false,
  );

// ---- readers -----------------------------------------------------------------------------------

/** The app's MEMORY.md as readers see it now, or null when the app has no index yet. */
export async function readMemoryIndex(root: string, app: string): Promise<string | null> {
  return readTextIfExists(path.join(new AppLayout(root, app).appDir, INDEX_FILE));
}

/** Agent `agentId`'s scratchpad index (`agents/<id>/MEMORY.md`) as readers see it now, or null when it has none. */
export async function readScratchpadIndex(root: string, app: string, agentId: string): Promise<string | null> {
  return readTextIfExists(path.join(new AppLayout(root, app).appDir, scratchpadIndexPath(agentId)));
}

/** The app's memory files, relative to `<root>/<app>` with '/' separators, sorted; MEMORY.md excluded. */
export async function listMemoryFiles(root: string, app: string): Promise<string[]> {
  try {
    const files = await listFiles(new AppLayout(root, app).appDir);
    return files.filter((file) => !isIndexFile(file) && file.endsWith(".md"));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}

export { treeHash, listFiles } from "./fs.js";
export type { WalkOptions } from "./fs.js";
export { FilesTarget } from "./target.js";
export { AppLayout, isIndexFile, scratchpadIndexPath } from "./layout.js";
export { safeSegment, scopeSegments, memoryFilePath } from "./paths.js";
export { renderMemoryFile, renderMemoryIndex, renderScratchpadIndex, compareIndexEntries, INDEX_LIMITS, KIND_RANK } from "./render.js";
export { applyEvent, emptyRecord, indexEntryOf, shownVersion } from "./model.js";
export type { MemoryRecord, IndexEntry, Provenance, VersionProvenance } from "./model.js";
