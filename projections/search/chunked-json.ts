import { internal } from "../../schemas/errors.js";
/**
 * JSON for values too big for one string.
 *
 * V8 strings top out near 512 MiB, and NOTES records Orama's own persistence failing at 100k documents
 * ("string longer than the maximum", "invalid string length"). Here a value is written as lines, each
 * small: a container too large for one line is announced by its path and written entry by entry, so no
 * string ever holds more than one small piece, and reading never parses more than one line at a time.
 *
 * Line forms (each a JSON array on its own line):
 *   [path, "v", value]   set the value at path
 *   [path, "o"]          create an empty object at path
 *   [path, "a"]          create an empty array at path
 * A path is the list of keys (strings for objects, numbers for arrays) from the root.
 */
export type JsonPath = (string | number)[];
export type ChunkLine = [JsonPath, "v", unknown] | [JsonPath, "o"] | [JsonPath, "a"];

/** How many leaves a value may hold and still be written on one line. */
const LEAVES_PER_LINE = 20_000;

/** Counts leaves, stopping once the budget is spent: bounded work however big the value is. */
function leavesWithin(value: unknown, budget: number): number {
  let leaves = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0 && leaves <= budget) {
    const next = stack.pop();
    if (next !== null && typeof next === "object") {
      const entries = Array.isArray(next) ? next : Object.values(next);
      if (entries.length === 0) leaves += 1;
      for (const entry of entries) stack.push(entry);
    } else {
      leaves += 1;
    }
  }
  return leaves;
}

/** The lines of `value`, lazily: the caller writes each before the next is built. */
export function* chunkLines(value: unknown, path: JsonPath = []): Generator<string> {
  const splittable = value !== null && typeof value === "object" && !ArrayBuffer.isView(value);
  if (!splittable || leavesWithin(value, LEAVES_PER_LINE) <= LEAVES_PER_LINE) {
    yield JSON.stringify([path, "v", value]);
    return;
  }
  if (Array.isArray(value)) {
    yield JSON.stringify([path, "a"]);
    for (let i = 0; i < value.length; i++) yield* chunkLines(value[i], [...path, i]);
  } else {
    yield JSON.stringify([path, "o"]);
    for (const [key, entry] of Object.entries(value as Record<string, unknown>)) {
      // JSON.stringify drops undefined properties; keep the same meaning.
      if (entry !== undefined) yield* chunkLines(entry, [...path, key]);
    }
  }
}

/** Reassembles a value from its lines, in the order `chunkLines` produced them. */
export class ChunkAssembler {
  private root: unknown = undefined;

  add(line: string): void {
    const parsed = JSON.parse(line) as ChunkLine;
    const [path, kind] = parsed;
    const value = kind === "v" ? parsed[2] : kind === "o" ? {} : [];
    if (path.length === 0) {
      this.root = value;
      return;
    }
    let parent = this.root as Record<string | number, unknown>;
    for (let i = 0; i < path.length - 1; i++) {
      parent = parent[path[i]!] as Record<string | number, unknown>;
      if (parent === null || typeof parent !== "object") throw internal(`chunked JSON: no container at ${path.slice(0, i + 1).join(".")}`);
    }
    parent[path[path.length - 1]!] = value;
  }

  get value(): unknown {
    return this.root;
  }
}
