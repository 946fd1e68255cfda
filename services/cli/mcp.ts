import { splitCredentials } from "../nats.js";
import { parseActor } from "../client.js";
import type { Actor } from "../../schemas/primitives.js";
import type { GlobalOptions } from "./options.js";

/**
 * Who the MCP server acts as: --as or MEMLEDGER_AGENT when given; otherwise, on a broker with auth, its
 * NATS user (`agent.coder-1` is agent:coder-1, memledger auth config's naming), since that is the only
 * identity the broker lets it use; otherwise the CLI's default. Never a tool argument.
 */
export function mcpActor(explicit: string | undefined, env: NodeJS.ProcessEnv, g: GlobalOptions): Actor {
  if (explicit !== undefined || (env.MEMLEDGER_AGENT ?? "") !== "") return g.as;
  const user = splitCredentials(g.nats).user;
  const match = user ? /^(agent|human|service)\.([A-Za-z0-9_-]{1,64})$/.exec(user) : null;
  return match ? parseActor(`${match[1]}:${match[2]}`) : g.as;
}
