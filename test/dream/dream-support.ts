import type { MemoryState } from "../../commands/memory.js";
import { activeVersionOf, memoryStatus } from "../../commands/memory.js";
import type { PhaseName, ProposalEvent, RunEvent } from "../../schemas/events.js";
import type { Phase, ProposalDraft } from "../../services/dream/phase.js";
import type { MemoryClient } from "../../services/client.js";
import type { EventStore, StoredEvent } from "../../services/event-store.js";
import { readFiltered } from "../../services/dream/gates.js";

/**
 * Deterministic phases for the runner and review tests (the real phases are other modules' and have
 * their own tests): each proposes from the view only, so a resumed step proposes the same keys.
 */
const evidenceOf = (memories: { memoryId: string; version: number }[], summary: string) => ({
  sessions: [],
  transcripts: [],
  memories,
  counts: { memories: memories.length },
  prevalence: null,
  scores: {},
  summary,
});

const ref = (id: string, state: MemoryState) => ({ memoryId: id, version: state.activeVersion! });
const active = (view: Parameters<Phase["propose"]>[0]["view"]) =>
  [...view.memories].filter(([, m]) => memoryStatus(m.state) === "active").sort(([a], [b]) => a.localeCompare(b));
const tagged = (state: MemoryState, tag: string) => activeVersionOf(state)?.tags.includes(tag) ?? false;

/** prune: supersede every active memory tagged `stale`. */
export const prunePhase: Phase = {
  name: "prune",
  async propose({ view }) {
    return active(view)
      .filter(([, m]) => tagged(m.state, "stale"))
      .map(([id, m]): ProposalDraft => ({ key: id, change: { action: "supersede", memory: ref(id, m.state) }, evidence: evidenceOf([ref(id, m.state)], "tagged stale"), reason: "tagged stale" }));
  },
};

/** merge: merge every active memory tagged `dup` into one. */
export const mergePhase: Phase = {
  name: "merge",
  async propose({ view }) {
    const dups = active(view).filter(([, m]) => tagged(m.state, "dup"));
    if (dups.length < 2) return [];
    const sources = dups.map(([id, m]) => ref(id, m.state));
    const body = dups.map(([, m]) => activeVersionOf(m.state)!.body).join("\n\n");
    return [
      {
        key: sources.map((s) => s.memoryId).join("+"),
        change: { action: "merge", sources, scope: "app", content: { title: "Merged: deployment steps", body, kind: "note", tags: ["merged"], paths: [], importance: 3 } },
        evidence: evidenceOf(sources, "near duplicates"),
        reason: "near duplicates",
      },
    ];
  },
};

/** refresh: revise every active memory tagged `old` (its body gains a line). */
export const refreshPhase: Phase = {
  name: "refresh",
  async propose({ view }) {
    return active(view)
      .filter(([, m]) => tagged(m.state, "old"))
      .map(([id, m]): ProposalDraft => {
        const v = activeVersionOf(m.state)!;
        return {
          key: id,
          change: { action: "revise", memory: ref(id, m.state), content: { title: v.title, body: `${v.body}\n\nChecked again.`, kind: v.kind, tags: v.tags, paths: v.paths, importance: v.importance } },
          evidence: evidenceOf([ref(id, m.state)], "old"),
          reason: "refreshed",
        };
      });
  },
};

/** learn: one new memory per run, and one flag on the first active memory no other test phase touches (untagged). */
export const learnPhase: Phase = {
  name: "learn",
  async propose({ view }) {
    const first = active(view).find(([, m]) => activeVersionOf(m.state)!.tags.length === 0);
    const drafts: ProposalDraft[] = [
      {
        key: "pattern-tests",
        change: { action: "create", scope: "app", content: { title: "Run the unit tests before pushing", body: "Three sessions broke the build by pushing untested code.", kind: "convention", tags: ["learned"], paths: [], importance: 4 } },
        evidence: { ...evidenceOf([], "seen in 3 sessions"), prevalence: 0.6 },
        reason: "recurring pattern",
      },
    ];
    if (first) drafts.push({ key: `flag-${first[0]}`, change: { action: "flag", memories: [ref(first[0], first[1].state)] }, evidence: evidenceOf([ref(first[0], first[1].state)], "contradiction"), reason: "contradicts a transcript" });
    return drafts;
  },
};

export const TEST_PHASES: Phase[] = [prunePhase, mergePhase, refreshPhase, learnPhase];

/** A phase that waits for `gate` before proposing (lock contention: the first runner holds the lock meanwhile). */
export function blockingPhase(name: PhaseName, gate: Promise<void>, onEntered?: () => void): Phase {
  return {
    name,
    async propose() {
      onEntered?.();
      await gate;
      return [];
    },
  };
}

/** Writes an approved memory and returns its id. */
export async function approvedMemory(client: MemoryClient, title: string, body: string, tags: string[] = []): Promise<string> {
  const proposed = await client.propose({ title, body, tags });
  await client.approve(proposed.memoryId, { version: 1 });
  return proposed.memoryId;
}

/** Starts and ends `n` sessions. */
export async function endSessions(client: MemoryClient, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const { sessionId } = await client.startSession({ task: `task ${i}` });
    await client.endSession(sessionId, { summary: "done" });
  }
}

/** The run and proposal events of the app, in stream order. */
export async function dreamEvents(store: EventStore, app: string): Promise<{ runs: StoredEvent[]; proposals: StoredEvent[] }> {
  const runs: StoredEvent[] = [];
  const proposals: StoredEvent[] = [];
  for await (const e of readFiltered(store, app, store.names.aggregates(app, "run"))) runs.push(e);
  for await (const e of readFiltered(store, app, store.names.aggregates(app, "proposal"))) proposals.push(e);
  return { runs, proposals };
}

export const typesOf = (events: StoredEvent[]) => events.map((e) => (e.event as RunEvent | ProposalEvent).type);
