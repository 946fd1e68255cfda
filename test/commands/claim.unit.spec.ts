import { describe, expect, it } from "vitest";
import { fold } from "../../commands/decider.js";
import { claimDecider, claimIdOf, claimView, isLive, type ClaimCommand } from "../../commands/claim.js";
import type { ClaimEvent, DomainEventOf } from "../../schemas/events.js";
import { envelopes, specFor } from "../support/decider-spec.js";

type ClaimDomainEvent = DomainEventOf<ClaimEvent>;

const T0 = Date.parse("2025-01-01T00:00:00.000Z");
const MIN = 60_000;
const iso = (ms: number) => new Date(ms).toISOString();

const TASK = "fix-flaky-test";
const TASK_ID = claimIdOf("task", TASK);
const LOCK = "src/services/command handler.ts";
const LOCK_ID = claimIdOf("lock", LOCK);

const task = specFor(claimDecider, { aggregateId: TASK_ID });
const lock = specFor(claimDecider, { aggregateId: LOCK_ID });

const opened = (priority = 2, title: string | null = "Fix the flaky test"): ClaimDomainEvent => ({
  type: "claim.task_opened",
  data: { name: TASK, title, priority },
});
const claimed = (
  holder: string,
  at: number,
  leaseMs = 10 * MIN,
  extra: { kind?: "task" | "lock"; name?: string; takeoverOf?: { holder: string; expiresAt: string } | null; priority?: number | null } = {},
): ClaimDomainEvent => ({
  type: "claim.claimed",
  data: {
    kind: extra.kind ?? "task",
    name: extra.name ?? TASK,
    holder,
    leaseMs,
    expiresAt: iso(at + leaseMs),
    takeoverOf: extra.takeoverOf ?? null,
    priority: extra.priority ?? null,
  },
});
const renewed = (holder: string, at: number, leaseMs = 10 * MIN): ClaimDomainEvent => ({
  type: "claim.renewed",
  data: { holder, leaseMs, expiresAt: iso(at + leaseMs) },
});
const released = (holder: string, done = false): ClaimDomainEvent => ({ type: "claim.released", data: { holder, done } });

const claim = (agentId: string, now: number, ttlMs = 10 * MIN, priority = 3): ClaimCommand => ({
  type: "claim",
  kind: "task",
  name: TASK,
  agentId,
  ttlMs,
  now,
  priority,
});
const renew = (agentId: string, now: number, ttlMs: number | null = null): ClaimCommand => ({ type: "renew", kind: "task", name: TASK, agentId, ttlMs, now });
const release = (agentId: string, now: number, done = false): ClaimCommand => ({ type: "release", kind: "task", name: TASK, agentId, done, now });

describe("claim ids", () => {
  it("names a task by its id and a lock by a hash of its path", () => {
    expect(TASK_ID).toBe("task-fix-flaky-test");
    expect(LOCK_ID).toMatch(/^lock-[0-9a-f]{40}$/);
    expect(claimIdOf("lock", LOCK)).toBe(LOCK_ID);
    expect(claimIdOf("lock", "src/other.ts")).not.toBe(LOCK_ID);
    // A task named like a lock id still gets its own aggregate.
    expect(claimIdOf("task", LOCK_ID)).not.toBe(LOCK_ID);
  });
});

describe("claim decider: opening tasks", () => {
  it("opens a task with a title and a priority", () => {
    const { event, state } = task.given([]).when({ type: "open", name: TASK, title: "Fix the flaky test", priority: 2 }).then([opened()]);
    expect(event.scope).toBe("app");
    expect(state).toMatchObject({ id: TASK_ID, kind: "task", name: TASK, title: "Fix the flaky test", priority: 2, openedAt: event.time, holder: null, done: false });
  });

  it("refuses to open a task twice", () => {
    const error = task.given([opened()]).when({ type: "open", name: TASK, title: null, priority: 1 }).thenThrows("conflict", /already open/);
    expect(error.details).toMatchObject({ reason: "already_open", holder: null, expiresAt: null });
  });

  it("refuses to open a task that its first claim opened", () => {
    task.given([claimed("agent-a", T0, 10 * MIN, { priority: 3 })]).when({ type: "open", name: TASK, title: null, priority: 1 }).thenThrows("conflict", /already open/);
  });

  it("refuses to reopen a done task", () => {
    const error = task.given([opened(), claimed("agent-a", T0), released("agent-a", true)]).when({ type: "open", name: TASK, title: null, priority: 1 }).thenThrows("conflict", /done/);
    expect(error.details).toMatchObject({ reason: "done" });
  });
});

