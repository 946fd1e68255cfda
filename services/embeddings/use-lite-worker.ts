import { parentPort } from "node:worker_threads";
import { toRemoteError } from "../remote-error.js";
import type { UseLiteReply, UseLiteRequest } from "./use-lite-thread.js";
import { internal } from "../../schemas/errors.js";
import { USE_LITE_MODEL_ID, loadUseLite } from "./use-lite.js";

/**
 * The thread half of the embedded model (use-lite-thread.ts has the other half and the why): loads the
 * model once, then answers each batch in turn with its rows in one buffer, transferred.
 */
const port = parentPort!;

let queue = Promise.resolve();
port.on("message", (request: UseLiteRequest) => {
  queue = queue.then(async () => {
    let reply: UseLiteReply;
    try {
      const model = await loadUseLite();
      const rows = await model.embed(request.texts);
      const dimensions = rows[0]?.length ?? 0;
      // One buffer holds rows of one width; the caller checks that width against the model's.
      if (rows.some((row) => row.length !== dimensions)) throw internal(`${USE_LITE_MODEL_ID} returned rows of different widths`);
      const vectors = new Float32Array(rows.length * dimensions);
      rows.forEach((row, i) => vectors.set(row, i * dimensions));
      reply = { id: request.id, error: null, rows: rows.length, dimensions, vectors };
    } catch (error) {
      reply = { id: request.id, error: toRemoteError(error) };
    }
    port.postMessage(reply, reply.error ? [] : [reply.vectors.buffer as ArrayBuffer]);
  });
});
