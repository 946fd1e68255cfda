import { parentPort, workerData } from "node:worker_threads";
import type { NatsConnection } from "@nats-io/transport-node";
import { VectorChannel, embedderDimensions } from "../projections/search/index.js";
import { isPersistentVectorIndex } from "../projections/vectors/vector-index.js";
import { internal } from "../schemas/errors.js";
import { connectNats } from "./nats.js";
import { toRemoteError } from "./remote-error.js";
import { openVectorSetup } from "./search-definition.js";
import type { VectorThreadData, VectorThreadReply, VectorThreadRequest } from "./vector-thread.js";

/**
 * The thread half of a ThreadedVectorSink (vector-thread.ts has the other half and the why): opens a
 * VectorChannel from the description, then writes, saves and closes as the requests arrive, one at a
 * time and in order. After a failure every request answers with it; after close the thread exits.
 */
const port = parentPort!;
const { vectors, app, generation } = workerData as VectorThreadData;
const reply = (message: VectorThreadReply) => port.postMessage(message);

let nc: NatsConnection | undefined;
let channel: VectorChannel | undefined;
let failure: VectorThreadReply["error"] = null;

async function handle(request: Exclude<VectorThreadRequest, { op: "close" }>): Promise<VectorThreadReply> {
  switch (request.op) {
    case "write":
      return { id: request.id, error: null, stats: await channel!.write(new Map(request.changes)) };
    case "save":
      if (isPersistentVectorIndex(channel!.index)) await channel!.index.save(request.dir, request.label);
      return { id: request.id, error: null };
  }
}

async function end(): Promise<never> {
  await channel?.index.close().catch(() => undefined);
  await nc?.close().catch(() => undefined);
  // From JavaScript, between two calls: never inside native code (see vector-thread.ts).
  process.exit(0);
}

let queue = Promise.resolve();
port.on("message", (request: VectorThreadRequest) => {
  queue = queue.then(async () => {
    if (request.op === "close") {
      reply({ id: request.id, error: null });
      return end();
    }
    if (failure) return reply({ id: request.id, error: failure });
    try {
      reply(await handle(request));
    } catch (error) {
      failure = toRemoteError(error);
      reply({ id: request.id, error: failure });
    }
  });
});

try {
  if (!vectors.nats) throw internal("the vector thread needs connection options for the embedding cache");
  nc = await connectNats({ ...vectors.nats, name: "memledger-vector-thread" });
  const setup = await openVectorSetup(vectors, { nc });
  const dimensions = await embedderDimensions(setup.embedder);
  const modelId = setup.embedder.modelId;
  const index = await setup.openIndex({ prefix: setup.prefix, app, generation, modelId, dimensions });
  channel = new VectorChannel(setup.embedder, index);
  reply({ id: -1, error: null, modelId });
} catch (error) {
  failure = toRemoteError(error);
  reply({ id: -1, error: failure });
}
