import { parentPort, workerData } from "node:worker_threads";
import { decodeEvent, decodeEventStructural } from "../events/upcast.js";
import type { ProjectedEvent, ProjectionDefinition, ProjectionTarget } from "../projections/projection.js";
import type { RebuildWorkerData, RebuildWorkerReply, RebuildWorkerRequest } from "./rebuild-threads.js";
import { toRemoteError, type RemoteError } from "./remote-error.js";

/**
 * The worker-thread half of a threaded rebuild (rebuild-threads.ts has the other half and the why):
 * makes the portable projection's definition again, opens its fresh target, then decodes, applies,
 * commits and promotes as the requests arrive, one at a time and in order.
 */
const port = parentPort!;
const { portable, scope, verify } = workerData as RebuildWorkerData;
const decode = verify ? decodeEvent : decodeEventStructural;

const reply = (message: RebuildWorkerReply) => port.postMessage(message);

let definition: ProjectionDefinition;
let target: ProjectionTarget;
/** The first failure: every later request but close answers with it (the host stops at the first anyway). */
let failure: RemoteError | undefined;

async function handle(request: RebuildWorkerRequest): Promise<void> {
  switch (request.op) {
    case "apply": {
      // A shared batch (rebuild-threads.ts, SharedBatch): only the picked positions are this projection's.
      const { seqs, bytes, ends, picks } = request;
      const subjects = request.subjects.split("\n");
      const events: ProjectedEvent[] = new Array(picks.length);
      for (let j = 0; j < picks.length; j++) {
        const i = picks[j]!;
        events[j] = { seq: seqs[i]!, subject: subjects[i]!, event: decode(bytes.subarray(i === 0 ? 0 : ends[i - 1], ends[i])) };
      }
      await target.apply(events);
      return;
    }
    case "commit":
      return target.commit(request.seq);
    case "promote":
      return definition.promote(scope, target);
    case "close":
      // Unset when opening it failed (the host still asks to close).
      return target?.close();
  }
}

let queue = Promise.resolve();
port.on("message", (request: RebuildWorkerRequest) => {
  queue = queue.then(async () => {
    // After a failure only close still runs: it ends what the target started (see ThreadedRebuild.close).
    if (failure && request.op !== "close") return reply({ id: request.id, error: failure });
    try {
      await handle(request);
      reply({ id: request.id, error: null });
    } catch (error) {
      failure ??= toRemoteError(error);
      reply({ id: request.id, error: toRemoteError(error) });
    }
  });
});

try {
  const module = (await import(portable.module)) as Record<string, (options: unknown) => ProjectionDefinition>;
  const factory = module[portable.factory];
  if (typeof factory !== "function") throw new Error(`${portable.module} exports no function ${portable.factory}`);
  definition = factory(portable.options);
  target = await definition.openFresh(scope);
  reply({ id: -1, error: null, checkpoint: target.checkpoint });
} catch (error) {
  failure = toRemoteError(error);
  reply({ id: -1, error: failure });
}
