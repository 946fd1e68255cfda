import { describe, expect, it } from "vitest";
import { decodeEvent, decodeEventStructural, encodeEvent, parseStoredEvent, upcast } from "../../events/upcast.js";
import { CURRENT_SCHEMA_VERSION, LedgerEvent, MemoryEvent, ProposalEvent, RunEvent, SessionEvent, type DomainEventOf } from "../../schemas/events.js";
import { MemledgerError } from "../../schemas/errors.js";
import { envelopes } from "../support/decider-spec.js";

/** A memory.proposed exactly as v1 wrote it: before importance and file paths existed. */
const storedV1Proposal = () => ({
  id: "evt-v1",
  type: "memory.proposed",
  schemaVersion: 1,
  aggregateId: "mem-old",
  app: "app1",
  scope: "app",
  actor: { kind: "agent", id: "agent-a" },
  sessionId: null,
  transcriptRef: null,
  git: null,
  causationId: null,
  correlationId: "evt-v1",
  time: "2024-06-01T12:00:00.000Z",
  data: { version: 1, title: "Use pnpm", body: "We use pnpm, not npm.", kind: "convention", tags: ["tooling"] },
});

/** One event of every memory and session type written today. */
const oneOfEachType: DomainEventOf<LedgerEvent>[] = [
  {
    type: "memory.proposed",
    data: { version: 1, title: "Use pnpm", body: "We use pnpm.\n\n- not npm", kind: "convention", tags: ["tooling"], paths: ["package.json"], importance: 5 },
  },
  { type: "memory.approved", data: { version: 1 } },
  { type: "memory.rejected", data: { version: 2, reason: "duplicate" } },
  { type: "memory.superseded", data: { by: null, reason: "obsolete" } },
  { type: "memory.rolled_back", data: { fromVersion: 2, toVersion: 1 } },
  { type: "memory.reinstated", data: { reason: "revert of consolidation run r1" } },
  { type: "session.started", data: { agentId: "agent-a", task: "triage", branch: "main", worktree: null } },
  { type: "session.ended", data: { summary: null } },
  {
    type: "session.exposed",
    data: { receipts: [{ verb: "search", time: "2026-11-29T14:00:00.000Z", tokens: 42, memories: [{ memoryId: "m1", version: 2, rank: 1, channel: "bm25", origin: "app" }] }] },
  },
  {
    type: "run.started",
    data: {
      trigger: { kind: "dream", forced: false },
      phases: ["prune", "merge"],
      asOfSeq: 41,
      gates: { lastRunId: null, lastRunAt: null, sessionsSince: 6, forced: false },
      holder: "instance-1",
      settings: { minHoursSinceLastRun: 24, repoDir: null, llm: false },
    },
  },
  { type: "run.step_completed", data: { phase: "prune", proposals: 1, report: null } },
  { type: "run.completed", data: { proposals: { prune: 1, merge: 0 }, index: { lines: 12, bytes: 900, listed: 10, withinLimits: true } } },
  { type: "run.reverted", data: { proposals: 1, reason: "too eager" } },
  {
    type: "proposal.made",
    data: {
      runId: "r1",
      phase: "prune",
      key: "m1",
      change: { action: "supersede", memory: { memoryId: "m1", version: 2 } },
      evidence: { sessions: ["s1"], transcripts: [], memories: [{ memoryId: "m1", version: 2 }], counts: { retrievals: 0 }, prevalence: null, scores: {}, summary: "never retrieved" },
      reason: "never retrieved in 90 days",
    },
  },
  { type: "proposal.accepted", data: { runId: "r1", reason: null } },
  { type: "proposal.applied", data: { runId: "r1", events: [{ memoryId: "m1", eventId: "e1", seq: 50, type: "memory.superseded" }] } },
  { type: "proposal.rejected", data: { runId: "r1", reason: "still useful" } },
  { type: "proposal.reverted", data: { runId: "r1", events: [{ memoryId: "m1", eventId: "e2", seq: 60, type: "memory.reinstated" }] } },
];

