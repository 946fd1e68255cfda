import { createHash } from "node:crypto";
import { open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import path from "node:path";

/**
 * File-system edges of the file projection: atomic writes and deterministic tree walks.
 */

/**
 * Writes through a temporary file in the same directory, then renames it over the target: readers see
 * the old content or the new, never a torn file. The temporary name is fixed (hidden, `.tmp`): one writer
 * owns a generation directory, so names cannot clash, and a crash leaves at most one leftover per file,
 * which the next write replaces and `removeLeftoverTemps` sweeps at open. With `sync`, the data is
 * fsynced before the rename (survives an OS crash, not only a process exit), at a large cost in speed.
 */
export async function writeFileAtomic(file: string, content: string, sync = false): Promise<void> {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
  const handle = await open(temp, "w");
  try {
    await handle.writeFile(content, "utf8");
    if (sync) await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temp, file);
}

export const isNotFound = (err: unknown): boolean => (err as NodeJS.ErrnoException)?.code === "ENOENT";

export async function readTextIfExists(file: string): Promise<string | null> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

/** Deletes temporary files a crash left behind under `dir`. */
export async function removeLeftoverTemps(dir: string): Promise<void> {
  const names = await readdir(dir, { recursive: true });
  await Promise.all(
    names
      .filter((name) => path.basename(name).startsWith(".") && name.endsWith(".tmp"))
      .map((name) => rm(path.join(dir, name), { force: true })),
  );
}

export interface WalkOptions {
  /** Include names starting with '.' (the projection's state and checkpoint). Default: false. */
  includeHidden?: boolean;
}

/**
 * Every regular file under `dir`, as '/'-separated relative paths sorted by code unit. Symbolic links are
 * followed (the app directories are links to generations); hidden entries are skipped unless asked for.
 */
export async function listFiles(dir: string, options: WalkOptions = {}): Promise<string[]> {
  const out: string[] = [];
  const walk = async (absolute: string, relative: string): Promise<void> => {
    const entries = await readdir(absolute, { withFileTypes: true });
    for (const entry of entries) {
      if (!options.includeHidden && entry.name.startsWith(".")) continue;
      const childAbsolute = path.join(absolute, entry.name);
      const childRelative = relative ? `${relative}/${entry.name}` : entry.name;
      const isDirectory = entry.isSymbolicLink() ? (await stat(childAbsolute)).isDirectory() : entry.isDirectory();
      if (isDirectory) await walk(childAbsolute, childRelative);
      else out.push(childRelative);
    }
  };
  await walk(dir, "");
  return out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * sha256 over the sorted relative paths and contents of every file under `root`, following symbolic
 * links. Each path and content is length-prefixed, so no two different trees hash alike by concatenation.
 * Equal hashes mean byte-identical trees: what a rebuild must reproduce.
 */
export async function treeHash(root: string, options: WalkOptions = {}): Promise<string> {
  const hash = createHash("sha256");
  for (const relative of await listFiles(root, options)) {
    const content = await readFile(path.join(root, relative));
    const name = Buffer.from(relative, "utf8");
    hash.update(`${name.length}:`).update(name).update(`${content.length}:`).update(content);
  }
  return hash.digest("hex");
}
