import { describe, expect, it } from "vitest";
import type { ProjectedEvent } from "../../projections/projection.js";
import { SearchIndex } from "../../projections/search/index.js";
import { LedgerEvent } from "../../schemas/events.js";
import { AppCatalog, packMemoryOf } from "../../services/hydration/catalog.js";
import { Hydrator } from "../../services/hydration/service.js";
import { overlappingPaths } from "../../services/hydration/paths.js";
import { startLedger } from "../support/env.js";
import seedrandom from "seedrandom";
import { rawEnvelope, type FakeMetadata } from "../../testing/index.js";

/** Seeded, so the same seed gives the same sequence on every machine and a failure can be replayed. */
const rng = (seed: number): (() => number) => seedrandom(String(seed));

const APP = "shop";
const PATHS = ["src", "src/payments", "src/payments/webhook.ts", "./src/payments/**", "src/pay", "src/auth/session.ts", "docs/", "src//auth", "/abs/x", "lib/a/b/c.ts"];
const WORDS = "stripe webhook retry lease lock claim session ledger stream rebuild index vector token budget branch deploy".split(" ");

interface Sim {
  versions: { status: "proposed" | "approved" | "rejected" }[];
  active: number | null;
  superseded: boolean;
}

/** A random but valid history: proposals, revisions, approvals, rejections, supersedes, rollbacks, sessions. */
function history(seed: number, steps: number): ProjectedEvent[] {
  const random = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
  const words = (n: number) => Array.from({ length: n }, () => pick(WORDS)).join(" ");
  const memories = new Map<string, Sim>();
  const openSessions = new Map<string, string>();
  const events: ProjectedEvent[] = [];
  let sessionCount = 0;
  const push = (aggregateId: string, type: string, schemaVersion: number, data: unknown, extra: Record<string, unknown> = {}) => {
    const seq = events.length + 1;
    const metadata = {
      id: `e${seq}`,
      correlationId: `e${seq}`,
      aggregateId,
      app: APP,
      scope: pick(["app", "app", "team:core", "agent:coder-1", "agent:coder-2"]),
      actor: { kind: "agent", id: pick(["coder-1", "coder-2", "rita"]) },
      time: new Date(Date.UTC(2030, 0, 1) + seq * 1000).toISOString(),
    } as FakeMetadata;
    const event = LedgerEvent.parse({ ...rawEnvelope({ type, data }, metadata, seq), schemaVersion, ...extra });
    events.push({ seq, subject: `${APP}.x.${aggregateId}`, event });
  };
  const propose = (id: string, version: number) =>
    push(
      id,
      "memory.proposed",
      3,
      {
        version,
        title: `${words(4)} ${id} v${version}`,
        body: words(12),
        kind: pick(["fragile", "fragile", "note", "fact"]),
        tags: [],
        paths: Array.from({ length: Math.floor(random() * 3) }, () => pick(PATHS)),
        importance: 1 + Math.floor(random() * 5),
      },
      random() < 0.3 ? { git: { branch: pick(["main", "fix/webhooks"]) } } : {},
    );
  for (let step = 0; step < steps; step++) {
    const r = random();
    const live = [...memories.entries()].filter(([, m]) => !m.superseded);
    if (r < 0.08) {
      const agent = pick(["coder-1", "coder-2"]);
      const open = openSessions.get(agent);
      if (open && random() < 0.7) {
        push(open, "session.ended", 2, { summary: null });
        openSessions.delete(agent);
      } else {
        const id = `s${++sessionCount}`;
        push(id, "session.started", 1, { agentId: agent, task: words(3), branch: null, worktree: null });
        openSessions.set(agent, id);
      }
    } else if (r < 0.35 || live.length === 0) {
      const id = `m${memories.size + 1}`;
      memories.set(id, { versions: [{ status: "proposed" }], active: null, superseded: false });
      propose(id, 1);
    } else {
      const [id, m] = pick(live);
      const proposed = m.versions.map((v, i) => ({ v, n: i + 1 })).filter(({ v }) => v.status === "proposed");
      const approved = m.versions.map((v, i) => ({ v, n: i + 1 })).filter(({ v, n }) => v.status === "approved" && n !== m.active);
      const what = random();
      if (what < 0.4 && proposed.length) {
        const { v, n } = pick(proposed);
        v.status = "approved";
        m.active = n;
        push(id, "memory.approved", 1, { version: n });
      } else if (what < 0.5 && proposed.length) {
        const { v, n } = pick(proposed);
        v.status = "rejected";
        push(id, "memory.rejected", 1, { version: n, reason: words(3) });
      } else if (what < 0.6 && approved.length && m.active !== null) {
        const { n } = pick(approved);
        push(id, "memory.rolled_back", 1, { fromVersion: m.active, toVersion: n });
        m.active = n;
      } else if (what < 0.68) {
        m.superseded = true;
        push(id, "memory.superseded", 1, { by: null, reason: words(3) });
      } else {
        m.versions.push({ status: "proposed" });
        propose(id, m.versions.length);
      }
    }
  }
  return events;
}

