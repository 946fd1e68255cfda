import { describe, expect, it } from "vitest";
import { fold } from "../../commands/decider.js";
import {
  activeVersionOf,
  foldMemoryFields,
  foldMemoryState,
  memoryDecider,
  memoryStatus,
  type MemoryCommand,
  type MemoryState,
} from "../../commands/memory.js";
import type { DomainEventOf, MemoryEvent } from "../../schemas/events.js";
import type { MemoryKind, Scope } from "../../schemas/primitives.js";
import { envelopes, specFor } from "../support/decider-spec.js";

type MemoryDomainEvent = DomainEventOf<MemoryEvent>;

const MEMORY_ID = "mem-1";
const spec = specFor(memoryDecider, { aggregateId: MEMORY_ID });

interface Content {
  title: string;
  body: string;
  kind: MemoryKind;
  tags: string[];
  paths: string[];
  importance: number;
}

const contentOf = (version: number): Content => ({
  title: `Use pnpm (revision ${version})`,
  body: `We use pnpm, not npm. Revision ${version}.`,
  kind: "convention",
  tags: ["tooling"],
  paths: ["package.json"],
  importance: 4,
});

const propose = (version: number, options: { revision?: boolean; scope?: Scope } = {}): MemoryCommand => ({
  type: "propose",
  revision: options.revision ?? version > 1,
  scope: options.scope ?? "app",
  ...contentOf(version),
});

const proposed = (version: number): MemoryDomainEvent => ({
  type: "memory.proposed",
  data: { version, ...contentOf(version) },
});
const approved = (version: number): MemoryDomainEvent => ({ type: "memory.approved", data: { version } });
const rejected = (version: number, reason = "duplicate of mem-0"): MemoryDomainEvent => ({
  type: "memory.rejected",
  data: { version, reason },
});
const superseded = (by: string | null, reason = "replaced"): MemoryDomainEvent => ({
  type: "memory.superseded",
  data: { by, reason },
});
const rolledBack = (fromVersion: number, toVersion: number): MemoryDomainEvent => ({
  type: "memory.rolled_back",
  data: { fromVersion, toVersion },
});

/** v1 approved, then v2 approved over it: the usual starting point for rollbacks. */
const twoApprovedVersions = [proposed(1), approved(1), proposed(2), approved(2)];

const statusesOf = (state: MemoryState) => state.versions.map((v) => [v.version, v.status]);

describe("memory decider: propose", () => {
  it("creates a memory at version 1", () => {
    const { state } = spec.given([]).when(propose(1)).then([proposed(1)]);
    expect(state.id).toBe(MEMORY_ID);
    expect(state.scope).toBe("app");
    expect(statusesOf(state)).toEqual([[1, "proposed"]]);
    expect(memoryStatus(state)).toBe("proposed");
  });

  it("creates a memory in the scope the command names", () => {
    const { event, state } = spec.given([]).when(propose(1, { scope: "team:core" })).then([proposed(1)]);
    expect(event.scope).toBe("team:core");
    expect(state.scope).toBe("team:core");
  });

  it("records who proposed a version, when, in which session and by which event", () => {
    const given = spec.given([proposed(1)], { actor: { kind: "human", id: "alice" }, sessionId: "ses-9" });
    const [version] = given.state.versions;
    expect(version).toMatchObject({
      proposedBy: { kind: "human", id: "alice" },
      proposedAt: given.history[0]?.time,
      proposedInSession: "ses-9",
      eventId: given.history[0]?.id,
      decidedBy: null,
      decidedAt: null,
      rejectReason: null,
    });
  });

  it("revises an approved memory as the next version, leaving the approved one active", () => {
    const { state } = spec.given([proposed(1), approved(1)]).when(propose(2)).then([proposed(2)]);
    expect(statusesOf(state)).toEqual([
      [1, "approved"],
      [2, "proposed"],
    ]);
    expect(state.activeVersion).toBe(1);
    expect(activeVersionOf(state)?.title).toBe(contentOf(1).title);
  });

  it("numbers a revision after every earlier version, rejected ones included", () => {
    spec.given([proposed(1), rejected(1), proposed(2)]).when(propose(3)).then([proposed(3)]);
  });

  it("refuses a revision of a memory that does not exist", () => {
    spec.given([]).when(propose(2, { revision: true })).thenThrows("not_found", /no such memory/);
  });

  it("refuses a revision that moves the memory to another scope", () => {
    spec
      .given([proposed(1), approved(1)])
      .when(propose(2, { scope: "team:core" }))
      .thenThrows("invalid", /scope app.*team:core/);
  });

  it("refuses a revision of a superseded memory, naming its successor", () => {
    const error = spec
      .given([proposed(1), approved(1), superseded("mem-2")])
      .when(propose(2))
      .thenThrows("conflict", /superseded by mem-2/);
    expect(error.details).toEqual({ reason: "superseded", supersededBy: "mem-2" });
  });
});

