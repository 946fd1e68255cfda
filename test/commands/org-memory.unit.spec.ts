import { describe, expect, it } from "vitest";
import { orgMemoryDecider, promotionDecisionDecider, type OrgMemoryCommand } from "../../commands/org-memory.js";
import type { OrgProvenance } from "../../schemas/events.js";
import { specFor } from "../support/decider-spec.js";

const ORG_MEMORY_ID = "org-mem-1";
const spec = specFor(orgMemoryDecider, { aggregateId: ORG_MEMORY_ID, app: "org", scope: "org", actor: { kind: "service", id: "curator" } });

const content = { title: "Use pnpm", body: "We use pnpm, not npm.", kind: "convention" as const, tags: ["tooling"], paths: [], importance: 3 };

const provenance: OrgProvenance = {
  promotionId: "promo-1",
  source: {
    app: "app1",
    stream: "t_app_app1",
    memoryId: "mem-1",
    version: 2,
    seq: 7,
    eventId: "evt-src",
    actor: { kind: "agent", id: "agent-a" },
    sessionId: null,
  },
  request: { seq: 9, eventId: "evt-req", actor: { kind: "agent", id: "agent-b" }, sessionId: "sess-1" },
};

const propose = (revision: boolean): OrgMemoryCommand => ({ type: "propose", revision, ...content, provenance });

describe("orgMemoryDecider", () => {
  it("a promotion's proposal carries its provenance, in scope org", () => {
    const { event, state } = spec.given([]).when(propose(false)).then([{ type: "memory.proposed", data: { version: 1, ...content, provenance } }]);
    expect(event.scope).toBe("org");
    expect(state.scope).toBe("org");
    expect(state.versions[0]!.version).toBe(1);
  });

  it("a merge is the next version of the near-duplicate, with the provenance of the promotion that merged", () => {
    spec
      .given([{ type: "memory.proposed", data: { version: 1, ...content } }])
      .when(propose(true))
      .then([{ type: "memory.proposed", data: { version: 2, ...content, provenance } }]);
  });

  it("a merge into a memory that does not exist is refused", () => {
    spec.given([]).when(propose(true)).thenThrows("not_found");
  });

  it("a merge into a superseded memory is refused (the curator decides again)", () => {
    spec
      .given([
        { type: "memory.proposed", data: { version: 1, ...content } },
        { type: "memory.superseded", data: { by: null, reason: "obsolete" } },
      ])
      .when(propose(true))
      .thenThrows("conflict", "superseded");
  });

  it("approves a pending version, as the memory decider does", () => {
    spec
      .given([{ type: "memory.proposed", data: { version: 1, ...content, provenance } }])
      .when({ type: "approve", version: 1 })
      .then([{ type: "memory.approved", data: { version: 1 } }]);
  });

  it("refuses to approve a version already approved (nothing left to approve)", () => {
    spec
      .given([
        { type: "memory.proposed", data: { version: 1, ...content } },
        { type: "memory.approved", data: { version: 1 } },
      ])
      .when({ type: "approve", version: 1 })
      .thenThrows("conflict", "already approved");
  });

  it("refuses to approve a version that does not exist", () => {
    spec.given([{ type: "memory.proposed", data: { version: 1, ...content } }]).when({ type: "approve", version: 2 }).thenThrows("not_found");
  });

  it("remembers the events it applied, so a fixed event id is found on a retry", () => {
    const given = spec.given([{ type: "memory.proposed", data: { version: 1, ...content, provenance } }], { id: "derived-proposal-id" });
    expect(orgMemoryDecider.outcomeOf(given.state, "derived-proposal-id")).toEqual({ type: "memory.proposed", version: 1 });
    expect(orgMemoryDecider.outcomeOf(given.state, "another-id")).toBeUndefined();
  });
});

describe("promotionDecisionDecider", () => {
  const decisionSpec = specFor(promotionDecisionDecider, { aggregateId: "mem-1", app: "app1", scope: "app", actor: { kind: "service", id: "curator" } });
  const accepted = {
    type: "memory.promotion_accepted" as const,
    data: { promotionId: "promo-1", version: 2, outcome: "created" as const, orgMemoryId: ORG_MEMORY_ID, orgVersion: 1, approved: true, reasons: [] },
  };
  const rejected = {
    type: "memory.promotion_rejected" as const,
    data: { promotionId: "promo-1", version: 2, reasons: [{ code: "secret", message: "an AWS key" }] },
  };

  it("writes the decision the policy made, in the request's scope", () => {
    const { event } = decisionSpec.given([]).when({ ...accepted, scope: "team:core" }).then([accepted]);
    expect(event.scope).toBe("team:core");
  });

  it("a second decision is refused: the first stands", () => {
    decisionSpec.given([accepted]).when({ ...rejected, scope: "app" }).thenThrows("conflict", "decided already");
  });

  it("remembers its decision's event id, so the curator's retry is answered as a replay", () => {
    const given = decisionSpec.given([rejected], { id: "derived-decision-id" });
    expect(promotionDecisionDecider.outcomeOf(given.state, "derived-decision-id")).toEqual({ type: "memory.promotion_rejected", version: null });
  });
});