const AGENT_PATHS: readonly (readonly string[])[] = [[], ["src"], ["src/payments/webhook.ts"], ["src/payments/"], ["src/pay"], ["src/auth", "lib/a"], ["/abs"], ["docs/readme.md"], ["lib/a/b/c.ts/x"], [""]];

describe("the hydration catalog's incremental views", () => {
  it("equal the same views computed from scratch after every batch of a random history", () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const events = history(seed, 600);
      const catalog = new AppCatalog(APP);
      const reference = new SearchIndex(APP, "reference");
      for (let at = 0; at < events.length; at += 37) {
        const batch = events.slice(at, at + 37);
        catalog.apply(batch);
        catalog.apply(batch); // at-least-once delivery: folded once
        reference.apply(batch);
        const seq = batch.at(-1)!.seq;
        const fragile = reference.activeMemories().filter((m) => m.kind === "fragile");
        expect(catalog.fragileMemories().map((m) => m.memoryId).sort()).toEqual(fragile.map((m) => m.memoryId).sort());
        for (const paths of AGENT_PATHS) {
          const expected = fragile
            .filter((m) => overlappingPaths(paths, m.paths).length > 0)
            .map(packMemoryOf)
            .sort((a, b) => (a.memoryId < b.memoryId ? -1 : 1));
          expect(catalog.fragileOnPaths(paths), `seed ${seed} seq ${seq} paths ${paths.join(",")}`).toEqual(expected);
        }
        // Changes: every memory event after the boundary, oldest first, the newest `limit` kept.
        const memoryEvents = events.slice(0, at + batch.length).filter((e) => e.event.type.startsWith("memory."));
        for (const since of [0, 1, Math.floor(seq / 2), seq - 3, seq]) {
          for (const limit of [0, 5, 200]) {
            const after = memoryEvents.filter((e) => e.seq > since);
            const got = catalog.changesAfter(since, limit);
            expect(got.events.map((c) => c.seq)).toEqual(after.slice(Math.max(0, after.length - limit)).map((e) => e.seq));
            expect(got.omittedOlder).toBe(after.length - got.events.length);
          }
        }
        // Sessions: the latest other than the current one, as a scan of all sessions finds it.
        for (const agent of ["coder-1", "coder-2", "nobody"]) {
          const started = events.slice(0, at + batch.length).filter((e) => e.event.type === "session.started" && (e.event.data as { agentId: string }).agentId === agent);
          const last = started.at(-1)?.event.aggregateId;
          for (const current of [undefined, last]) {
            const previous = catalog.previousSession(agent, current);
            if (started.length === 0) expect(previous).toBeNull();
            else if (previous) expect(started.map((e) => e.event.aggregateId)).toContain(previous.sessionId);
          }
        }
      }
    }
  });
});

describe("hydrate with and without the live search index (real NATS)", () => {
  it("gives the same pack from the live index, from the catalog's own index, and while the live one is missing", async () => {
    const ledger = await startLedger({ prefix: `hydc${Math.random().toString(36).slice(2, 10)}` });
    try {
      const writer = ledger.client("coder-2");
      const reviewer = ledger.client("human:rita");
      const me = ledger.client("coder-1");
      const s = await me.startSession({ task: "earlier" });
      for (let i = 0; i < 30; i++) {
        const p = await writer.propose({
          title: `Webhook note ${i}`,
          body: `Stripe webhook detail ${i}: ${"retries are idempotent ".repeat(i % 4)}`,
          kind: i % 3 === 0 ? "fragile" : "fact",
          paths: [i % 2 ? "src/payments" : `src/payments/handler${i}.ts`],
          importance: 1 + (i % 5),
        });
        if (i % 4 !== 3) await reviewer.approve(p.memoryId);
        if (i === 10) await me.endSession(s.sessionId);
      }
      const store = ledger.service.store;
      const stream = store.names.appStream(ledger.app);
      const live = new SearchIndex(ledger.app, "live");
      await store.replay(stream, {}, (batch) => live.apply(batch));

      const request = { agent: "coder-1", task: "stripe webhook retries", branch: null, paths: ["src/payments/handler3.ts"], budget: 1500 };
      const own = await new Hydrator(store).hydrate(ledger.app, request);
      expect(own.sections.find((x) => x.name === "fragile")!.included.length).toBeGreaterThan(0);
      expect(own.sections.find((x) => x.name === "changes")!.included.length).toBeGreaterThan(0);
      expect(own.sections.find((x) => x.name === "relevant")!.included.length).toBeGreaterThan(0);

      // A live index from the start; then one that goes missing (a rebuild swapping it) and comes back:
      // the catalog, caught up without an index, folds a stand-in from the stream's start, then drops it.
      let liveThere = true;
      const hydrator = new Hydrator(store, { searchIndex: () => (liveThere ? live : undefined) });
      expect(await hydrator.hydrate(ledger.app, request)).toEqual(own);
      liveThere = false;
      expect(await hydrator.hydrate(ledger.app, request)).toEqual(own);
      liveThere = true;
      expect(await hydrator.hydrate(ledger.app, request)).toEqual(own);
    } finally {
      await ledger.cleanup();
    }
  }, 60_000);
});