describe("claim decider: claiming", () => {
  it("claims an open task for the lease from now", () => {
    const { event, state } = task.given([opened()]).when(claim("agent-a", T0, 5 * MIN)).then([claimed("agent-a", T0, 5 * MIN)]);
    expect(state).toMatchObject({ holder: "agent-a", leaseMs: 5 * MIN, expiresAt: iso(T0 + 5 * MIN), claimedAt: event.time, priority: 2, takeoverOf: null });
    expect(isLive(state, T0 + 5 * MIN - 1)).toBe(true);
    expect(isLive(state, T0 + 5 * MIN)).toBe(false);
  });

  it("opens a task that does not exist yet by claiming it, with the claim's priority", () => {
    const { event, state } = task.given([]).when(claim("agent-a", T0, 10 * MIN, 1)).then([claimed("agent-a", T0, 10 * MIN, { priority: 1 })]);
    expect(state).toMatchObject({ kind: "task", name: TASK, priority: 1, openedAt: event.time, title: null, holder: "agent-a" });
  });

  it("claims a lock named by a path; the name travels in the event", () => {
    const command: ClaimCommand = { type: "claim", kind: "lock", name: LOCK, agentId: "agent-a", ttlMs: MIN, now: T0, priority: 3 };
    const { state } = lock.given([]).when(command).then([claimed("agent-a", T0, MIN, { kind: "lock", name: LOCK })]);
    expect(state).toMatchObject({ id: LOCK_ID, kind: "lock", name: LOCK, priority: null, openedAt: null });
    expect(claimView(state, T0)).toMatchObject({ claimId: LOCK_ID, kind: "lock", name: LOCK, holder: "agent-a", live: true });
  });

  it("refuses a claim while another agent's lease is live, naming the holder and expiry", () => {
    const error = task.given([opened(), claimed("agent-a", T0)]).when(claim("agent-b", T0 + 10 * MIN - 1)).thenThrows("conflict", /held by agent-a until/);
    expect(error.details).toEqual({ reason: "held", kind: "task", name: TASK, holder: "agent-a", expiresAt: iso(T0 + 10 * MIN) });
  });

  it("refuses a claim while a renewed lease is live", () => {
    task.given([opened(), claimed("agent-a", T0), renewed("agent-a", T0 + 9 * MIN)]).when(claim("agent-b", T0 + 15 * MIN)).thenThrows("conflict", /held by agent-a/);
  });

  it("refuses to claim what the caller already holds: renew is the way to extend", () => {
    const error = task.given([opened(), claimed("agent-a", T0)]).when(claim("agent-a", T0 + MIN)).thenThrows("conflict", /renew it instead/);
    expect(error.details).toMatchObject({ reason: "already_held", holder: "agent-a", expiresAt: iso(T0 + 10 * MIN) });
  });

  it("takes over a lapsed lease and records whose lease it took", () => {
    const { state } = task
      .given([opened(), claimed("agent-a", T0)])
      .when(claim("agent-b", T0 + 10 * MIN))
      .then([claimed("agent-b", T0 + 10 * MIN, 10 * MIN, { takeoverOf: { holder: "agent-a", expiresAt: iso(T0 + 10 * MIN) } })]);
    expect(state).toMatchObject({ holder: "agent-b", takeoverOf: { holder: "agent-a", expiresAt: iso(T0 + 10 * MIN) }, expiresAt: iso(T0 + 20 * MIN) });
  });

  it("lets a holder claim its own lapsed lease again (no takeover)", () => {
    task.given([opened(), claimed("agent-a", T0)]).when(claim("agent-a", T0 + 11 * MIN)).then([claimed("agent-a", T0 + 11 * MIN)]);
  });

  it("claims a released task afresh (no takeover)", () => {
    task.given([opened(), claimed("agent-a", T0), released("agent-a")]).when(claim("agent-b", T0 + MIN)).then([claimed("agent-b", T0 + MIN)]);
  });

  it("refuses to claim a done task, even much later", () => {
    const error = task.given([opened(), claimed("agent-a", T0), released("agent-a", true)]).when(claim("agent-b", T0 + 1000 * MIN)).thenThrows("conflict", /done/);
    expect(error.details).toMatchObject({ reason: "done", holder: null, expiresAt: null });
  });

  it("refuses a name whose hash lands on another lock's aggregate", () => {
    const command: ClaimCommand = { type: "claim", kind: "lock", name: "src/other.ts", agentId: "agent-a", ttlMs: MIN, now: T0, priority: 3 };
    const error = lock.given([claimed("agent-b", T0 - 5 * MIN, MIN, { kind: "lock", name: LOCK })]).when(command).thenThrows("conflict", /shares its aggregate/);
    expect(error.details).toMatchObject({ reason: "name_mismatch" });
  });
});

