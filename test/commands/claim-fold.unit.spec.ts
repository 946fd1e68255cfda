import { describe, expect, it } from "vitest";
import { claimDecider, claimIdOf, foldClaimFields, foldClaimState, initialClaimState, type ClaimState } from "../../commands/claim.js";
import { foldSessionState, initialSessionState, sessionDecider, type SessionState } from "../../commands/session.js";
import { foldClaim, parseState, serializeState } from "../../projections/claims/model.js";
import type { ClaimEvent, DomainEventOf, LedgerEvent, SessionEvent } from "../../schemas/events.js";
import { envelopes } from "../support/decider-spec.js";

// The hand-written folds of claims and sessions (they replaced immer's produce): the decider's evolve is
// the unfrozen fold deep-frozen, the fold never changes its input, and a re-delivered event applies once.

const TASK = claimIdOf("task", "t1");
const LOCK = claimIdOf("lock", "src/a.ts");
const agentB = { kind: "agent", id: "agent-b" } as const;

const taskEvents = envelopes<ClaimEvent>(
  [
    { type: "claim.task_opened", data: { name: "t1", title: "T one", priority: 2 } },
    { type: "claim.claimed", data: { kind: "task", name: "t1", holder: "agent-a", leaseMs: 600_000, expiresAt: "2025-01-01T00:12:00.000Z", takeoverOf: null, priority: null } },
    { type: "claim.renewed", data: { holder: "agent-a", leaseMs: 300_000, expiresAt: "2025-01-01T00:08:00.000Z" } },
    {
      type: "claim.claimed",
      data: { kind: "task", name: "t1", holder: "agent-b", leaseMs: 600_000, expiresAt: "2025-01-01T00:14:00.000Z", takeoverOf: { holder: "agent-a", expiresAt: "2025-01-01T00:08:00.000Z" }, priority: null },
    },
    { type: "claim.released", data: { holder: "agent-b", done: true } },
  ] satisfies DomainEventOf<ClaimEvent>[],
  { aggregateId: TASK },
);
// A lock, and a task opened by its first claim (the claim carries the priority), each released without done.
const lockEvents = envelopes<ClaimEvent>(
  [
    { type: "claim.claimed", data: { kind: "lock", name: "src/a.ts", holder: "agent-b", leaseMs: 60_000, expiresAt: "2025-01-01T00:11:00.000Z", takeoverOf: null, priority: null } },
    { type: "claim.released", data: { holder: "agent-b", done: false } },
    { type: "claim.claimed", data: { kind: "lock", name: "src/a.ts", holder: "agent-a", leaseMs: 60_000, expiresAt: "2025-01-01T00:14:00.000Z", takeoverOf: null, priority: null } },
  ] satisfies DomainEventOf<ClaimEvent>[],
  { aggregateId: LOCK, actor: agentB },
  10,
);
const firstClaimOpens = envelopes<ClaimEvent>(
  [
    { type: "claim.claimed", data: { kind: "task", name: "t2", holder: "agent-b", leaseMs: 60_000, expiresAt: "2025-01-01T00:21:00.000Z", takeoverOf: null, priority: 4 } },
    { type: "claim.released", data: { holder: "agent-b", done: false } },
    // A later first-claim priority does not reopen it: openedAt and priority stay the first claim's.
    { type: "claim.claimed", data: { kind: "task", name: "t2", holder: "agent-a", leaseMs: 60_000, expiresAt: "2025-01-01T00:23:00.000Z", takeoverOf: null, priority: 1 } },
  ] satisfies DomainEventOf<ClaimEvent>[],
  { aggregateId: claimIdOf("task", "t2"), actor: agentB },
  20,
);
// The task's claim (evt-2) delivered again after its renew: it must not undo the renew.
const taskHistory = [...taskEvents.slice(0, 3), taskEvents[1]!, ...taskEvents.slice(3)];

const TRANSCRIPT = { digest: `sha256:${"a".repeat(64)}`, bytes: 42, name: "a".repeat(64) };
const sessionEvents = envelopes<SessionEvent>(
  [
    { type: "session.started", data: { agentId: "agent-a", task: "fix the flaky test", branch: "fix/flaky", worktree: null } },
    {
      type: "session.exposed",
      data: { receipts: [{ verb: "hydrate", time: "2025-01-01T00:01:30.000Z", tokens: 120, memories: [{ memoryId: "m1", version: 1, rank: 1, channel: "relevant", origin: "app" }] }] },
    },
    { type: "session.ended", data: { summary: "fixed", transcript: TRANSCRIPT } },
  ] satisfies DomainEventOf<SessionEvent>[],
  { aggregateId: "ses-1", scope: "agent:agent-a" },
);
const sessionHistory = [sessionEvents[0]!, sessionEvents[1]!, sessionEvents[0]!, sessionEvents[2]!, sessionEvents[2]!];

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key]);
  }
  return value;
}

