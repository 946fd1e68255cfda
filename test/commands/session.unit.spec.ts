import { describe, expect, it } from "vitest";
import { fold } from "../../commands/decider.js";
import { sessionDecider, type SessionCommand } from "../../commands/session.js";
import type { DomainEventOf, SessionEvent } from "../../schemas/events.js";
import { envelopes, specFor } from "../support/decider-spec.js";

type SessionDomainEvent = DomainEventOf<SessionEvent>;

const SESSION_ID = "ses-1";
const spec = specFor(sessionDecider, { aggregateId: SESSION_ID, scope: "agent:agent-a" });

const start: SessionCommand = { type: "start", agentId: "agent-a", task: "fix the flaky test", branch: "fix/flaky", worktree: "/w/fix" };
const started: SessionDomainEvent = {
  type: "session.started",
  data: { agentId: "agent-a", task: "fix the flaky test", branch: "fix/flaky", worktree: "/w/fix" },
};
const ended = (summary: string | null): SessionDomainEvent => ({ type: "session.ended", data: { summary } });

describe("session decider", () => {
  it("starts a session", () => {
    const { event, state } = spec.given([]).when(start).then([started]);
    expect(event.scope).toBe("agent:agent-a");
    expect(state).toMatchObject({
      id: SESSION_ID,
      agentId: "agent-a",
      task: "fix the flaky test",
      branch: "fix/flaky",
      worktree: "/w/fix",
      startedAt: event.time,
      endedAt: null,
      summary: null,
    });
  });

  it("starts a session outside any branch or worktree", () => {
    const bare: SessionCommand = { type: "start", agentId: "agent-b", task: "triage", branch: null, worktree: null };
    spec.given([]).when(bare).then([{ type: "session.started", data: { agentId: "agent-b", task: "triage", branch: null, worktree: null } }]);
  });

  it("refuses to start a session twice", () => {
    const error = spec.given([started]).when(start).thenThrows("conflict", /already started/);
    expect(error.details).toEqual({ reason: "already_started" });
  });

  it("refuses to start an ended session again", () => {
    spec.given([started, ended(null)]).when(start).thenThrows("conflict", /already started/);
  });

  it("ends a session with a summary", () => {
    const { event, state } = spec.given([started]).when({ type: "end", summary: "fixed it" }).then([ended("fixed it")]);
    expect(state.endedAt).toBe(event.time);
    expect(state.summary).toBe("fixed it");
    expect(state.startedAt).not.toBe(state.endedAt);
  });

  it("ends a session without a summary", () => {
    const { state } = spec.given([started]).when({ type: "end", summary: null }).then([ended(null)]);
    expect(state.endedAt).not.toBeNull();
    expect(state.summary).toBeNull();
  });

  it("refuses to end a session that does not exist", () => {
    spec.given([]).when({ type: "end", summary: null }).thenThrows("not_found", /no such session/);
  });

  it("refuses to end a session twice", () => {
    const error = spec.given([started, ended("done")]).when({ type: "end", summary: "again" }).thenThrows("conflict", /already ended/);
    expect(error.details).toEqual({ reason: "already_ended" });
  });

  it("applies an event once, however often it is delivered", () => {
    const history = envelopes<SessionEvent>([started, ended("done")], { aggregateId: SESSION_ID, scope: "agent:agent-a" });
    const once = fold(sessionDecider, history);
    expect(fold(sessionDecider, [...history, ...history])).toStrictEqual(once);
    for (const event of history) expect(sessionDecider.evolve(once, event)).toBe(once);
    expect(history.map((e) => sessionDecider.outcomeOf(once, e.id))).toEqual([
      { type: "session.started", version: null },
      { type: "session.ended", version: null },
    ]);
  });
});

describe("session decider: exposure receipts", () => {
  const receipts = [{ verb: "hydrate" as const, time: "2026-11-29T14:00:00.000Z", tokens: 120, memories: [{ memoryId: "m1", version: 1, rank: 1, channel: "relevant", origin: "app" as const }] }];
  const exposed: SessionDomainEvent = { type: "session.exposed", data: { receipts } };

  it("records what a started session was shown", () => {
    spec.given([started]).when({ type: "expose", receipts }).then([exposed]);
  });

  it("records it after the session ended too (what was shown stays a fact)", () => {
    spec.given([started, ended("done")]).when({ type: "expose", receipts }).then([exposed]);
  });

  it("refuses receipts for a session that does not exist", () => {
    spec.given([]).when({ type: "expose", receipts }).thenThrows("not_found", /no such session/);
  });

  it("folds receipts as a no-op: the session's state is what it was without them", () => {
    const history = envelopes<SessionEvent>([started, exposed, exposed, ended("done"), exposed], { aggregateId: SESSION_ID, scope: "agent:agent-a" });
    const withReceipts = fold(sessionDecider, history);
    expect(withReceipts).toStrictEqual(fold(sessionDecider, history.filter((e) => e.type !== "session.exposed")));
    for (const event of history.filter((e) => e.type === "session.exposed")) expect(sessionDecider.evolve(withReceipts, event)).toBe(withReceipts);
  });
});

describe("session decider: scopeOf", () => {
  it("writes a start under the scope of the agent the command names", () => {
    expect(sessionDecider.scopeOf({ ...start, agentId: "agent-z" }, sessionDecider.initialState())).toBe("agent:agent-z");
  });

  it("writes an end under the scope of the agent that started the session", () => {
    const { state } = spec.given([started]);
    expect(sessionDecider.scopeOf({ type: "end", summary: null }, state)).toBe("agent:agent-a");
  });
});
