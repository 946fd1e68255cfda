import { createHash } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Embedder } from "../../services/embeddings/embedder.js";

/**
 * A deterministic stand-in model for cache tests: the vector of a text is derived from its sha256, so equal
 * texts give equal vectors, different texts different ones, and every call is counted.
 */
export class CountingEmbedder implements Embedder {
  readonly calls: string[][] = [];
  constructor(
    readonly modelId = "counting@1",
    readonly dimensions = 16,
  ) {}

  async embed(texts: readonly string[]): Promise<Float32Array[]> {
    this.calls.push([...texts]);
    return texts.map((text) => (text.trim() ? hashVector(`${this.modelId}|${text}`, this.dimensions) : new Float32Array(this.dimensions)));
  }

  get embeddedTexts(): number {
    return this.calls.reduce((n, call) => n + call.length, 0);
  }
}

/** A unit vector from the bytes of sha256(text), for stand-ins that need stable, text-specific vectors. */
export function hashVector(text: string, dimensions: number): Float32Array {
  const vector = new Float32Array(dimensions);
  let digest = createHash("sha256").update(text).digest();
  for (let i = 0; i < dimensions; i++) {
    if (i % 32 === 0 && i > 0) digest = createHash("sha256").update(digest).digest();
    vector[i] = digest[i % 32]! - 127.5;
  }
  const norm = Math.hypot(...vector);
  return vector.map((x) => x / norm);
}

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: { model?: string; input?: string[] };
}

export interface ScriptedReply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

/**
 * An external OpenAI-compatible embeddings service on 127.0.0.1 (not a mock of anything memledger owns):
 * POST /v1/embeddings answers `{ data: [{ embedding, index }] }` with hash vectors of `dimensions` entries,
 * in reverse order so that callers must honour `index`. Scripted replies, when queued, answer first.
 */
export class StandInEmbeddingServer {
  readonly requests: RecordedRequest[] = [];
  readonly script: ScriptedReply[] = [];
  private constructor(
    private readonly server: Server,
    readonly dimensions: number,
  ) {}

  static async start(dimensions = 8): Promise<StandInEmbeddingServer> {
    let self: StandInEmbeddingServer | undefined;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => self!.answer(req.method ?? "", req.url ?? "", req.headers, Buffer.concat(chunks).toString("utf8"), res));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    self = new StandInEmbeddingServer(server, dimensions);
    return self;
  }

  get baseUrl(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  static vectorFor(text: string, dimensions: number): number[] {
    // Deliberately not unit length: the client must normalise.
    return [...hashVector(text, dimensions)].map((x) => x * 3);
  }

  private answer(method: string, url: string, headers: IncomingHttpHeaders, raw: string, res: import("node:http").ServerResponse): void {
    let body: RecordedRequest["body"] = {};
    try {
      body = JSON.parse(raw) as RecordedRequest["body"];
    } catch {
      // recorded as empty; the reply below says so
    }
    this.requests.push({ method, url, headers, body });
    const scripted = this.script.shift();
    const reply: ScriptedReply =
      scripted ??
      (method === "POST" && url === "/v1/embeddings" && Array.isArray(body.input)
        ? {
            status: 200,
            body: {
              object: "list",
              model: body.model,
              data: body.input
                .map((text, index) => ({ object: "embedding", index, embedding: StandInEmbeddingServer.vectorFor(text, this.dimensions) }))
                .reverse(),
            },
          }
        : { status: 404, body: { error: { message: `no route ${method} ${url}` } } });
    res.writeHead(reply.status, { "content-type": "application/json", ...reply.headers });
    res.end(reply.body === undefined ? "" : JSON.stringify(reply.body));
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