describe("memory decider: approve", () => {
  it("approves the latest pending version when none is named", () => {
    const { state } = spec.given([proposed(1), proposed(2)]).when({ type: "approve" }).then([approved(2)]);
    expect(state.activeVersion).toBe(2);
    expect(statusesOf(state)).toEqual([
      [1, "proposed"],
      [2, "approved"],
    ]);
  });

  it("approves the version it names, even an older pending one", () => {
    const { state } = spec.given([proposed(1), proposed(2)]).when({ type: "approve", version: 1 }).then([approved(1)]);
    expect(state.activeVersion).toBe(1);
    expect(memoryStatus(state)).toBe("active");
  });

  it("records who approved and when", () => {
    const { event, state } = spec.given([proposed(1)]).when({ type: "approve" }).then([approved(1)]);
    expect(state.versions[0]).toMatchObject({ decidedBy: event.actor, decidedAt: event.time, status: "approved" });
  });

  it("moves the active version to an approved revision", () => {
    const { before, state } = spec.given([proposed(1), approved(1), proposed(2)]).when({ type: "approve" }).then([approved(2)]);
    expect(before.activeVersion).toBe(1);
    expect(state.activeVersion).toBe(2);
  });

  it("refuses a version that does not exist", () => {
    const error = spec.given([proposed(1)]).when({ type: "approve", version: 7 }).thenThrows("not_found", /no version 7/);
    expect(error.details).toEqual({ version: 7 });
  });

  it("refuses to approve a version twice", () => {
    const error = spec.given([proposed(1), approved(1)]).when({ type: "approve", version: 1 }).thenThrows("conflict", /already approved/);
    expect(error.details).toEqual({ reason: "already_approved", version: 1 });
  });

  it("refuses to approve a rejected version", () => {
    const error = spec.given([proposed(1), rejected(1)]).when({ type: "approve", version: 1 }).thenThrows("conflict", /already rejected/);
    expect(error.details).toEqual({ reason: "already_rejected", version: 1 });
  });

  it("refuses a memory that does not exist", () => {
    spec.given([]).when({ type: "approve" }).thenThrows("not_found");
    spec.given([]).when({ type: "approve", version: 1 }).thenThrows("not_found");
  });

  it("refuses when no version is pending", () => {
    const error = spec.given([proposed(1), approved(1)]).when({ type: "approve" }).thenThrows("conflict", /no pending version to approve/);
    expect(error.details).toEqual({ reason: "no_pending_version" });
  });

  it("refuses a superseded memory even if a version is pending", () => {
    spec.given([proposed(1), superseded(null)]).when({ type: "approve" }).thenThrows("conflict", /superseded/);
  });
});

