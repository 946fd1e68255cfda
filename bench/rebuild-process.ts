/**
 * One measured rebuild of `npm run bench -- replay` in a process of its own, so that its time, CPU and
 * peak RSS are those of a rebuild alone (as `memledger rebuild` runs), not of the benchmark that also
 * generated the stream. Started by bench/replay.ts with child_process.fork:
 *
 *   node dist/bench/rebuild-process.js '<RebuildJob as JSON>'
 *
 * IPC: sends { outcome } once the rebuild is done, then exits 0; a failure is printed and exits 1, and so
 * does losing the parent.
 */
import { naming } from "../events/subjects.js";
import { EventStore } from "../services/event-store.js";
import { connectNats } from "../services/nats.js";
import { runRebuild, type RebuildJob } from "./replay.js";

async function main(): Promise<void> {
  const raw = process.argv[2];
  if (!raw || !process.send) throw new Error("usage: fork(rebuild-process.js, [JSON job]) with an IPC channel");
  const job = JSON.parse(raw) as RebuildJob;
  // The benchmark went away (Ctrl-C, a crash): so does its measurement.
  process.on("disconnect", () => process.exit(1));
  const nc = await connectNats({ name: `bench-rebuild-${job.phase}` });
  try {
    const store = await EventStore.open(nc, naming(job.scope.prefix));
    const outcome = await runRebuild(store, job);
    // The kernel's high-water mark covers every thread and the moments between samples.
    outcome.rssMB = Math.max(outcome.rssMB, process.resourceUsage().maxRSS / 1024);
    await new Promise<void>((resolve, reject) => process.send!({ outcome }, (err: Error | null) => (err ? reject(err) : resolve())));
  } finally {
    await nc.close().catch(() => undefined);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`[rebuild process] ${(err as Error)?.stack ?? String(err)}`);
    process.exit(1);
  },
);
