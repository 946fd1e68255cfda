import { open } from "node:fs/promises";

/**
 * Syncs a directory, so that a rename into it survives a crash: a file's own fsync makes its bytes
 * durable, not the directory entry that names it.
 */
export async function syncDirectory(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
