import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import type { NatsConnection } from "@nats-io/transport-node";
import { Objm, type ObjectStore } from "@nats-io/obj";
import type { Naming } from "../events/subjects.js";
import type { TranscriptRef } from "../schemas/events.js";
import { invalid, notFound, unavailable } from "../schemas/errors.js";
import { createJetStreamResource } from "./nats.js";

/**
 * Session transcripts in the NATS object store, addressed by content: an object's name is the SHA-256 of
 * its bytes, so storing the same transcript twice stores it once, and an event that names a digest names
 * exactly those bytes. The object store is not transactional with the stream (NOTES): the transcript is
 * stored first, and the session.ended event that references it is appended only once it is there.
 * Consolidation (a later issue) reads them back with readTranscript.
 */

const sha256Hex = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("hex");

/** Whether the object store's own digest (`SHA-256=` + base64url, padded or not) is this hex SHA-256. */
const sameDigest = (objectDigest: string, hex: string): boolean =>
  objectDigest.startsWith("SHA-256=") && Buffer.from(objectDigest.slice("SHA-256=".length), "base64url").toString("hex") === hex;

export const transcriptRefOf = (bytes: Uint8Array): TranscriptRef => {
  const hex = sha256Hex(bytes);
  return { digest: `sha256:${hex}`, bytes: bytes.length, name: hex };
};

/**
 * Creates the transcripts bucket if it is not there (the service does, at start) and opens it. Agents
 * never create it: a bucket made by an agent could carry any configuration (a max age that drops
 * transcripts, say), so the broker refuses them the stream's creation and they use useTranscripts.
 */
export async function openTranscripts(nc: NatsConnection, names: Naming, options: { replicas?: number } = {}): Promise<ObjectStore> {
  try {
    return await createJetStreamResource(`the transcripts object store ${names.transcriptsBucket()}`, () =>
      new Objm(nc).create(names.transcriptsBucket(), {
        description: "memledger session transcripts, each named by the SHA-256 of its bytes",
        replicas: options.replicas ?? 1,
      }),
    );
  } catch (err) {
    throw unavailable(`cannot open the transcripts object store ${names.transcriptsBucket()}: ${(err as Error).message}`, {}, err);
  }
}

/** Opens the transcripts bucket the service created; `unavailable` when no service has started on this prefix yet. */
export async function useTranscripts(nc: NatsConnection, names: Naming): Promise<ObjectStore> {
  try {
    return await new Objm(nc).open(names.transcriptsBucket());
  } catch (err) {
    throw unavailable(`the transcripts object store ${names.transcriptsBucket()} is not there: it is created when memledger's service starts (${(err as Error).message})`);
  }
}

/** Stores the bytes under their digest (once: an object already there with the same size is kept). */
export async function putTranscript(store: ObjectStore, bytes: Uint8Array): Promise<TranscriptRef> {
  const ref = transcriptRefOf(bytes);
  const existing = await store.info(ref.name);
  if (existing && !existing.deleted && existing.size === ref.bytes && sameDigest(existing.digest, ref.name)) return ref;
  const info = await store.putBlob({ name: ref.name, description: "session transcript" }, bytes);
  if (!sameDigest(info.digest, ref.name)) {
    throw unavailable(`the object store computed ${info.digest} for transcript ${ref.digest}: not stored intact`);
  }
  return ref;
}

/** Reads a transcript file and stores it; an unreadable file is the caller's input error. */
export async function putTranscriptFile(store: ObjectStore, file: string): Promise<TranscriptRef> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw invalid(`cannot read the transcript ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { file });
  }
  return putTranscript(store, bytes);
}

/**
 * Proves a reference names a stored object with those bytes (size and the store's own SHA-256), so an
 * event never references a transcript that is not there.
 */
export async function checkTranscript(store: ObjectStore, ref: TranscriptRef): Promise<void> {
  if (ref.name !== ref.digest.slice("sha256:".length)) throw invalid(`transcript name ${ref.name} is not its digest's hex`, { transcript: ref });
  const info = await store.info(ref.name);
  if (!info || info.deleted) throw notFound(`no transcript ${ref.digest} in the transcripts store: store it first (SDK endSession({transcriptFile}), CLI --transcript)`, { transcript: ref });
  if (info.size !== ref.bytes || !sameDigest(info.digest, ref.name)) {
    throw invalid(`transcript ${ref.digest} is stored with ${info.size} bytes and ${info.digest}, not ${ref.bytes} bytes`, { transcript: ref });
  }
}

/** The transcript's bytes, or not_found. */
export async function readTranscript(store: ObjectStore, ref: Pick<TranscriptRef, "name">): Promise<Uint8Array> {
  const bytes = await store.getBlob(ref.name);
  if (bytes === null) throw notFound(`no transcript ${ref.name} in the transcripts store`);
  return bytes;
}
