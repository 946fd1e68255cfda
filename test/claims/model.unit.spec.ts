import { describe, expect, it } from "vitest";
import { claimDecider, claimIdOf } from "../../commands/claim.js";
import { fold } from "../../commands/decider.js";
import { claimCommands, claimKeys, openTaskScore, parseState, planBatch, serializeState } from "../../projections/claims/index.js";
import type { ClaimEvent, DomainEventOf } from "../../schemas/events.js";
import { envelopes } from "../support/decider-spec.js";

// Pure: no Redis here. The commands a batch yields are derived from the decider's own fold.
const keys = claimKeys("kp", "app1").generation("g1");
const ID = claimIdOf("task", "t1");
const exp = (iso: string) => Date.parse(iso);

const history = envelopes<ClaimEvent>(
  [
    { type: "claim.task_opened", data: { name: "t1", title: "T one", priority: 2 } },
    { type: "claim.claimed", data: { kind: "task", name: "t1", holder: "agent-a", leaseMs: 600_000, expiresAt: "2025-01-01T00:20:00.000Z", takeoverOf: null, priority: null } },
    {
      type: "claim.claimed",
      data: { kind: "task", name: "t1", holder: "agent-b", leaseMs: 600_000, expiresAt: "2025-01-01T00:40:00.000Z", takeoverOf: { holder: "agent-a", expiresAt: "2025-01-01T00:20:00.000Z" }, priority: null },
    },
    { type: "claim.released", data: { holder: "agent-b", done: true } },
  ] satisfies DomainEventOf<ClaimEvent>[],
  { aggregateId: ID },
);
const states = history.map((_, i) => fold(claimDecider, history.slice(0, i + 1)));
const initial = claimDecider.initialState();

describe("claims projection: commands derived from state", () => {
  it("keys every generation under the app's root, with a hash tag", () => {
    expect(keys.claim(ID)).toBe("kp:app1:{g1}:claim:task-t1");
    expect(keys.checkpoint).toBe("kp:app1:{g1}:checkpoint");
    expect(claimKeys("k*p", "app1").pattern).toBe("k\\*p:app1:*");
  });

  it("an opened task joins the open tasks by priority, and nobody holds it", () => {
    const commands = claimCommands(keys, initial, states[0]!, history[0]!.time);
    expect(commands).toContainEqual(["ZADD", keys.openTasks, openTaskScore(2, history[0]!.time), ID]);
    expect(commands).toContainEqual(["ZREM", keys.live, ID]);
    expect(commands.some(([c, k]) => c === "HSET" && k === keys.claim(ID))).toBe(false);
  });

  it("a claim writes the claim hash expiring with the lease and the holder's set", () => {
    const commands = claimCommands(keys, states[0]!, states[1]!, history[1]!.time);
    expect(commands).toContainEqual(["PEXPIREAT", keys.claim(ID), exp("2025-01-01T00:20:00.000Z")]);
    expect(commands).toContainEqual(["ZADD", keys.agent("agent-a"), exp("2025-01-01T00:20:00.000Z"), ID]);
    expect(commands).toContainEqual(["PEXPIREAT", keys.agent("agent-a"), exp("2025-01-01T00:20:00.000Z"), "GT"]);
    expect(commands).toContainEqual(["ZREMRANGEBYSCORE", keys.agent("agent-a"), "-inf", exp(history[1]!.time)]);
  });

  it("a takeover removes the claim from the previous holder's set", () => {
    const commands = claimCommands(keys, states[1]!, states[2]!, history[2]!.time);
    expect(commands).toContainEqual(["ZREM", keys.agent("agent-a"), ID]);
    expect(commands).toContainEqual(["ZADD", keys.agent("agent-b"), exp("2025-01-01T00:40:00.000Z"), ID]);
  });

  it("a done release drops the claim, the holder's membership and the open task", () => {
    const commands = claimCommands(keys, states[2]!, states[3]!, history[3]!.time);
    expect(commands).toEqual([
      ["SET", keys.state(ID), serializeState(states[3]!)],
      ["DEL", keys.claim(ID)],
      ["ZREM", keys.agent("agent-b"), ID],
      ["ZREM", keys.live, ID],
      ["DEL", keys.task(ID)],
      ["ZREM", keys.openTasks, ID],
    ]);
  });

  it("plans a batch the same whether it is applied whole or resumed from stored state", () => {
    const stored = history.map((event, i) => ({ seq: i + 10, event }));
    const whole = planBatch(keys, stored, 0, () => parseState(null));
    expect(whole.lastSeq).toBe(13);
    expect(whole.states.get(ID)).toStrictEqual(states[3]);

    const firstHalf = planBatch(keys, stored.slice(0, 2), 0, () => parseState(null));
    const saved = serializeState(firstHalf.states.get(ID)!);
    const secondHalf = planBatch(keys, stored, firstHalf.lastSeq, () => parseState(saved));
    const { applied: _a, ...resumed } = secondHalf.states.get(ID)!;
    const { applied: _b, ...expected } = states[3]!;
    expect(resumed).toStrictEqual(expected);
    expect([...firstHalf.commands, ...secondHalf.commands].length).toBe(whole.commands.length);
    // At or below the checkpoint: nothing to do.
    expect(planBatch(keys, stored, 13, () => parseState(null)).commands).toEqual([]);
  });
});
