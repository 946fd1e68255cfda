import { describe, expect, it } from "vitest";
import { promotionDecider, promotionIdOf, type PromotionCommand } from "../../commands/promotion.js";
import type { DomainEventOf, MemoryEvent, MemoryPromotionRequested } from "../../schemas/events.js";
import { envelopes, specFor } from "../support/decider-spec.js";
import { fold } from "../../commands/decider.js";

type Event = DomainEventOf<MemoryEvent | MemoryPromotionRequested>;

const MEMORY_ID = "mem-1";
const APP = "app1";
const spec = specFor(promotionDecider, { aggregateId: MEMORY_ID, app: APP });
const history = (events: Event[]) => envelopes<MemoryEvent | MemoryPromotionRequested>(events, { aggregateId: MEMORY_ID, app: APP });

const proposed = (version: number): Event => ({
  type: "memory.proposed",
  data: { version, title: `Retry webhooks (v${version})`, body: "Retry with exponential backoff.", kind: "convention", tags: [], paths: [], importance: 3 },
});
const approved = (version: number): Event => ({ type: "memory.approved", data: { version } });
const requested = (version: number, reason: string | null = null): Event => ({
  type: "memory.promotion_requested",
  data: { promotionId: promotionIdOf(APP, MEMORY_ID, version), version, reason },
});
const promote = (reason: string | null = null): PromotionCommand => ({ type: "promote", reason });

describe("promote (decider)", () => {
  it("Given an approved memory, When promoted, Then a request for its active version with a deterministic promotion id", () => {
    const { event, state } = spec.given([proposed(1), approved(1)]).when(promote("useful everywhere")).then([requested(1, "useful everywhere")]);
    expect(event.scope).toBe("app");
    expect(state.promotions).toMatchObject([{ promotionId: promotionIdOf(APP, MEMORY_ID, 1), version: 1, reason: "useful everywhere" }]);
  });

  it("Given a memory rolled back to version 1 while version 2 exists, When promoted, Then it is version 1 (the active one) that is promoted", () => {
    spec
      .given([proposed(1), approved(1), proposed(2), approved(2), { type: "memory.rolled_back", data: { fromVersion: 2, toVersion: 1 } }])
      .when(promote())
      .then([requested(1)]);
  });

  it("Given no memory, When promoted, Then not_found", () => {
    spec.given([]).when(promote()).thenThrows("not_found");
  });

  it("Given a memory only proposed, When promoted, Then conflict: only approved memories are promoted", () => {
    const error = spec.given([proposed(1)]).when(promote()).thenThrows("conflict", /no approved version/);
    expect(error.details.reason).toBe("not_approved");
  });

  it("Given a memory whose only version was rejected, When promoted, Then conflict", () => {
    spec.given([proposed(1), { type: "memory.rejected", data: { version: 1, reason: "wrong" } }]).when(promote()).thenThrows("conflict", /no approved version/);
  });

  it("Given a superseded memory, When promoted, Then conflict", () => {
    const error = spec.given([proposed(1), approved(1), { type: "memory.superseded", data: { by: null, reason: "obsolete" } }]).when(promote()).thenThrows("conflict");
    expect(error.details.reason).toBe("superseded");
  });

  it("Given an org-scoped memory, When promoted, Then conflict: it is org knowledge already", () => {
    spec.given([proposed(1), approved(1)], { scope: "org" }).when(promote()).thenThrows("conflict", /already in scope org/);
  });

  it("Given version 1 already submitted, When promoted again, Then conflict naming the existing promotion", () => {
    const error = spec.given([proposed(1), approved(1), requested(1)]).when(promote("again")).thenThrows("conflict", /already submitted/);
    expect(error.details).toMatchObject({ reason: "already_promoted", promotionId: promotionIdOf(APP, MEMORY_ID, 1), version: 1 });
  });

  it("Given version 1 submitted and version 2 approved since, When promoted, Then a new promotion of version 2", () => {
    spec.given([proposed(1), approved(1), requested(1), proposed(2), approved(2)]).when(promote()).then([requested(2)]);
  });

  it("Given a promotion request, When the memory lifecycle is folded, Then it is unchanged apart from the time", () => {
    const without = fold(promotionDecider, history([proposed(1), approved(1)]));
    const withRequest = fold(promotionDecider, history([proposed(1), approved(1), requested(1)]));
    expect(withRequest.memory.versions).toStrictEqual(without.memory.versions);
    expect(withRequest.memory.activeVersion).toBe(1);
  });

  it("derives promotion ids from app, memory and version only", () => {
    expect(promotionIdOf("a", "m", 1)).toBe(promotionIdOf("a", "m", 1));
    expect(new Set([promotionIdOf("a", "m", 1), promotionIdOf("a", "m", 2), promotionIdOf("b", "m", 1), promotionIdOf("a", "n", 1)]).size).toBe(4);
  });

  it("Given a request redelivered (same event id), When folded twice, Then it is recorded once", () => {
    const events = history([proposed(1), approved(1), requested(1)]);
    const state = fold(promotionDecider, [...events, events[2]!]);
    expect(state.promotions).toHaveLength(1);
  });
});
