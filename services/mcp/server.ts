import { createServer, type Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import {
  CallToolRequestSchema,
  ErrorCode as RpcErrorCode,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  McpError,
  ReadResourceRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";
import { MemledgerError } from "../../schemas/errors.js";
import type { MemoryClient } from "../client.js";
import { MEMORY_FILE_TEMPLATE, listResources, readResource } from "./resources.js";
import { TOOLS, callTool, errorResult, toolInputSchema } from "./tools.js";

export interface McpServerOptions {
  /** The one SDK client every tool call goes through; its actor is the server's identity. */
  client: MemoryClient;
  /** Where the files projection writes MEMORY.md and the memory files. */
  filesRoot: string;
  version?: string;
}

const SERVER_NAME = "memledger";

const INSTRUCTIONS =
  "memledger is this team's shared memory ledger. Call hydrate at the start of a task; search before you " +
  "propose (revise an existing memory with memoryId and expectedSeq rather than duplicating it); claim a " +
  "task or lock a path before you work on it and release it when done. Errors carry a stable code " +
  "(invalid, conflict, forbidden, not_found, unavailable, internal); on conflict the result includes the " +
  "current memory: re-read it and retry with its seq.";

/**
 * One MCP server over the SDK client. Built on the SDK's low-level Server rather than McpServer.registerTool,
 * because the tool arguments are checked against the command schemas here, so that an invalid argument comes
 * back as a tool result with the stable code `invalid` like every other failure (McpServer's own check
 * answers with an uncoded protocol-level message).
 */
export function buildMcpServer(options: McpServerOptions): Server {
  const { client } = options;
  const server = new Server(
    { name: SERVER_NAME, version: options.version ?? "0.1.0" },
    { capabilities: { tools: {}, resources: {} }, instructions: INSTRUCTIONS },
  );
  const byName = new Map(TOOLS.map((tool) => [tool.name, tool]));
  const source = { app: client.options.app, filesRoot: options.filesRoot, actor: client.actor };

  server.setRequestHandler(ListToolsRequestSchema, () => ({
    tools: TOOLS.map((tool) => ({ name: tool.name, description: tool.description, inputSchema: toolInputSchema(tool) })),
  }));
  server.setRequestHandler(CallToolRequestSchema, async (request) => {
    const tool = byName.get(request.params.name);
    if (!tool) return errorResult(new MemledgerError("invalid", `unknown tool ${request.params.name}; known: ${TOOLS.map((t) => t.name).join(", ")}`));
    return callTool(client, tool, request.params.arguments);
  });

  server.setRequestHandler(ListResourcesRequestSchema, async () => ({ resources: await listResources(source) }));
  server.setRequestHandler(ListResourceTemplatesRequestSchema, () => ({
    resourceTemplates: [{ uriTemplate: MEMORY_FILE_TEMPLATE, name: "memory file", mimeType: "text/markdown", description: "One memory's markdown file" }],
  }));
  server.setRequestHandler(ReadResourceRequestSchema, async (request) => {
    try {
      return { contents: [await readResource(source, request.params.uri)] };
    } catch (err) {
      // A resource read has no result to carry an error in: a JSON-RPC error whose data holds the code.
      if (err instanceof MemledgerError) {
        const rpc = err.code === "not_found" ? -32002 : RpcErrorCode.InvalidParams;
        throw new McpError(rpc, `${err.code}: ${err.message}`, { code: err.code });
      }
      throw err;
    }
  });
  return server;
}

/** Serves one client on stdin/stdout until stdin closes. Nothing else may write to stdout. */
export async function serveStdio(options: McpServerOptions): Promise<{ closed: Promise<void> }> {
  const server = buildMcpServer(options);
  const transport = new StdioServerTransport();
  const closed = new Promise<void>((resolve) => {
    server.onclose = () => resolve();
  });
  await server.connect(transport);
  // The SDK's stdio transport does not notice the end of stdin: the client closing it ends the session.
  process.stdin.once("end", () => void server.close());
  return { closed };
}

export interface HttpMcp {
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Streamable HTTP on 127.0.0.1 only (`/mcp`), stateless: each POST gets a fresh server and transport over
 * the same SDK client, so nothing is kept between requests and any number of agents can share it. The Host
 * header is checked (DNS rebinding: a web page must not reach the ledger through the user's browser).
 */
export async function serveHttp(options: McpServerOptions & { port: number }): Promise<HttpMcp> {
  let allowedHosts: string[] = [];
  const http: HttpServer = createServer((req, res) => {
    if (!req.url?.startsWith("/mcp")) {
      res.writeHead(404, { "content-type": "text/plain" }).end("memledger MCP is served at /mcp\n");
      return;
    }
    if (req.method !== "POST") {
      // Stateless: no server-to-client stream to resume and no session to delete.
      res.writeHead(405, { allow: "POST", "content-type": "application/json" }).end(
        JSON.stringify({ jsonrpc: "2.0", error: { code: RpcErrorCode.ConnectionClosed, message: "Method not allowed." }, id: null }),
      );
      return;
    }
    const server = buildMcpServer(options);
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: undefined,
      enableJsonResponse: true,
      enableDnsRebindingProtection: true,
      allowedHosts,
    });
    res.on("close", () => {
      void transport.close();
      void server.close();
    });
    server
      .connect(transport)
      .then(() => transport.handleRequest(req, res))
      .catch((err) => {
        if (!res.headersSent) {
          res.writeHead(500, { "content-type": "application/json" }).end(
            JSON.stringify({ jsonrpc: "2.0", error: { code: RpcErrorCode.InternalError, message: (err as Error).message }, id: null }),
          );
        }
      });
  });
  await new Promise<void>((resolve, reject) => {
    http.once("error", reject);
    http.listen(options.port, "127.0.0.1", () => {
      http.off("error", reject);
      resolve();
    });
  });
  const port = (http.address() as AddressInfo).port;
  allowedHosts = [`127.0.0.1:${port}`, `localhost:${port}`];
  return {
    port,
    url: `http://127.0.0.1:${port}/mcp`,
    close: () =>
      new Promise<void>((resolve) => {
        http.closeAllConnections();
        http.close(() => resolve());
      }),
  };
}
