import { stat } from "node:fs/promises";
import { isMemledgerError, type MemledgerError } from "../../schemas/errors.js";
import type { Embedder } from "../embedder.js";
import { dropVectorIndex, openVectorIndex, type VectorBackendConfig, type VectorIndexPlace } from "../vectors/backend.js";
import { isPersistentVectorIndex, type VectorIndex } from "../vectors/vector-index.js";
import type { SearchIndex } from "./search-index.js";
import { VectorChannel } from "./vector-channel.js";

/**
 * How a search index gets its vector channel: the embedder (a CachedEmbedder in production, so a
 * rebuild never calls the model for a text it has seen) and where the vectors live.
 */
export interface VectorSetup {
  embedder: Embedder;
  /** Names Qdrant collections; embedded indexes ignore it. */
  prefix: string;
  openIndex(place: VectorIndexPlace): Promise<VectorIndex>;
  /** Frees a replaced generation's index outside this process (a Qdrant collection). */
  dropIndex(place: VectorIndexPlace): Promise<void>;
}

export function vectorSetup(options: { embedder: Embedder; prefix: string; backend: VectorBackendConfig }): VectorSetup {
  return {
    embedder: options.embedder,
    prefix: options.prefix,
    openIndex: (place) => openVectorIndex(options.backend, place),
    dropIndex: (place) => dropVectorIndex(options.backend, place),
  };
}

/**
 * The embedder's width. An OpenAI-compatible embedder may not know it before its first response; one
 * probe text answers that (and, behind a CachedEmbedder, is embedded once per model, ever).
 */
export async function embedderDimensions(embedder: Embedder): Promise<number> {
  try {
    return embedder.dimensions;
  } catch (error) {
    if (!isMemledgerError(error)) throw error;
    const [probe] = await embedder.embed(["memledger dimension probe"]);
    return probe!.length;
  }
}

/** What is recorded with saved vectors: the checkpoint they belong to and the model that made them. */
interface VectorLabel {
  generation: string;
  seq: number;
  modelId: string;
}

const labelOf = (index: SearchIndex, modelId: string): string =>
  JSON.stringify({ generation: index.generation, seq: index.appliedSeq, modelId } satisfies VectorLabel);

function parseLabel(label: string): VectorLabel | undefined {
  try {
    const parsed = JSON.parse(label) as Partial<VectorLabel>;
    return typeof parsed.generation === "string" && typeof parsed.seq === "number" && typeof parsed.modelId === "string"
      ? (parsed as VectorLabel)
      : undefined;
  } catch {
    return undefined;
  }
}

export type VectorSource =
  /** Loaded from the vectors saved with the snapshot: nothing embedded. */
  | "snapshot"
  /** An external index (Qdrant) that already holds as many points as there are active memories. */
  | "external"
  /** Derived again from the active memories through the embedder (its cache, when warm). */
  | "derived";

/**
 * Gives `index` its vector channel, in this order of preference: the vectors saved beside its snapshot
 * (when they are of the same generation, sequence and model: the snapshot and the vectors are two
 * writes, so a crash between them, or a model switch, must not pair vectors with the wrong
 * checkpoint); an external index that already holds the right number of points (events replayed after
 * the checkpoint then re-apply idempotently); otherwise every active memory is embedded again, which
 * with a warm cache is a KV read per memory and no model call.
 */
export interface AttachHooks {
  /** The saved vectors were there but could not be used (damaged, other dimensions): `error` says why. */
  onUnusable?: (error: MemledgerError) => void | Promise<void>;
  /** About to derive the vectors of `count` memories again (slow without a warm embedding cache). */
  onDerive?: (count: number) => void;
}

export async function attachVectorChannel(index: SearchIndex, setup: VectorSetup, savedDir: string | undefined, hooks: AttachHooks = {}): Promise<VectorSource> {
  const dimensions = await embedderDimensions(setup.embedder);
  const place = { prefix: setup.prefix, app: index.app, generation: index.generation, modelId: setup.embedder.modelId, dimensions };
  const vectorIndex = await setup.openIndex(place);
  const channel = new VectorChannel(setup.embedder, vectorIndex);
  const active = index.activeMemories();
  let source: VectorSource = "derived";
  if (savedDir !== undefined && isPersistentVectorIndex(vectorIndex)) {
    const info = await vectorIndex.load(savedDir).catch(async (error: unknown) => {
      // Missing, damaged or of other dimensions: derived again below. Anything else is a real failure.
      if (!(isMemledgerError(error) && error.code === "invalid")) throw error;
      if (await exists(savedDir)) await hooks.onUnusable?.(error);
      return undefined;
    });
    const label = info && parseLabel(info.label);
    if (label && label.generation === index.generation && label.seq === index.appliedSeq && label.modelId === setup.embedder.modelId) {
      source = "snapshot";
    }
  } else if (!isPersistentVectorIndex(vectorIndex) && (await vectorIndex.count()) === active.length) {
    source = "external";
  }
  if (source === "derived") {
    if (active.length > 0) hooks.onDerive?.(active.length);
    await channel.rebuildFrom(active);
  }
  index.attachVectors(channel);
  return source;
}

/** Saves an embedded vector channel (or has a sink save its vectors) beside the snapshot, labelled with the index's checkpoint. */
export async function saveVectorChannel(index: SearchIndex, dir: string): Promise<void> {
  const sink = index.vectorSink;
  if (sink) {
    await index.vectorsWritten();
    return sink.save(dir, labelOf(index, sink.modelId));
  }
  const channel = index.vectors;
  if (!channel || !isPersistentVectorIndex(channel.index)) return;
  await channel.index.save(dir, labelOf(index, channel.modelId));
}

const exists = (path: string): Promise<boolean> =>
  stat(path).then(
    () => true,
    () => false,
  );
