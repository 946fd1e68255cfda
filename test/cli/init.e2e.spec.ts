import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cli } from "./support.js";

/** `memledger init` in a scratch git repository: merged with what is there, and idempotent to the byte. */

let repo: string;

const EXISTING_SETTINGS = {
  permissions: { allow: ["Bash(npm test)"] },
  hooks: {
    SessionStart: [{ matcher: "startup", hooks: [{ type: "command", command: "echo welcome" }] }],
    PreToolUse: [{ matcher: "Bash", hooks: [{ type: "command", command: "./check.sh" }] }],
  },
  model: "opus",
};
const EXISTING_MCP = { mcpServers: { other: { command: "other-server", args: ["--stdio"] } } };

beforeAll(async () => {
  repo = await mkdtemp(path.join(tmpdir(), "memledger-init-"));
  execFileSync("git", ["init", "-q", "-b", "main", repo]);
  await mkdir(path.join(repo, ".claude"));
  await mkdir(path.join(repo, "src", "deep"), { recursive: true });
  await writeFile(path.join(repo, ".claude", "settings.json"), JSON.stringify(EXISTING_SETTINGS, null, 2));
  await writeFile(path.join(repo, ".mcp.json"), JSON.stringify(EXISTING_MCP));
});

afterAll(async () => {
  await rm(repo, { recursive: true, force: true });
});

const files = async () => ({
  mcp: await readFile(path.join(repo, ".mcp.json"), "utf8"),
  settings: await readFile(path.join(repo, ".claude", "settings.json"), "utf8"),
});

describe("memledger init", () => {
  it("writes the MCP server and both hooks at the repository's top level, keeps everything else, and a second run changes no byte", async () => {
    // Run from a subdirectory: init finds the git top level.
    const args = ["init", "--app", "payments", "--as", "coder-1", "--dir", path.join(repo, "src", "deep")];
    const first = await cli(args);
    expect(first.code, first.stderr).toBe(0);
    const once = await files();

    const mcp = JSON.parse(once.mcp);
    expect(mcp.mcpServers.other).toEqual(EXISTING_MCP.mcpServers.other);
    expect(mcp.mcpServers.memledger).toEqual({ command: "memledger", args: ["--app", "payments", "--as", "coder-1", "mcp"] });

    const settings = JSON.parse(once.settings);
    expect(settings.permissions).toEqual(EXISTING_SETTINGS.permissions);
    expect(settings.model).toBe("opus");
    expect(settings.hooks.PreToolUse).toEqual(EXISTING_SETTINGS.hooks.PreToolUse);
    expect(settings.hooks.SessionStart).toEqual([
      EXISTING_SETTINGS.hooks.SessionStart[0],
      { hooks: [{ type: "command", command: "memledger --app payments --as coder-1 hook session-start", timeout: 30 }] },
    ]);
    expect(settings.hooks.SessionEnd).toEqual([{ hooks: [{ type: "command", command: "memledger --app payments --as coder-1 hook session-end", timeout: 30 }] }]);

    const second = await cli(args);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/^unchanged:/);
    expect(await files()).toEqual(once);
  });

  it("replaces its own entries in place when run again with other options (never a second copy)", async () => {
    const ran = await cli(["init", "--app", "billing", "--as", "coder-2", "--command", "npx memledger", "--dir", repo]);
    expect(ran.code, ran.stderr).toBe(0);
    const { mcp, settings } = await files();
    expect(JSON.parse(mcp).mcpServers.memledger).toEqual({ command: "npx", args: ["memledger", "--app", "billing", "--as", "coder-2", "mcp"] });
    const hooks = JSON.parse(settings).hooks;
    expect(hooks.SessionStart).toHaveLength(2);
    expect(hooks.SessionStart[1].hooks).toEqual([{ type: "command", command: "npx memledger --app billing --as coder-2 hook session-start", timeout: 30 }]);
    expect(hooks.SessionEnd).toHaveLength(1);
    expect(hooks.SessionEnd[0].hooks[0].command).toBe("npx memledger --app billing --as coder-2 hook session-end");
  });

  it("refuses a settings file that is not JSON and leaves it alone", async () => {
    const broken = await mkdtemp(path.join(tmpdir(), "memledger-init-bad-"));
    try {
      await mkdir(path.join(broken, ".claude"));
      await writeFile(path.join(broken, ".claude", "settings.json"), "{ not json");
      const ran = await cli(["init", "--dir", broken]);
      expect(ran.code).toBe(2);
      expect(ran.stderr).toMatch(/^memledger: invalid: .*settings\.json is not a JSON object/);
      expect(await readFile(path.join(broken, ".claude", "settings.json"), "utf8")).toBe("{ not json");
    } finally {
      await rm(broken, { recursive: true, force: true });
    }
  });
});
