import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

/**
 * The API boundary is package.json's `exports`, enforced by Node itself: a program imports `memledger`,
 * `memledger/internal` or `memledger/testing`, and nothing deeper. Checked in a child process that
 * resolves the package by its name (a package may import itself by name once it has `exports`), against
 * the built dist/ (npm test builds first).
 */
const run = promisify(execFile);
const resolve = async (code: string): Promise<string> => (await run(process.execPath, ["--input-type=module", "-e", code], { cwd: process.cwd() })).stdout.trim();

describe("package exports", () => {
  it("the root entry has the client, errors, schemas, deciders, the projection contract's runtime parts and startMemledger", async () => {
    const out = await resolve(`const m = await import("memledger"); console.log(JSON.stringify(Object.keys(m).sort()))`);
    const names: string[] = JSON.parse(out);
    for (const name of ["MemoryClient", "MemledgerError", "ErrorCode", "LedgerEvent", "REQUESTS", "memoryDecider", "claimDecider", "sessionDecider", "promotionDecider", "runDecider", "proposalDecider", "fold", "startMemledger", "naming"]) {
      expect(names).toContain(name);
    }
    // The machinery is not part of the root entry.
    for (const name of ["EventStore", "CommandHandler", "ProjectionRunner", "SearchIndex", "Curator"]) expect(names).not.toContain(name);
  });

  it("memledger/internal has the stores, runners and indexes; memledger/testing has the specs", async () => {
    expect(await resolve(`const m = await import("memledger/internal"); console.log([typeof m.EventStore, typeof m.ProjectionRunner, typeof m.SearchIndex].join())`)).toBe("function,function,function");
    expect(await resolve(`const m = await import("memledger/testing"); console.log([typeof m.specFor, typeof m.projectionSpecFor].join())`)).toBe("function,function");
  });

  it("refuses a deep import past the boundary", async () => {
    const out = await resolve(`try { await import("memledger/dist/services/event-store.js"); console.log("resolved") } catch (e) { console.log(e.code) }`);
    expect(out).toBe("ERR_PACKAGE_PATH_NOT_EXPORTED");
  });
});
