import { describe, expect, it } from "vitest";
import { mcpActor } from "../../services/cli/mcp.js";
import { resolveGlobals } from "../../services/cli/options.js";

/** Who `memledger mcp` acts as: never a tool argument, always the server's configured identity. */
describe("the MCP server's actor", () => {
  const globals = (raw: { as?: string; nats?: string }, env: NodeJS.ProcessEnv = {}) => resolveGlobals(raw, env);

  it("is --as when given, whatever the NATS user", () => {
    const g = globals({ as: "human:alice", nats: "nats://agent.coder-1:pw@127.0.0.1:4222" });
    expect(mcpActor("human:alice", {}, g)).toEqual({ kind: "human", id: "alice" });
  });

  it("is MEMLEDGER_AGENT when set", () => {
    const env = { MEMLEDGER_AGENT: "coder-2" };
    const g = globals({ nats: "nats://agent.coder-1:pw@127.0.0.1:4222" }, env);
    expect(mcpActor(undefined, env, g)).toEqual({ kind: "agent", id: "coder-2" });
  });

  it("is the NATS user under auth when neither is given (memledger auth config names users <kind>.<id>)", () => {
    const g = globals({ nats: "nats://agent.coder-1:secret@127.0.0.1:4222" });
    expect(mcpActor(undefined, {}, g)).toEqual({ kind: "agent", id: "coder-1" });
    const service = globals({ nats: "nats://service.curator:secret@127.0.0.1:4222" });
    expect(mcpActor(undefined, {}, service)).toEqual({ kind: "service", id: "curator" });
  });

  it("falls back to the CLI's default for a URL without a user, or a user that is not an actor", () => {
    expect(mcpActor(undefined, {}, globals({ nats: "nats://127.0.0.1:4222" }))).toEqual({ kind: "agent", id: "cli" });
    expect(mcpActor(undefined, {}, globals({ nats: "nats://memledger:pw@127.0.0.1:4222" }))).toEqual({ kind: "agent", id: "cli" });
  });
});