describe("memory decider: reject", () => {
  const reason = "contradicts the build docs";

  it("rejects the latest pending version when none is named, with the reason", () => {
    const { state } = spec
      .given([proposed(1), approved(1), proposed(2)])
      .when({ type: "reject", reason })
      .then([rejected(2, reason)]);
    expect(state.versions[1]).toMatchObject({ status: "rejected", rejectReason: reason });
    expect(state.activeVersion).toBe(1);
    expect(memoryStatus(state)).toBe("active");
  });

  it("rejects the version it names", () => {
    const { state } = spec.given([proposed(1), proposed(2)]).when({ type: "reject", version: 1, reason }).then([rejected(1, reason)]);
    expect(statusesOf(state)).toEqual([
      [1, "rejected"],
      [2, "proposed"],
    ]);
  });

  it("refuses a version that does not exist", () => {
    spec.given([proposed(1)]).when({ type: "reject", version: 3, reason }).thenThrows("not_found", /no version 3/);
  });

  it("refuses to reject a version twice", () => {
    const error = spec.given([proposed(1), rejected(1)]).when({ type: "reject", version: 1, reason }).thenThrows("conflict", /already rejected/);
    expect(error.details).toEqual({ reason: "already_rejected", version: 1 });
  });

  it("refuses to reject an approved version", () => {
    const error = spec.given([proposed(1), approved(1)]).when({ type: "reject", version: 1, reason }).thenThrows("conflict", /already approved/);
    expect(error.details).toEqual({ reason: "already_approved", version: 1 });
  });

  it("refuses a memory that does not exist", () => {
    spec.given([]).when({ type: "reject", reason }).thenThrows("not_found");
  });

  it("refuses when no version is pending", () => {
    spec.given([proposed(1), rejected(1)]).when({ type: "reject", reason }).thenThrows("conflict", /no pending version to reject/);
  });

  it("refuses a superseded memory", () => {
    spec.given([proposed(1), superseded("mem-2")]).when({ type: "reject", reason }).thenThrows("conflict", /superseded/);
  });
});

describe("memory decider: supersede", () => {
  it("supersedes a memory by another one", () => {
    const { state } = spec
      .given([proposed(1), approved(1)])
      .when({ type: "supersede", by: "mem-2", reason: "merged" })
      .then([superseded("mem-2", "merged")]);
    expect(state.superseded).toMatchObject({ by: "mem-2", reason: "merged" });
    expect(memoryStatus(state)).toBe("superseded");
    // Superseding retires the memory; it does not rewrite which version was active.
    expect(state.activeVersion).toBe(1);
  });

  it("supersedes a memory by none (retires it), even one with only a proposal", () => {
    const { state } = spec.given([proposed(1)]).when({ type: "supersede", by: null, reason: "obsolete" }).then([superseded(null, "obsolete")]);
    expect(state.superseded?.by).toBeNull();
    expect(memoryStatus(state)).toBe("superseded");
  });

  it("refuses to supersede a superseded memory", () => {
    spec
      .given([proposed(1), approved(1), superseded("mem-2")])
      .when({ type: "supersede", by: "mem-3", reason: "again" })
      .thenThrows("conflict", /is superseded by mem-2/);
  });

  it("refuses a memory that supersedes itself", () => {
    spec
      .given([proposed(1), approved(1)])
      .when({ type: "supersede", by: MEMORY_ID, reason: "loop" })
      .thenThrows("invalid", /itself/);
  });

  it("refuses a memory that does not exist", () => {
    spec.given([]).when({ type: "supersede", by: null, reason: "gone" }).thenThrows("not_found");
  });
});