function isDeepFrozen(value: unknown): boolean {
  if (value === null || typeof value !== "object") return true;
  return Object.isFrozen(value) && Object.values(value).every(isDeepFrozen);
}

/**
 * Folds `history` three ways: the decider's evolve, the unfrozen fold, and the unfrozen fold on a frozen
 * copy of every input state (a write to it would throw in this strict-mode module). Returns every state
 * of each, after checking the three agree at every step.
 */
function foldThreeWays<E extends LedgerEvent, S>(
  history: readonly E[],
  initial: () => S,
  evolve: (state: S, event: E) => S,
  pureFold: (state: S, event: E) => S,
): { evolved: S[]; folded: S[] } {
  const evolved: S[] = [];
  const folded: S[] = [];
  let viaEvolve = initial();
  let viaFold = initial();
  for (const event of history) {
    const frozenInput = deepFreeze(structuredClone(viaFold));
    const snapshot = structuredClone(viaFold);
    const fromFrozen = pureFold(frozenInput, event);
    viaEvolve = evolve(viaEvolve, event);
    viaFold = pureFold(viaFold, event);
    expect(viaFold).toEqual(viaEvolve);
    expect(fromFrozen).toEqual(viaEvolve);
    expect(frozenInput).toStrictEqual(snapshot);
    expect(isDeepFrozen(viaEvolve)).toBe(true);
    evolved.push(viaEvolve);
    folded.push(viaFold);
  }
  return { evolved, folded };
}

describe("claims: the hand-written fold", () => {
  for (const [name, history] of [
    ["task: open, claim, renew, the claim again (re-delivered), takeover, done", taskHistory],
    ["lock: claim, release, claim", lockEvents],
    ["task opened by its first claim", firstClaimOpens],
  ] as const) {
    it(`${name}: evolve is the fold deep-frozen, and the fold never changes its input`, () => {
      foldThreeWays(history, initialClaimState, claimDecider.evolve, foldClaimState);
    });
  }

  it("a re-delivered event applies once: the same state comes back, in the decider and in the fold", () => {
    const { evolved, folded } = foldThreeWays(taskHistory, initialClaimState, claimDecider.evolve, foldClaimState);
    expect(evolved[3]).toBe(evolved[2]);
    expect(folded[3]).toBe(folded[2]);
    expect(evolved[3]!.expiresAt).toBe("2025-01-01T00:08:00.000Z");
    expect(Object.keys(evolved.at(-1)!.applied)).toEqual(["evt-1", "evt-2", "evt-3", "evt-4", "evt-5"]);
  });

  it("folds each event into what it says", () => {
    const { evolved } = foldThreeWays(taskHistory, initialClaimState, claimDecider.evolve, foldClaimState);
    const [opened, claimed, renewed, , takenOver, done] = evolved as [ClaimState, ClaimState, ClaimState, ClaimState, ClaimState, ClaimState];
    const t = (i: number) => taskEvents[i]!.time;
    const actor = taskEvents[0]!.actor;
    expect({ ...opened, applied: undefined }).toEqual({
      ...initialClaimState(), id: TASK, kind: "task", name: "t1", title: "T one", priority: 2, openedAt: t(0), openedBy: actor, updatedAt: t(0), applied: undefined,
    });
    expect(claimed).toMatchObject({ holder: "agent-a", leaseMs: 600_000, claimedAt: t(1), expiresAt: "2025-01-01T00:12:00.000Z", takeoverOf: null, priority: 2, openedAt: t(0), updatedAt: t(1) });
    expect(renewed).toMatchObject({ holder: "agent-a", leaseMs: 300_000, claimedAt: t(1), expiresAt: "2025-01-01T00:08:00.000Z", updatedAt: t(2) });
    expect(takenOver).toMatchObject({ holder: "agent-b", claimedAt: t(3), takeoverOf: { holder: "agent-a", expiresAt: "2025-01-01T00:08:00.000Z" } });
    expect({ ...done, applied: undefined }).toEqual({
      ...opened, applied: undefined, holder: null, leaseMs: null, claimedAt: null, expiresAt: null, takeoverOf: null, done: true, doneAt: t(4), doneBy: "agent-b", updatedAt: t(4),
    });
    expect(done.applied["evt-5"]).toEqual({ type: "claim.released", version: null });

    const opens = foldThreeWays(firstClaimOpens, initialClaimState, claimDecider.evolve, foldClaimState).evolved;
    expect(opens[2]).toMatchObject({ priority: 4, openedAt: firstClaimOpens[0]!.time, openedBy: agentB, holder: "agent-a", done: false, doneAt: null });
    const lock = foldThreeWays(lockEvents, initialClaimState, claimDecider.evolve, foldClaimState).evolved;
    expect(lock[1]).toMatchObject({ kind: "lock", name: "src/a.ts", holder: null, done: false, priority: null, openedAt: null });
  });

  it("keeps the state's key order (stored states are its JSON) and shares what an event leaves untouched", () => {
    const { evolved } = foldThreeWays(taskHistory, initialClaimState, claimDecider.evolve, foldClaimState);
    for (const state of evolved) expect(Object.keys(state)).toEqual(Object.keys(initialClaimState()));
    // The takeover's openedBy is the one the opening event put there, not a copy.
    expect(evolved[4]!.openedBy).toBe(evolved[0]!.openedBy);
    expect(evolved[4]!.applied["evt-1"]).toBe(evolved[0]!.applied["evt-1"]);
  });

  it("foldClaimFields is the fold without the memo: same fields, the memo passed along untouched", () => {
    const memo = deepFreeze({});
    for (const history of [taskEvents, lockEvents, firstClaimOpens]) {
      let fields: ClaimState = deepFreeze({ ...initialClaimState(), applied: memo });
      let state = initialClaimState();
      for (const event of history) {
        fields = deepFreeze(foldClaimFields(fields, event));
        state = foldClaimState(state, event);
        expect(fields.applied).toBe(memo);
        expect({ ...fields, applied: null }).toEqual({ ...state, applied: null });
      }
    }
  });
});

