import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { claimsProjection, claimsReader, escapeGlob, unlinkMatching } from "../../projections/claims/index.js";
import { filesProjection } from "../../projections/files/index.js";
import { rebuildProjection } from "../../services/projection-runner.js";
import { REDIS_URL, startLedger } from "../support/env.js";

/**
 * Hydration latency over the command service, opt-in (it loads thousands of memories first):
 *
 *   MEMLEDGER_MEASURE=1 npx vitest run test/hydration/latency.test.ts
 *
 * Prints the cold pack (the service folds the whole stream into its catalog) and warm packs (caught
 * up: one stream-info call, retrieval, Redis, MEMORY.md, assembly). Asserts only the budget.
 */
const MEMORIES = Number(process.env.MEMLEDGER_MEASURE_MEMORIES ?? 2000);
const WORDS = "stripe webhook retry lease lock claim session memory ledger stream projection rebuild index vector search cache token budget review branch commit deploy database migration timeout".split(" ");

describe.skipIf(!process.env.MEMLEDGER_MEASURE)("hydrate latency (measurement)", () => {
  it(`packs for an app of ${MEMORIES} memories`, async () => {
    const root = await mkdtemp(path.join(tmpdir(), "memledger-hydrate-measure-"));
    const redis = new Redis(REDIS_URL);
    const prefix = `hydm${Date.now().toString(36)}`;
    const keyPrefix = `${prefix}:claims`;
    const ledger = await startLedger({ prefix, claims: claimsReader({ redis, keyPrefix }), hydration: { filesRoot: path.join(root, "files") } });
    try {
      let seed = 7;
      const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      const text = (n: number) => Array.from({ length: n }, () => WORDS[Math.floor(rand() * WORDS.length)]).join(" ");
      const writer = ledger.client("coder-2");
      const reviewer = ledger.client("human:rita");
      for (let i = 0; i < MEMORIES; i += 50) {
        const batch = await Promise.all(
          Array.from({ length: Math.min(50, MEMORIES - i) }, (_, j) =>
            writer.propose({ title: `${text(6)} ${i + j}`, body: text(70), kind: (i + j) % 100 === 0 ? "fragile" : "fact", paths: [`src/mod${(i + j) % 40}/file.ts`] }),
          ),
        );
        await Promise.all(batch.map((p) => reviewer.approve(p.memoryId)));
      }
      const me = ledger.client("coder-1");
      const s = await me.startSession({ task: "earlier" });
      await me.endSession(s.sessionId);
      for (let i = 0; i < 20; i++) await writer.claim(`src/mod${i}/file.ts`, { kind: "lock", ttlMs: 3_600_000 });
      const scope = { prefix, app: ledger.app, stream: ledger.service.names.appStream(ledger.app) };
      await rebuildProjection(ledger.service.store, filesProjection({ root: path.join(root, "files") }), scope);
      await rebuildProjection(ledger.service.store, claimsProjection({ redis: REDIS_URL, keyPrefix }), scope);

      const request = { task: "stripe webhook retry lease", paths: ["src/mod0/file.ts"], branch: "main", budget: 4000 };
      let t = performance.now();
      const cold = await me.hydrate(request);
      const coldMs = performance.now() - t;
      const warm: number[] = [];
      for (let i = 0; i < 50; i++) {
        t = performance.now();
        const pack = await me.hydrate(request);
        warm.push(performance.now() - t);
        expect(pack.tokens).toBeLessThanOrEqual(4000);
      }
      warm.sort((a, b) => a - b);
      const q = (p: number) => warm[Math.min(warm.length - 1, Math.floor(p * warm.length))]!.toFixed(1);
      console.log(
        `hydrate, ${MEMORIES} memories (${ledger.app} stream seq ${await ledger.service.store.lastSeq(scope.stream)}): cold ${coldMs.toFixed(0)} ms; warm p50 ${q(0.5)} ms, p95 ${q(0.95)} ms, max ${q(1)} ms; pack ${cold.tokens} tokens, sections ${cold.sections.map((s) => `${s.name} ${s.tokens}t ${s.included.length}+${s.dropped.length}`).join(", ")}`,
      );
      expect(cold.tokens).toBeLessThanOrEqual(4000);
    } finally {
      await ledger.cleanup();
      await unlinkMatching(redis, `${escapeGlob(keyPrefix)}:*`);
      redis.disconnect();
      await rm(root, { recursive: true, force: true });
    }
  }, 300_000);
});
