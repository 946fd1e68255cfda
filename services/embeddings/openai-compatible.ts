import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { invalid, MemledgerError, unavailable } from "../../schemas/errors.js";
import { checkBatchSize, DEFAULT_BATCH_SIZE, embedInBatches, type Embedder } from "./embedder.js";

export interface OpenAiCompatibleOptions {
  /** Where the server lives, e.g. http://127.0.0.1:11434 (Ollama) or https://api.openai.com/v1; see embeddingsEndpoint. */
  baseUrl: string;
  model: string;
  /** Sent as `Authorization: Bearer …` when set; local servers (Ollama, TEI) usually need none. */
  apiKey?: string;
  /** Texts per request. The default suits TEI, whose max_client_batch_size defaults to 32. */
  batchSize?: number;
  /** The model's width when known in advance; otherwise learned from the first response. */
  dimensions?: number;
  /** Per attempt, not per embed call. */
  timeoutMs?: number;
  /** Attempts after the first, for 429, 5xx, timeouts and refused connections. */
  maxRetries?: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

export const OPENAI_DEFAULTS = {
  timeoutMs: 30_000,
  maxRetries: 4,
  initialBackoffMs: 250,
  maxBackoffMs: 10_000,
} as const;

/**
 * Accepts a base URL with or without the trailing /v1, because providers document it both ways
 * (OpenAI's SDKs say https://api.openai.com/v1, Ollama's docs say http://localhost:11434).
 */
export function embeddingsEndpoint(baseUrl: string): URL {
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    throw invalid(`embedding service URL is not a URL: ${JSON.stringify(baseUrl)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw invalid(`embedding service URL must be http or https, got ${url.protocol}`);
  }
  const path = url.pathname.replace(/\/+$/, "");
  url.pathname = path.endsWith("/v1") ? `${path}/embeddings` : `${path}/v1/embeddings`;
  return url;
}

/** `openai:<host>/<model>`: the same model name on two servers may be two different models, so the host counts. */
export const openAiModelId = (baseUrl: string, model: string): string => `openai:${embeddingsEndpoint(baseUrl).host}/${model}`;

/** The URL as it may appear in messages and logs: credentials in the userinfo part are dropped. */
function printableUrl(url: URL): string {
  const copy = new URL(url);
  copy.username = "";
  copy.password = "";
  return copy.toString();
}

/** Rate limits and server-side failures pass; anything else is the same answer on every retry. */
export const isRetryableStatus = (status: number): boolean => status === 408 || status === 429 || status >= 500;

/** Seconds or an HTTP date, as RFC 9110 allows; undefined when absent or unreadable. */
export function parseRetryAfterMs(header: string | null, nowMs: number): number | undefined {
  if (header === null || header.trim() === "") return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowMs);
}

/**
 * Exponential backoff with full jitter (so that many projections throttled together do not retry in
 * lockstep), at least what the server asked for in Retry-After, never more than maxBackoffMs.
 */
export function backoffDelayMs(
  retry: number,
  options: { initialBackoffMs: number; maxBackoffMs: number },
  retryAfterMs: number | undefined,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(options.maxBackoffMs, options.initialBackoffMs * 2 ** retry);
  const jittered = ceiling / 2 + (random() * ceiling) / 2;
  return Math.min(options.maxBackoffMs, Math.max(jittered, retryAfterMs ?? 0));
}

const EmbeddingsResponse = z.object({
  data: z.array(
    z.object({
      embedding: z.array(z.number()),
      index: z.number().int().nonnegative().optional(),
    }),
  ),
});

/**
 * Reads an OpenAI-style embeddings body into rows in input order. OpenAI, vLLM and TEI send `index`;
 * when every row has one the rows are put in that order, otherwise the array order is taken as is.
 */
export function parseEmbeddingsResponse(body: unknown, expectedCount: number): number[][] {
  const parsed = EmbeddingsResponse.safeParse(body);
  if (!parsed.success) {
    throw unavailable(`embedding service sent a body that is not an embeddings response: ${parsed.error.message}`);
  }
  const rows = parsed.data.data;
  if (rows.length !== expectedCount) {
    throw unavailable(`embedding service returned ${rows.length} vectors for ${expectedCount} texts`, {
      expected: expectedCount,
      received: rows.length,
    });
  }
  if (!rows.every((row) => row.index !== undefined)) return rows.map((row) => row.embedding);
  const ordered: number[][] = new Array(expectedCount);
  for (const row of rows) {
    if (row.index! >= expectedCount || ordered[row.index!] !== undefined) {
      throw unavailable(`embedding service returned a duplicate or out-of-range index ${row.index}`);
    }
    ordered[row.index!] = row.embedding;
  }
  return ordered;
}

/**
 * A refusal that retrying cannot fix. 400, 413 and 422 mean these texts were refused (too long, bad
 * request): `invalid`. Any other 4xx means the service is unusable as configured (wrong key, wrong
 * model, wrong URL): `unavailable`, with `retryable: false` and a hint about what to check.
 */
function refusal(status: number, endpoint: string, model: string, bodySnippet: string): MemledgerError {
  const details = { status, endpoint, model, body: bodySnippet, retryable: false };
  if (status === 400 || status === 413 || status === 422) {
    return invalid(`embedding service ${endpoint} refused the request (HTTP ${status}): ${bodySnippet}`, details);
  }
  const hint =
    status === 401 || status === 403
      ? "check MEMLEDGER_EMBED_API_KEY"
      : status === 404
        ? "check MEMLEDGER_EMBED_URL and MEMLEDGER_EMBED_MODEL"
        : "check the embedding service configuration";
  return unavailable(`embedding service ${endpoint} answered HTTP ${status} (${hint}): ${bodySnippet}`, details);
}

const snippet = (text: string): string => (text.length > 300 ? `${text.slice(0, 300)}…` : text);

/**
 * Any server that speaks OpenAI's POST /v1/embeddings: OpenAI, Ollama, vLLM, Hugging Face TEI, LiteLLM.
 * Batches are sent one after another: remote services rate-limit, and the cache in front of this
 * embedder already limits calls to texts never embedded before.
 */
export class OpenAiCompatibleEmbedder implements Embedder {
  readonly modelId: string;
  readonly model: string;
  readonly batchSize: number;
  private readonly endpoint: URL;
  private readonly printableEndpoint: string;
  private readonly apiKey: string | undefined;
  private readonly configuredDimensions: number | undefined;
  private learnedDimensions: number | undefined;
  private readonly timeoutMs: number;
  private readonly maxRetries: number;
  private readonly backoff: { initialBackoffMs: number; maxBackoffMs: number };

  constructor(options: OpenAiCompatibleOptions) {
    if (!options.model?.trim()) throw invalid("the embedding model name is empty (MEMLEDGER_EMBED_MODEL)");
    this.endpoint = embeddingsEndpoint(options.baseUrl);
    this.printableEndpoint = printableUrl(this.endpoint);
    this.model = options.model;
    this.modelId = openAiModelId(options.baseUrl, options.model);
    this.apiKey = options.apiKey?.trim() || undefined;
    this.batchSize = checkBatchSize(options.batchSize ?? DEFAULT_BATCH_SIZE);
    if (options.dimensions !== undefined && (!Number.isInteger(options.dimensions) || options.dimensions < 1)) {
      throw invalid(`embedding dimensions must be a positive integer, got ${options.dimensions}`);
    }
    this.configuredDimensions = options.dimensions;
    this.timeoutMs = options.timeoutMs ?? OPENAI_DEFAULTS.timeoutMs;
    this.maxRetries = options.maxRetries ?? OPENAI_DEFAULTS.maxRetries;
    this.backoff = {
      initialBackoffMs: options.initialBackoffMs ?? OPENAI_DEFAULTS.initialBackoffMs,
      maxBackoffMs: options.maxBackoffMs ?? OPENAI_DEFAULTS.maxBackoffMs,
    };
  }

  /**
   * The configured width, or the one learned from the first response. Before either is known it throws
   * rather than answer a wrong number: call resolveDimensions() first when the width is needed up front
   * (e.g. to size a vector index).
   */
  get dimensions(): number {
    const known = this.configuredDimensions ?? this.learnedDimensions;
    if (known === undefined) {
      throw unavailable(
        `the width of ${this.modelId} is not known before its first response: configure dimensions or await resolveDimensions()`,
      );
    }
    return known;
  }

  /** The model's width, asking the server with a one-word probe when it is neither configured nor learned. */
  async resolveDimensions(): Promise<number> {
    const known = this.configuredDimensions ?? this.learnedDimensions;
    if (known !== undefined) return known;
    const [probe] = await this.postBatch(["dimension probe"]);
    return probe!.length;
  }

  async embed(texts: readonly string[]): Promise<Float32Array[]> {
    if (texts.length === 0) return [];
    return embedInBatches(texts, (batch) => this.postBatch(batch), {
      batchSize: this.batchSize,
      dimensions: this.configuredDimensions ?? this.learnedDimensions,
      resolveDimensions: () => this.resolveDimensions(),
      modelId: this.modelId,
    });
  }

  private async postBatch(texts: string[]): Promise<number[][]> {
    const rows = parseEmbeddingsResponse(await this.postWithRetries(texts), texts.length);
    const expected = this.configuredDimensions ?? this.learnedDimensions;
    const width = rows[0]?.length ?? 0;
    if (expected !== undefined && rows.some((row) => row.length !== expected)) {
      const received = rows.find((row) => row.length !== expected)!.length;
      throw invalid(
        `${this.modelId} returned ${received}-dimensional vectors but ${expected} were ${this.configuredDimensions !== undefined ? "configured" : "returned before"}`,
        { modelId: this.modelId, expected, received },
      );
    }
    if (width === 0) throw unavailable(`${this.modelId} returned empty vectors`);
    this.learnedDimensions ??= width;
    return rows;
  }

  private async postWithRetries(texts: string[]): Promise<unknown> {
    const body = JSON.stringify({ model: this.model, input: texts });
    const headers: Record<string, string> = { "content-type": "application/json", accept: "application/json" };
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;

    let lastFailure = "";
    for (let attempt = 0; attempt <= this.maxRetries; attempt++) {
      let retryAfterMs: number | undefined;
      let response: Response;
      try {
        response = await fetch(this.endpoint, {
          method: "POST",
          headers,
          body,
          signal: AbortSignal.timeout(this.timeoutMs),
        });
      } catch (err) {
        // Refused connections, resets and our own timeout: the server may be restarting, so try again.
        const cause = (err as Error & { cause?: { code?: string } }).cause?.code;
        lastFailure =
          (err as Error).name === "TimeoutError"
            ? `no answer within ${this.timeoutMs} ms`
            : `${(err as Error).message}${cause ? ` (${cause})` : ""}`;
        if (attempt < this.maxRetries) await sleep(backoffDelayMs(attempt, this.backoff, undefined));
        continue;
      }

      if (response.ok) {
        try {
          return await response.json();
        } catch (err) {
          throw unavailable(`embedding service ${this.printableEndpoint} sent a body that is not JSON: ${(err as Error).message}`, {
            endpoint: this.printableEndpoint,
          });
        }
      }
      const text = snippet(await response.text().catch(() => ""));
      if (!isRetryableStatus(response.status)) throw refusal(response.status, this.printableEndpoint, this.model, text);
      lastFailure = `HTTP ${response.status}: ${text}`;
      retryAfterMs = parseRetryAfterMs(response.headers.get("retry-after"), Date.now());
      if (attempt < this.maxRetries) await sleep(backoffDelayMs(attempt, this.backoff, retryAfterMs));
    }
    throw unavailable(
      `embedding service ${this.printableEndpoint} failed ${this.maxRetries + 1} times; last: ${lastFailure}`,
      { endpoint: this.printableEndpoint, model: this.model, attempts: this.maxRetries + 1, retryable: true },
    );
  }
}
