import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AppLayout } from "../../projections/files/layout.js";
import { listResources, readResource } from "../../services/mcp/resources.js";

/** MCP resources never show another agent's scratchpad: neither its memory files nor its own MEMORY.md. */
describe("MCP resources and scratchpads", () => {
  let root: string;
  const app = "app1";
  const as = (id: string) => ({ filesRoot: root, app, actor: { kind: "agent" as const, id } });

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "memledger-mcp-res-"));
    const dir = new AppLayout(root, app).appDir;
    await mkdir(join(dir, "agent", "bob"), { recursive: true });
    await mkdir(join(dir, "agents", "bob"), { recursive: true });
    await mkdir(join(dir, "app"), { recursive: true });
    await writeFile(join(dir, "MEMORY.md"), "# Memory index: app1\n");
    await writeFile(join(dir, "agent", "bob", "m1.md"), "bob's note\n");
    await writeFile(join(dir, "agents", "bob", "MEMORY.md"), "# bob's scratchpad\n");
    await writeFile(join(dir, "app", "m2.md"), "shared\n");
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("lists and reads bob's scratchpad files and index for bob only", async () => {
    const uri = (file: string) => `memledger://${app}/memories/${file}`;
    for (const file of ["agent/bob/m1.md", "agents/bob/MEMORY.md"]) {
      await expect(readResource(as("alice"), uri(file))).rejects.toMatchObject({ code: "not_found" });
      expect((await readResource(as("bob"), uri(file))).text).toContain("bob");
    }
    expect((await readResource(as("alice"), uri("app/m2.md"))).text).toBe("shared\n");
    const listed = (await listResources(as("alice"))).map((r) => r.uri);
    expect(listed.some((u) => u.includes("/bob/"))).toBe(false);
  });
});
