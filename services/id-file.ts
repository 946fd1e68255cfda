import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";

/**
 * An id kept in a file, made on first use: created exclusively (`wx`), so two processes racing on one
 * directory (two starts, instances on a shared disk) agree on the first one written. Returns what the
 * file holds; `created` says whether this call wrote it. The caller judges what an existing file holds.
 */
export async function idInFile(file: string, fresh: string): Promise<{ id: string; created: boolean }> {
  await mkdir(path.dirname(file), { recursive: true });
  try {
    await writeFile(file, `${fresh}\n`, { flag: "wx" });
    return { id: fresh, created: true };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  return { id: (await readFile(file, "utf8")).trim(), created: false };
}
