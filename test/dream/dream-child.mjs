// One consolidation run in a child process, for the kill-and-resume test (test/dream/runner.e2e.spec.ts).
// Deterministic phases (prune: memories tagged stale; merge: memories tagged dup), and the runner's pause
// hook: with MEMLEDGER_DREAM_PAUSE_AT=<point> it prints "paused at <point>" on stderr and waits to be killed.
// Imports the built code (npm test builds first).
import { connectNats } from "../../dist/services/nats.js";
import { EventStore } from "../../dist/services/event-store.js";
import { naming } from "../../dist/events/subjects.js";
import { runDream } from "../../dist/services/dream/runner.js";
import { activeVersionOf, memoryStatus } from "../../dist/commands/memory.js";

const [prefix, app] = process.argv.slice(2);
const active = (view, tag) =>
  [...view.memories]
    .filter(([, m]) => memoryStatus(m.state) === "active" && activeVersionOf(m.state).tags.includes(tag))
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([id, m]) => ({ memoryId: id, version: m.state.activeVersion }));
const evidence = (memories, summary) => ({ sessions: [], transcripts: [], memories, counts: {}, prevalence: null, scores: {}, summary });
const phases = [
  {
    name: "prune",
    async propose({ view }) {
      return active(view, "stale").map((ref) => ({ key: ref.memoryId, change: { action: "supersede", memory: ref }, evidence: evidence([ref], "stale"), reason: "tagged stale" }));
    },
  },
  {
    name: "merge",
    async propose({ view }) {
      const sources = active(view, "dup");
      if (sources.length < 2) return [];
      const content = { title: "Merged", body: "Merged body.", kind: "note", tags: [], paths: [], importance: 3 };
      return [{ key: sources.map((s) => s.memoryId).join("+"), change: { action: "merge", sources, scope: "app", content }, evidence: evidence(sources, "dups"), reason: "near duplicates" }];
    },
  },
];
const pauseAt = process.env.MEMLEDGER_DREAM_PAUSE_AT;
const nc = await connectNats({ servers: process.env.NATS_URL });
const store = await EventStore.open(nc, naming(prefix));
const result = await runDream(
  {
    nc,
    store,
    lock: { ttlMs: 1000 },
    pauseAt: async (point) => {
      if (point !== pauseAt) return;
      process.stderr.write(`paused at ${point}\n`);
      await new Promise(() => undefined);
    },
  },
  { app, phases, force: true, wait: true, waitTimeoutMs: 20_000, holder: `child-${process.pid}` },
);
process.stdout.write(`${JSON.stringify(result)}\n`);
await nc.close();