describe("memory decider: rollback", () => {
  it("rolls back to an earlier approved version", () => {
    const { state } = spec.given(twoApprovedVersions).when({ type: "rollback", toVersion: 1 }).then([rolledBack(2, 1)]);
    expect(state.activeVersion).toBe(1);
    expect(activeVersionOf(state)?.title).toBe(contentOf(1).title);
  });

  it("rolls forward again to a later approved version after a rollback", () => {
    spec
      .given([...twoApprovedVersions, rolledBack(2, 1)])
      .when({ type: "rollback", toVersion: 2 })
      .then([rolledBack(1, 2)]);
  });

  it("never edits history: the versions stay as they were, only the active version moves", () => {
    const { before, state } = spec.given(twoApprovedVersions).when({ type: "rollback", toVersion: 1 }).then([rolledBack(2, 1)]);
    expect(state.versions).toStrictEqual(before.versions);
    const { activeVersion: _a, updatedAt: _u, applied: _ap, ...restAfter } = state;
    const { activeVersion: _b, updatedAt: _v, applied: _bp, ...restBefore } = before;
    expect(restAfter).toStrictEqual(restBefore);
    expect([before.activeVersion, state.activeVersion]).toEqual([2, 1]);
  });

  it("refuses a version that never existed", () => {
    const error = spec.given(twoApprovedVersions).when({ type: "rollback", toVersion: 9 }).thenThrows("not_found", /no version 9/);
    expect(error.details).toEqual({ version: 9 });
  });

  it("refuses a version that was never approved (pending or rejected)", () => {
    const pending = spec.given([proposed(1), approved(1), proposed(2)]).when({ type: "rollback", toVersion: 2 }).thenThrows("conflict", /never approved/);
    expect(pending.details).toEqual({ reason: "never_approved", version: 2 });
    spec.given([proposed(1), approved(1), proposed(2), rejected(2)]).when({ type: "rollback", toVersion: 2 }).thenThrows("conflict", /never approved/);
  });

  it("refuses the version that is already active", () => {
    const error = spec.given(twoApprovedVersions).when({ type: "rollback", toVersion: 2 }).thenThrows("conflict", /already active/);
    expect(error.details).toEqual({ reason: "already_active", version: 2 });
  });

  it("refuses a memory with no active version", () => {
    const onlyPending = spec.given([proposed(1)]).when({ type: "rollback", toVersion: 1 }).thenThrows("conflict", /no active version/);
    expect(onlyPending.details).toEqual({ reason: "no_active_version" });
    spec.given([proposed(1), rejected(1), proposed(2)]).when({ type: "rollback", toVersion: 1 }).thenThrows("conflict", /no active version/);
  });

  it("refuses a superseded memory", () => {
    spec
      .given([...twoApprovedVersions, superseded(null)])
      .when({ type: "rollback", toVersion: 1 })
      .thenThrows("conflict", /superseded/);
  });

  it("refuses a memory that does not exist", () => {
    spec.given([]).when({ type: "rollback", toVersion: 1 }).thenThrows("not_found");
  });
});

describe("memory decider: evolve", () => {
  const fullHistory = envelopes<MemoryEvent>(
    [proposed(1), approved(1), proposed(2), rejected(2), proposed(3), approved(3), rolledBack(3, 1), superseded("mem-2")],
    { aggregateId: MEMORY_ID },
  );

  it("applies an event once: folding every event twice leaves the same state as folding it once", () => {
    const once = fold(memoryDecider, fullHistory);
    const twice = fold(
      memoryDecider,
      fullHistory.flatMap((event) => [event, event]),
    );
    expect(twice).toStrictEqual(once);
  });

  it("returns the very same state when an already-applied event is delivered again", () => {
    for (let n = 1; n <= fullHistory.length; n++) {
      const state = fold(memoryDecider, fullHistory.slice(0, n));
      const redelivered = fullHistory[n - 1] as MemoryEvent;
      expect(memoryDecider.evolve(state, redelivered)).toBe(state);
    }
  });

  it("redelivering an old event after newer ones changes nothing", () => {
    const state = fold(memoryDecider, fullHistory);
    for (const event of fullHistory) expect(memoryDecider.evolve(state, event)).toBe(state);
  });

  it("keeps the creation time and moves the update time", () => {
    const state = fold(memoryDecider, fullHistory);
    expect(state.createdAt).toBe(fullHistory[0]?.time);
    expect(state.updatedAt).toBe(fullHistory.at(-1)?.time);
  });

  it("remembers the outcome of every applied event, so retries answer as the first attempt did", () => {
    const state = fold(memoryDecider, fullHistory);
    expect(fullHistory.map((e) => memoryDecider.outcomeOf(state, e.id))).toEqual([
      { type: "memory.proposed", version: 1 },
      { type: "memory.approved", version: 1 },
      { type: "memory.proposed", version: 2 },
      { type: "memory.rejected", version: 2 },
      { type: "memory.proposed", version: 3 },
      { type: "memory.approved", version: 3 },
      { type: "memory.rolled_back", version: 1 },
      { type: "memory.superseded", version: null },
    ]);
    expect(memoryDecider.outcomeOf(state, "evt-never")).toBeUndefined();
  });

  it("foldMemoryFields (the projections' fold) is the fold without the memo: same fields, the memo passed along untouched, the input unchanged", () => {
    const memo = Object.freeze({});
    let fields: MemoryState = { ...memoryDecider.initialState(), applied: memo };
    let state = memoryDecider.initialState();
    for (const event of fullHistory) {
      const before = structuredClone(fields);
      const next = foldMemoryFields(fields, event);
      expect(fields).toStrictEqual(before);
      fields = next;
      state = foldMemoryState(state, event);
      expect(fields.applied).toBe(memo);
      expect({ ...fields, applied: null }).toStrictEqual({ ...state, applied: null });
    }
    // It does not consult the memo either: deduplicating is the projection's (by stream sequence).
    const again = foldMemoryFields(fields, fullHistory[2]!);
    expect(again.versions).toHaveLength(fields.versions.length + 1);
  });
});