const bytesOf = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

const expectInvalid = (parse: () => unknown, message?: RegExp) => {
  let thrown: unknown;
  try {
    parse();
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(MemledgerError);
  expect((thrown as MemledgerError).code).toBe("invalid");
  if (message) expect((thrown as MemledgerError).message).toMatch(message);
};

describe("upcasting stored events", () => {
  it("reads a v1 memory.proposed as today's (v3) with the neutral importance, no paths and no provenance", () => {
    const event = parseStoredEvent(storedV1Proposal());
    expect(event.schemaVersion).toBe(3);
    expect(event.type).toBe("memory.proposed");
    expect(event.data).toStrictEqual({
      version: 1,
      title: "Use pnpm",
      body: "We use pnpm, not npm.",
      kind: "convention",
      tags: ["tooling"],
      importance: 3,
      paths: [],
    });
  });

  it("decodes a v1 memory.proposed from its stored bytes into today's shape", () => {
    const stored = storedV1Proposal();
    const event = decodeEvent(bytesOf(stored));
    const { schemaVersion: _v, data: _d, ...envelope } = stored;
    expect(event).toMatchObject({ ...envelope, schemaVersion: 3, data: { importance: 3, paths: [] } });
  });

  it("reads a v2 memory.proposed as v3 with its data unchanged (v3 only added the optional org provenance)", () => {
    const v2 = { ...storedV1Proposal(), schemaVersion: 2, data: { ...storedV1Proposal().data, importance: 4, paths: ["a.ts"] } };
    const event = parseStoredEvent(v2);
    expect(event.schemaVersion).toBe(3);
    expect(event.data).toStrictEqual(v2.data);
    expect("provenance" in event.data).toBe(false);
  });

  it("does not touch the stored object it lifts", () => {
    const stored = storedV1Proposal();
    upcast(stored);
    expect(stored).toStrictEqual(storedV1Proposal());
  });

  it("leaves events already at today's version as they are", () => {
    const [current] = envelopes([oneOfEachType[0] as DomainEventOf<LedgerEvent>]);
    expect(upcast(current)).toBe(current);
  });

  it("round-trips current events through encode and decode", () => {
    const events = envelopes<LedgerEvent>(oneOfEachType, { sessionId: "ses-1", git: { branch: "main" }, causationId: "cmd-1" });
    for (const event of events) expect(decodeEvent(encodeEvent(event))).toStrictEqual(event);
  });

  it("refuses an unknown event type", () => {
    const [event] = envelopes([oneOfEachType[1] as DomainEventOf<LedgerEvent>]);
    expectInvalid(() => parseStoredEvent({ ...event, type: "memory.teleported" }));
    expectInvalid(() => decodeEvent(bytesOf({ ...event, type: "memory.teleported" })));
  });

  it("refuses malformed stored events with code invalid", () => {
    const [approved] = envelopes([oneOfEachType[1] as DomainEventOf<LedgerEvent>]);
    const [proposed] = envelopes([oneOfEachType[0] as DomainEventOf<LedgerEvent>]);
    const { importance: _i, ...dataWithoutImportance } = (proposed as Extract<LedgerEvent, { type: "memory.proposed" }>).data;
    const { actor: _a, ...withoutActor } = approved as LedgerEvent;

    expectInvalid(() => parseStoredEvent(null));
    expectInvalid(() => parseStoredEvent("memory.approved"));
    expectInvalid(() => parseStoredEvent(withoutActor));
    expectInvalid(() => parseStoredEvent({ ...approved, data: { version: 0 } }));
    expectInvalid(() => parseStoredEvent({ ...approved, surprise: true }));
    expectInvalid(() => parseStoredEvent({ ...approved, schemaVersion: "1" }));
    // Only v1 predates importance: a v2 event without it is damaged, not old.
    expectInvalid(() => parseStoredEvent({ ...proposed, data: dataWithoutImportance }));
    // A version this reader does not know, from the future or from before the first.
    expectInvalid(() => parseStoredEvent({ ...approved, schemaVersion: 2 }));
    expectInvalid(() => parseStoredEvent({ ...proposed, schemaVersion: 0 }), /no upcaster/);
  });

  it("the structural decode of replays returns what the strict decode returns, and refuses what would corrupt a read model", () => {
    const events = envelopes<LedgerEvent>(oneOfEachType, { sessionId: "ses-1", git: { branch: "main" }, causationId: "cmd-1" });
    for (const event of events) expect(decodeEventStructural(encodeEvent(event))).toStrictEqual(decodeEvent(encodeEvent(event)));
    expect(decodeEventStructural(bytesOf(storedV1Proposal()))).toStrictEqual(decodeEvent(bytesOf(storedV1Proposal())));

    const [approved] = envelopes([oneOfEachType[1] as DomainEventOf<LedgerEvent>]);
    const [proposed] = envelopes([oneOfEachType[0] as DomainEventOf<LedgerEvent>]);
    const proposedData = (proposed as Extract<LedgerEvent, { type: "memory.proposed" }>).data;
    const { importance: _i, ...dataWithoutImportance } = proposedData;
    const { actor: _a, ...withoutActor } = approved as LedgerEvent;
    for (const damaged of [
      null,
      "memory.approved",
      withoutActor,
      { ...approved, type: "memory.teleported" },
      { ...approved, surprise: true },
      { ...approved, schemaVersion: "1" },
      { ...approved, schemaVersion: 2 },
      { ...approved, data: {} },
      { ...approved, data: { version: "1" } },
      { ...approved, actor: { kind: "robot", id: "x" } },
      { ...proposed, data: dataWithoutImportance },
      { ...proposed, data: { ...proposedData, title: null } },
      { ...proposed, data: { ...proposedData, tags: ["ok", 3] } },
      { ...proposed, data: { ...proposedData, kind: "rumour" } },
    ]) {
      expectInvalid(() => decodeEventStructural(bytesOf(damaged)));
    }
    expectInvalid(() => decodeEventStructural(new TextEncoder().encode("{not json")));
    // What the structural check leaves to the append path: refinements such as a version of 0.
    expect(decodeEventStructural(bytesOf({ ...approved, data: { version: 0 } })).type).toBe("memory.approved");
    expectInvalid(() => decodeEvent(bytesOf({ ...approved, data: { version: 0 } })));
  });

  it("refuses stored bytes that are not JSON with code invalid", () => {
    expectInvalid(() => decodeEvent(new TextEncoder().encode("{not json")));
    expectInvalid(() => decodeEvent(new Uint8Array()));
  });

  it("knows today's schema version of every event type, as its schema spells it", () => {
    const types = LedgerEvent.options.map((option) => option.shape.type.value);
    expect(Object.keys(CURRENT_SCHEMA_VERSION).sort()).toEqual([...types].sort());
    for (const option of LedgerEvent.options) {
      expect(CURRENT_SCHEMA_VERSION[option.shape.type.value], option.shape.type.value).toBe(option.shape.schemaVersion.value);
    }
    expect(Object.values(CURRENT_SCHEMA_VERSION).every((v) => Number.isInteger(v) && v >= 1)).toBe(true);
    // memory.proposed is the one type with history: v1 and v2 are still in old logs, so v3 must stay current.
    expect(CURRENT_SCHEMA_VERSION["memory.proposed"]).toBe(3);
  });

  it("has a round-trip sample of every memory, session, run and proposal event type", () => {
    const familyTypes = [...MemoryEvent.options, ...SessionEvent.options, ...RunEvent.options, ...ProposalEvent.options].map((option) => option.shape.type.value);
    expect(oneOfEachType.map((e) => e.type).sort()).toEqual(familyTypes.sort());
  });
});
