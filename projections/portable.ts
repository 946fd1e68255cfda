import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { PortableDefinition } from "./projection.js";

/**
 * A PortableDefinition for the module at `moduleUrl` (the caller's `import.meta.url`), or undefined when
 * no compiled module can be found for it.
 *
 * Compiled, the caller is already JavaScript. From the TypeScript sources (the tests run them through
 * vitest) a worker thread cannot load the `.ts` file, so the module is looked up where `npm run build`
 * puts it: `<package root>/dist/<same path>.js`, built from the same sources by the test script's build
 * step. Without one, the projection simply runs on the caller's thread.
 */
export function portableDefinition(moduleUrl: string, factory: string, options: unknown): PortableDefinition | undefined {
  const module = compiledModuleUrl(moduleUrl);
  return module === undefined ? undefined : { module, factory, options };
}

/**
 * The URL of a compiled JavaScript module for `moduleUrl`: itself when it is JavaScript, else (a
 * TypeScript source) its build output under `<package root>/dist/`, or undefined when there is none.
 */
export function compiledModuleUrl(moduleUrl: string): string | undefined {
  const file = fileURLToPath(moduleUrl);
  if (file.endsWith(".js")) return moduleUrl;
  if (!file.endsWith(".ts")) return undefined;
  for (let dir = path.dirname(file); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    if (!existsSync(path.join(dir, "package.json"))) continue;
    const compiled = path.join(dir, "dist", path.relative(dir, file).replace(/\.ts$/, ".js"));
    return existsSync(compiled) ? pathToFileURL(compiled).href : undefined;
  }
  return undefined;
}