describe("memoryStatus", () => {
  const statusAfter = (events: MemoryDomainEvent[]) => memoryStatus(spec.given(events).state);

  it("is unknown before the first event", () => {
    expect(statusAfter([])).toBe("unknown");
    expect(memoryStatus(memoryDecider.initialState())).toBe("unknown");
  });

  it("is proposed while no version was ever approved and one is pending", () => {
    expect(statusAfter([proposed(1)])).toBe("proposed");
    expect(statusAfter([proposed(1), rejected(1), proposed(2)])).toBe("proposed");
  });

  it("is active once a version is approved, pending revisions or not", () => {
    expect(statusAfter([proposed(1), approved(1)])).toBe("active");
    expect(statusAfter([proposed(1), approved(1), proposed(2)])).toBe("active");
    expect(statusAfter([...twoApprovedVersions, rolledBack(2, 1)])).toBe("active");
  });

  it("is rejected when every version was rejected", () => {
    expect(statusAfter([proposed(1), rejected(1)])).toBe("rejected");
    expect(statusAfter([proposed(1), rejected(1), proposed(2), rejected(2)])).toBe("rejected");
  });

  it("is superseded once superseded, whatever came before", () => {
    expect(statusAfter([proposed(1), superseded(null)])).toBe("superseded");
    expect(statusAfter([proposed(1), approved(1), superseded("mem-2")])).toBe("superseded");
  });
});

describe("memory decider: scopeOf", () => {
  it("writes a new memory under the scope its proposal names", () => {
    expect(memoryDecider.scopeOf(propose(1, { scope: "agent:a1" }), memoryDecider.initialState())).toBe("agent:a1");
  });

  it("writes every later event under the scope the memory already has", () => {
    const { state } = spec.given([proposed(1)], { scope: "team:core" });
    expect(memoryDecider.scopeOf({ type: "approve" }, state)).toBe("team:core");
    expect(memoryDecider.scopeOf(propose(2, { scope: "org" }), state)).toBe("team:core");
  });
});

describe("specFor (the helper these specs rely on)", () => {
  it("fails a then() whose expected events differ from the decided ones", () => {
    expect(() => spec.given([proposed(1)]).when({ type: "approve" }).then([approved(2)])).toThrow(/decided events/);
  });

  it("fails a thenThrows() when decide does not refuse, or refuses with another code or message", () => {
    expect(() => spec.given([proposed(1)]).when({ type: "approve" }).thenThrows("conflict")).toThrow(/should have refused/);
    expect(() => spec.given([]).when({ type: "approve" }).thenThrows("conflict")).toThrow(/error code/);
    expect(() => spec.given([]).when({ type: "approve" }).thenThrows("not_found", /nothing like this/)).toThrow();
  });

  it("fails when decide mutates the state, on a decision and on a refusal", () => {
    const mutating = specFor({
      ...memoryDecider,
      decide(command: MemoryCommand, state: MemoryState) {
        state.updatedAt = "tampered";
        return memoryDecider.decide(command, state);
      },
    });
    expect(() => mutating.given([]).when(propose(1)).then([proposed(1)])).toThrow(/state after deciding/);
    expect(() => mutating.given([]).when({ type: "approve" }).thenThrows("not_found")).toThrow(/state after a refused command/);
  });

  it("fails when decide throws something other than a MemledgerError", () => {
    const broken = specFor({
      ...memoryDecider,
      decide(): never {
        throw new TypeError("boom");
      },
    });
    expect(() => broken.given([]).when({ type: "approve" }).thenThrows("not_found")).toThrow(/expected a MemledgerError/);
  });

  it("refuses a given history the event schema would refuse", () => {
    expect(() => spec.given([{ type: "memory.approved", data: { version: 0 } }])).toThrow();
  });
});
