import { z } from "zod";
import { invalid } from "../../schemas/errors.js";
import type { Embedder } from "./embedder.js";
import { OpenAiCompatibleEmbedder } from "./openai-compatible.js";
import { UseLiteEmbedder } from "./use-lite.js";

const BatchSize = z.coerce.number().int().positive();

/**
 * Which model embeds. `use-lite` is the embedded default and needs nothing; `openai` is any server with
 * OpenAI's POST /v1/embeddings (OpenAI, Ollama, vLLM, TEI) and needs at least a URL and a model name.
 */
export const EmbedderConfig = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("use-lite"), batchSize: BatchSize.optional() }),
  z.object({
    kind: z.literal("openai"),
    url: z.url({ protocol: /^https?$/ }),
    model: z.string().trim().min(1),
    apiKey: z.string().optional(),
    batchSize: BatchSize.optional(),
    dimensions: z.coerce.number().int().positive().optional(),
    timeoutMs: z.coerce.number().int().positive().optional(),
    maxRetries: z.coerce.number().int().nonnegative().optional(),
  }),
]);
export type EmbedderConfig = z.input<typeof EmbedderConfig>;

export const EMBEDDER_ENV = {
  kind: "MEMLEDGER_EMBEDDER",
  url: "MEMLEDGER_EMBED_URL",
  model: "MEMLEDGER_EMBED_MODEL",
  apiKey: "MEMLEDGER_EMBED_API_KEY",
  batchSize: "MEMLEDGER_EMBED_BATCH_SIZE",
  dimensions: "MEMLEDGER_EMBED_DIMENSIONS",
} as const;

/** Reads the configuration from the environment without building anything; unset or blank variables are absent. */
export function embedderConfigFromEnv(env: NodeJS.ProcessEnv = process.env): EmbedderConfig {
  const read = (name: string): string | undefined => {
    const value = env[name]?.trim();
    return value ? value : undefined;
  };
  const kind = read(EMBEDDER_ENV.kind) ?? "use-lite";
  if (kind === "use-lite") return { kind, batchSize: read(EMBEDDER_ENV.batchSize) };
  if (kind === "openai") {
    return {
      kind,
      // Missing values become "", which the schema refuses with a message naming the variables.
      url: read(EMBEDDER_ENV.url) ?? "",
      model: read(EMBEDDER_ENV.model) ?? "",
      apiKey: read(EMBEDDER_ENV.apiKey),
      // Numbers arrive as strings here; the schema coerces them.
      batchSize: read(EMBEDDER_ENV.batchSize),
      dimensions: read(EMBEDDER_ENV.dimensions),
    };
  }
  throw invalid(`${EMBEDDER_ENV.kind} must be "use-lite" or "openai", got ${JSON.stringify(kind)}`, { kind });
}

/** Checks a configuration and builds its embedder; a bad configuration is an `invalid` error naming the variables to set. */
export function embedderFromConfig(config: EmbedderConfig): Embedder {
  const parsed = EmbedderConfig.safeParse(config);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join(".") || "config"}: ${issue.message}`).join("; ");
    const hint =
      (config as { kind?: unknown }).kind === "openai"
        ? ` (set ${EMBEDDER_ENV.url} and ${EMBEDDER_ENV.model}, e.g. http://127.0.0.1:11434 and nomic-embed-text)`
        : "";
    throw invalid(`invalid embedder configuration: ${problems}${hint}`, { issues: parsed.error.issues });
  }
  const c = parsed.data;
  if (c.kind === "use-lite") return new UseLiteEmbedder({ batchSize: c.batchSize });
  return new OpenAiCompatibleEmbedder({
    baseUrl: c.url,
    model: c.model,
    apiKey: c.apiKey,
    batchSize: c.batchSize,
    dimensions: c.dimensions,
    timeoutMs: c.timeoutMs,
    maxRetries: c.maxRetries,
  });
}

export const embedderFromEnv = (env: NodeJS.ProcessEnv = process.env): Embedder =>
  embedderFromConfig(embedderConfigFromEnv(env));