describe("claims projection: the fold it uses and the state it stores", () => {
  it("foldClaim is the decider's evolve unfrozen, and a stored state is the state's JSON without the memo", () => {
    for (const history of [taskHistory, lockEvents, firstClaimOpens]) {
      const { evolved } = foldThreeWays(history, initialClaimState, claimDecider.evolve, foldClaim);
      for (const state of evolved) {
        const { applied: _applied, ...stored } = state;
        expect(serializeState(state)).toBe(JSON.stringify(stored));
        // What a live target reloads folds on as the state it saved did.
        const reloaded = parseState(serializeState(state));
        expect(serializeState(foldClaim(reloaded, history.at(-1)!))).toBe(serializeState(foldClaim({ ...state, applied: {} }, history.at(-1)!)));
      }
    }
  });
});

describe("sessions: the hand-written fold", () => {
  it("start, receipts, the start again (re-delivered), end, the end again: evolve is the fold deep-frozen, the fold never changes its input", () => {
    const { evolved, folded } = foldThreeWays(sessionHistory, initialSessionState, sessionDecider.evolve, foldSessionState);
    // Receipts and re-deliveries change nothing: the same state comes back.
    expect(evolved[1]).toBe(evolved[0]);
    expect(evolved[2]).toBe(evolved[0]);
    expect(evolved[4]).toBe(evolved[3]);
    expect(folded[2]).toBe(folded[0]);
    expect(folded[4]).toBe(folded[3]);
    const [started, , , ended] = evolved as [SessionState, SessionState, SessionState, SessionState];
    expect(started).toEqual({
      ...initialSessionState(),
      id: "ses-1",
      agentId: "agent-a",
      task: "fix the flaky test",
      branch: "fix/flaky",
      worktree: null,
      startedAt: sessionEvents[0]!.time,
      applied: { "evt-1": { type: "session.started", version: null } },
    });
    expect(ended).toEqual({
      ...started,
      endedAt: sessionEvents[2]!.time,
      summary: "fixed",
      transcript: TRANSCRIPT,
      applied: { ...started.applied, "evt-3": { type: "session.ended", version: null } },
    });
    for (const state of evolved) expect(Object.keys(state)).toEqual(Object.keys(initialSessionState()));
  });

  it("a session ended without a transcript has none", () => {
    const history = envelopes<SessionEvent>(
      [
        { type: "session.started", data: { agentId: "agent-a", task: "triage", branch: null, worktree: null } },
        { type: "session.ended", data: { summary: null } },
      ],
      { aggregateId: "ses-2", scope: "agent:agent-a" },
    );
    const { evolved } = foldThreeWays(history, initialSessionState, sessionDecider.evolve, foldSessionState);
    expect(evolved[1]).toMatchObject({ endedAt: history[1]!.time, summary: null, transcript: null });
  });
});
