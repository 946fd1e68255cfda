// A portable projection for test/projections/rebuild-threads.int.spec.ts, in plain JavaScript because
// a worker thread cannot load TypeScript: it records which thread folded which events, and what was
// committed and promoted, as JSON lines in `options.file`. With `failAtSeq` its apply throws a
// MemledgerError (conflict) at that sequence, as a real target's write might; with `failCommit` its
// commit does. Its "open" line also says the young generation its thread was given (none on the
// main thread). Imports the built code.
import { appendFileSync } from "node:fs";
import { resourceLimits, threadId } from "node:worker_threads";
import { conflict } from "../../dist/schemas/errors.js";

const record = (file, entry) => appendFileSync(file, `${JSON.stringify({ threadId, ...entry })}\n`);

export function probeProjection(options) {
  return {
    name: "probe",
    consumes: ["claim"],
    portable: { module: import.meta.url, factory: "probeProjection", options },
    openLive: async () => {
      throw new Error("the probe has no live target");
    },
    async openFresh() {
      record(options.file, { op: "open", youngGenerationMb: resourceLimits.maxYoungGenerationSizeMb ?? null });
      let seq = 0;
      return {
        get checkpoint() {
          return { seq, generation: "probe-1" };
        },
        async apply(events) {
          for (const e of events) {
            if (e.seq === options.failAtSeq) throw conflict(`probe refuses seq ${e.seq}`, { seq: e.seq });
          }
          record(options.file, { op: "apply", events: events.map((e) => ({ seq: e.seq, type: e.event.type, subject: e.subject })) });
        },
        async commit(at) {
          if (options.failCommit) throw conflict(`probe refuses to commit at ${at}`, { seq: at });
          seq = at;
          record(options.file, { op: "commit", seq: at });
        },
        currentGeneration: async () => "probe-1",
        async close() {
          record(options.file, { op: "close" });
        },
      };
    },
    async promote(_scope, fresh) {
      record(options.file, { op: "promote", seq: fresh.checkpoint.seq });
    },
  };
}
