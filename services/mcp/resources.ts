import { readFile } from "node:fs/promises";
import path from "node:path";
import { AppLayout, listMemoryFiles, readMemoryIndex, safeSegment } from "../../projections/files/index.js";
import { invalid, notFound } from "../../schemas/errors.js";
import type { Actor } from "../../schemas/primitives.js";

/**
 * The files projection as MCP resources: the app's MEMORY.md and each memory's markdown file, read from
 * the files root the ledger projects into (`up --files`, MEMLEDGER_FILES, MEMLEDGER_DATA). Another agent's
 * scratchpad (`agent/<other>/…`) is neither listed nor read, as hydration leaves it out.
 *
 *   memledger://<app>/MEMORY.md
 *   memledger://<app>/memories/<scope path>/<memoryId>.md
 */
export interface ResourceSource {
  app: string;
  filesRoot: string;
  actor: Actor;
}

export interface ResourceEntry {
  uri: string;
  name: string;
  mimeType: string;
  description?: string;
}

const MARKDOWN = "text/markdown";

export const memoryIndexUri = (app: string): string => `memledger://${app}/MEMORY.md`;
const memoryFileUri = (app: string, file: string): string => `memledger://${app}/memories/${file}`;
export const MEMORY_FILE_TEMPLATE = "memledger://{app}/memories/{+path}";

/**
 * A file under `agent/<id>/` (its memories) or `agents/<id>/` (its scratchpad's MEMORY.md) belongs to that
 * agent: only the actor itself sees its own.
 */
function visibleTo(actor: Actor, file: string): boolean {
  const [first, second] = file.split("/");
  return (first !== "agent" && first !== "agents") || (actor.kind === "agent" && second === safeSegment(actor.id));
}

export async function listResources(source: ResourceSource): Promise<ResourceEntry[]> {
  const entries: ResourceEntry[] = [
    { uri: memoryIndexUri(source.app), name: "MEMORY.md", mimeType: MARKDOWN, description: `The index of app ${source.app}'s memories` },
  ];
  for (const file of await listMemoryFiles(source.filesRoot, source.app)) {
    if (!visibleTo(source.actor, file)) continue;
    entries.push({ uri: memoryFileUri(source.app, file), name: file, mimeType: MARKDOWN });
  }
  return entries;
}

export async function readResource(source: ResourceSource, uri: string): Promise<{ uri: string; mimeType: string; text: string }> {
  const match = /^memledger:\/\/([^/]+)\/(MEMORY\.md|memories\/(.+))$/.exec(uri);
  if (!match) throw invalid(`not a memledger resource: ${uri} (memledger://<app>/MEMORY.md or memledger://<app>/memories/<path>.md)`);
  const [, app, , file] = match as unknown as [string, string, string, string | undefined];
  if (app !== source.app) throw notFound(`this server serves app ${source.app}, not ${app}`);
  if (file === undefined) {
    const text = await readMemoryIndex(source.filesRoot, app);
    if (text === null) throw notFound(`app ${app} has no MEMORY.md under ${source.filesRoot} yet (is 'memledger up' projecting there?)`);
    return { uri, mimeType: MARKDOWN, text };
  }
  // Every segment must be one the projection writes (paths.ts: token characters, '.' never first): no '..', no absolute path.
  const segments = file.split("/");
  if (!file.endsWith(".md") || segments.some((s) => !/^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/.test(s))) {
    throw invalid(`bad memory file path: ${file}`);
  }
  if (!visibleTo(source.actor, file)) throw notFound(`no memory file ${file} in app ${app}`);
  const appDir = new AppLayout(source.filesRoot, app).appDir;
  const target = path.resolve(appDir, ...segments);
  if (!target.startsWith(appDir + path.sep)) throw invalid(`bad memory file path: ${file}`);
  try {
    return { uri, mimeType: MARKDOWN, text: await readFile(target, "utf8") };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw notFound(`no memory file ${file} in app ${app}`);
    throw err;
  }
}