describe("claim decider: renewing", () => {
  it("renews a live lease from now, by the last lease length by default", () => {
    const { state } = task.given([opened(), claimed("agent-a", T0, 5 * MIN)]).when(renew("agent-a", T0 + 4 * MIN)).then([renewed("agent-a", T0 + 4 * MIN, 5 * MIN)]);
    expect(state).toMatchObject({ holder: "agent-a", expiresAt: iso(T0 + 9 * MIN), leaseMs: 5 * MIN });
    expect(state.claimedAt).toBe(task.given([opened(), claimed("agent-a", T0, 5 * MIN)]).state.claimedAt);
  });

  it("renews for a new lease length", () => {
    task.given([opened(), claimed("agent-a", T0)]).when(renew("agent-a", T0 + MIN, 60 * MIN)).then([renewed("agent-a", T0 + MIN, 60 * MIN)]);
  });

  it("refuses a renewal by another agent", () => {
    const error = task.given([opened(), claimed("agent-a", T0)]).when(renew("agent-b", T0 + MIN)).thenThrows("conflict", /held by agent-a/);
    expect(error.details).toEqual({ reason: "not_holder", kind: "task", name: TASK, holder: "agent-a", expiresAt: iso(T0 + 10 * MIN) });
  });

  it("refuses to renew a lapsed lease: claim again instead", () => {
    const error = task.given([opened(), claimed("agent-a", T0)]).when(renew("agent-a", T0 + 10 * MIN)).thenThrows("conflict", /lapsed/);
    expect(error.details).toMatchObject({ reason: "expired", holder: "agent-a", expiresAt: iso(T0 + 10 * MIN) });
  });

  it("refuses the old holder's renewal after a takeover", () => {
    const takeover = claimed("agent-b", T0 + 11 * MIN, 10 * MIN, { takeoverOf: { holder: "agent-a", expiresAt: iso(T0 + 10 * MIN) } });
    task.given([opened(), claimed("agent-a", T0), takeover]).when(renew("agent-a", T0 + 12 * MIN)).thenThrows("conflict", /held by agent-b/);
  });

  it("refuses to renew what nobody holds", () => {
    const error = task.given([opened()]).when(renew("agent-a", T0)).thenThrows("conflict", /not claimed/);
    expect(error.details).toMatchObject({ reason: "not_held" });
  });

  it("refuses to renew an unknown task", () => {
    task.given([]).when(renew("agent-a", T0)).thenThrows("not_found", /no task/);
  });
});

