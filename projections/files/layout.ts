import { mkdir, readdir, readlink, rename, rm, symlink } from "node:fs/promises";
import path from "node:path";
import { conflict } from "../../schemas/errors.js";
import { isNotFound } from "./fs.js";
import { INDEX_FILE, resolveInside, safeSegment } from "./paths.js";

/**
 * Each agent's scratchpad has an index of its own, beside the app's shared MEMORY.md (which lists shared
 * scopes only):
 *
 *   <root>/<app>/MEMORY.md                    app, team and org memories
 *   <root>/<app>/agents/<id>/MEMORY.md        agent <id>'s scratchpad (its files: agent/<id>/…)
 *
 * `agents/` is no scope folder (those are app, org, agent, team and other), so an index never shares a
 * name with a memory file; each is capped like MEMORY.md.
 */
export const SCRATCHPAD_INDEX_DIR = "agents";

/** The scratchpad index of agent `agentId`, relative to the app directory. */
export const scratchpadIndexPath = (agentId: string): string => `${SCRATCHPAD_INDEX_DIR}/${safeSegment(agentId)}/${INDEX_FILE}`;

/** Is this path (relative to the app directory, '/' separators) an index rather than a memory file? */
export const isIndexFile = (relative: string): boolean =>
  relative === INDEX_FILE || (relative.startsWith(`${SCRATCHPAD_INDEX_DIR}/`) && relative.endsWith(`/${INDEX_FILE}`));

/** The agent a scope is the scratchpad of, or null for a shared scope. */
export const scratchpadOwner = (scope: string): string | null => (scope.startsWith("agent:") ? scope.slice("agent:".length) : null);

/**
 * Where one app's generations live and which one readers see.
 *
 *   <root>/<app>                  symbolic link, relative: ../<root name>.gen/<app>/<generation>
 *   <root>.gen/<app>/<generation> one complete tree per generation (1, 2, 3, …)
 *
 * Each app (and the org stream) has its own link, so rebuilding one app never disturbs another that
 * shares the root. Readers open `<root>/<app>/…` and never see a generation being built: it only becomes
 * visible when `switchTo` renames a new link over the old one, which is atomic on POSIX file systems.
 */
export class AppLayout {
  readonly root: string;
  readonly app: string;
  /** What readers open: the link to the current generation. */
  readonly appDir: string;
  readonly generationsDir: string;

  constructor(root: string, app: string) {
    this.root = path.resolve(root);
    this.app = safeSegment(app);
    this.appDir = resolveInside(this.root, this.app);
    this.generationsDir = resolveInside(`${this.root}.gen`, this.app);
  }

  generationDir(generation: string): string {
    return resolveInside(this.generationsDir, safeSegment(generation));
  }

  /** The generation readers see, or null when the app has none yet. */
  async current(): Promise<string | null> {
    let target: string;
    try {
      target = await readlink(this.appDir);
    } catch (err) {
      if (isNotFound(err)) return null;
      if ((err as NodeJS.ErrnoException).code === "EINVAL") {
        throw conflict(`${this.appDir} is not a link to a generation: move it away before projecting into ${this.root}`, { file: this.appDir });
      }
      throw err;
    }
    const generation = path.basename(target);
    if (path.resolve(this.root, target) !== this.generationDir(generation)) {
      throw conflict(`${this.appDir} points at ${target}, outside ${this.generationsDir}: remove the link to rebuild it from the log`, { file: this.appDir });
    }
    return generation;
  }

  /** Generations on disk, whatever readers see. */
  async generations(): Promise<string[]> {
    try {
      return (await readdir(this.generationsDir)).filter((name) => /^[1-9][0-9]*$/.test(name));
    } catch (err) {
      if (isNotFound(err)) return [];
      throw err;
    }
  }

  /**
   * Creates the directory of a new generation, numbered after every existing one. The exclusive mkdir is
   * the reservation: two callers can never get the same generation.
   */
  async allocate(): Promise<string> {
    await mkdir(this.generationsDir, { recursive: true });
    const numbers = (await this.generations()).map(Number);
    const current = Number((await this.current()) ?? 0);
    for (let next = Math.max(current, ...numbers, 0) + 1; ; next++) {
      try {
        await mkdir(this.generationDir(String(next)));
        return String(next);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
    }
  }

  /** Makes `generation` the one readers see: a new link under a hidden name, renamed over the old one. */
  async switchTo(generation: string): Promise<void> {
    await mkdir(this.root, { recursive: true });
    const temp = resolveInside(this.root, `.${this.app}.link.tmp`);
    await rm(temp, { force: true });
    await symlink(path.relative(this.root, this.generationDir(generation)), temp);
    await rename(temp, this.appDir);
  }

  async remove(generation: string): Promise<void> {
    await rm(this.generationDir(generation), { recursive: true, force: true });
  }
}