describe("claim decider: releasing", () => {
  it("releases a held task, which stays open", () => {
    const { state } = task.given([opened(), claimed("agent-a", T0)]).when(release("agent-a", T0 + MIN)).then([released("agent-a")]);
    expect(state).toMatchObject({ holder: null, expiresAt: null, leaseMs: null, done: false, priority: 2 });
    expect(isLive(state, T0 + MIN)).toBe(false);
  });

  it("finishes a task for good", () => {
    const { event, state } = task.given([opened(), claimed("agent-a", T0)]).when(release("agent-a", T0 + MIN, true)).then([released("agent-a", true)]);
    expect(state).toMatchObject({ holder: null, done: true, doneAt: event.time, doneBy: "agent-a" });
  });

  it("lets the holder release after its lease lapsed, if nobody took over", () => {
    task.given([opened(), claimed("agent-a", T0)]).when(release("agent-a", T0 + 60 * MIN, true)).then([released("agent-a", true)]);
  });

  it("refuses a release by another agent", () => {
    const error = task.given([opened(), claimed("agent-a", T0)]).when(release("agent-b", T0 + MIN)).thenThrows("conflict", /held by agent-a/);
    expect(error.details).toMatchObject({ reason: "not_holder", holder: "agent-a" });
  });

  it("refuses the old holder's release after a takeover", () => {
    const takeover = claimed("agent-b", T0 + 11 * MIN, 10 * MIN, { takeoverOf: { holder: "agent-a", expiresAt: iso(T0 + 10 * MIN) } });
    const error = task.given([opened(), claimed("agent-a", T0), takeover]).when(release("agent-a", T0 + 12 * MIN, true)).thenThrows("conflict", /held by agent-b/);
    expect(error.details).toMatchObject({ reason: "not_holder", holder: "agent-b", expiresAt: iso(T0 + 21 * MIN) });
  });

  it("refuses to release twice", () => {
    task.given([opened(), claimed("agent-a", T0), released("agent-a")]).when(release("agent-a", T0 + MIN)).thenThrows("conflict", /not claimed/);
  });

  it("refuses to release a done task", () => {
    const error = task.given([opened(), claimed("agent-a", T0), released("agent-a", true)]).when(release("agent-a", T0 + MIN)).thenThrows("conflict", /done/);
    expect(error.details).toMatchObject({ reason: "done" });
  });

  it("refuses to mark a lock done", () => {
    const command: ClaimCommand = { type: "release", kind: "lock", name: LOCK, agentId: "agent-a", done: true, now: T0 + MIN };
    lock.given([claimed("agent-a", T0, 10 * MIN, { kind: "lock", name: LOCK })]).when(command).thenThrows("invalid", /only a task/);
  });

  it("releases a lock", () => {
    const command: ClaimCommand = { type: "release", kind: "lock", name: LOCK, agentId: "agent-a", done: false, now: T0 + MIN };
    lock.given([claimed("agent-a", T0, 10 * MIN, { kind: "lock", name: LOCK })]).when(command).then([released("agent-a")]);
  });

  it("refuses to release an unknown lock", () => {
    const command: ClaimCommand = { type: "release", kind: "lock", name: LOCK, agentId: "agent-a", done: false, now: T0 };
    lock.given([]).when(command).thenThrows("not_found");
  });
});

describe("claim decider: folding", () => {
  it("applies an event once, however often it is delivered", () => {
    const history = envelopes<ClaimEvent>([opened(), claimed("agent-a", T0), renewed("agent-a", T0 + MIN), released("agent-a", true)], { aggregateId: TASK_ID });
    const once = fold(claimDecider, history);
    expect(fold(claimDecider, [...history, ...history])).toStrictEqual(once);
    for (const event of history) expect(claimDecider.evolve(once, event)).toBe(once);
    expect(history.map((e) => claimDecider.outcomeOf(once, e.id)?.type)).toEqual(["claim.task_opened", "claim.claimed", "claim.renewed", "claim.released"]);
  });
});
