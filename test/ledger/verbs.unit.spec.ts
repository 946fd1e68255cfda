import { describe, expect, it } from "vitest";
import type { z } from "zod";
import { APPENDING_VERBS, READ_MODEL_VERBS, REQUESTS, VERBS, WRITE_VERBS } from "../../schemas/commands.js";

/** Whether a verb's schema knows `field` (a strict schema names an unknown field in its issues). */
const accepts = (verb: keyof typeof REQUESTS, field: string): boolean => {
  const result = (REQUESTS[verb] as z.ZodType).safeParse({ [field]: 1 });
  if (result.success) return true;
  return !result.error.issues.some((i) => i.code === "unrecognized_keys" && (i as { keys: string[] }).keys.includes(field));
};

/**
 * The SDK keys every write and sends minSeq with every read-model query by these sets, derived from the
 * request schemas' fields. A schema wrapped so that its fields can no longer be seen (a transform, a
 * pipe) must not silently drop a verb from them: a write without a key is one a retry can duplicate.
 */
describe("verb classes derived from the request schemas", () => {
  it("a verb is a write exactly when its request takes an idempotency key", () => {
    for (const verb of VERBS) expect(WRITE_VERBS.has(verb), verb).toBe(accepts(verb, "key"));
    for (const verb of ["propose", "approve", "claim", "renew", "release", "session_start", "session_end", "open_task"] as const) {
      expect(WRITE_VERBS.has(verb), verb).toBe(true);
    }
  });

  it("every verb that is not a write either appends without a key (the review verbs) or only reads: a new verb must be placed", () => {
    for (const verb of WRITE_VERBS) expect(APPENDING_VERBS.has(verb), verb).toBe(true);
    expect([...APPENDING_VERBS].filter((verb) => !WRITE_VERBS.has(verb)).sort()).toEqual(["dream_accept", "dream_reject", "dream_revert"]);
    expect(VERBS.filter((verb) => !APPENDING_VERBS.has(verb)).sort()).toEqual(
      ["claim_show", "claims", "dream_list", "dream_show", "history", "hydrate", "log", "search", "session_show", "show", "tasks"].sort(),
    );
  });

  it("a verb is answered from read models exactly when its request takes minSeq", () => {
    for (const verb of VERBS) expect(READ_MODEL_VERBS.has(verb), verb).toBe(accepts(verb, "minSeq"));
    expect([...READ_MODEL_VERBS].sort()).toEqual(["claims", "hydrate", "search", "tasks"]);
  });
});

describe("MEMLEDGER_READ_WAIT_MS", () => {
  it("defaults to 5 s, takes whole milliseconds, and refuses anything else naming the variable", async () => {
    const { readWaitMsFromEnv, DEFAULT_READ_WAIT_MS } = await import("../../services/command-service.js");
    expect(readWaitMsFromEnv({})).toBe(DEFAULT_READ_WAIT_MS);
    expect(DEFAULT_READ_WAIT_MS).toBe(5000);
    expect(readWaitMsFromEnv({ MEMLEDGER_READ_WAIT_MS: " 250 " })).toBe(250);
    for (const bad of ["-1", "1.5", "soon", "600001"]) {
      expect(() => readWaitMsFromEnv({ MEMLEDGER_READ_WAIT_MS: bad }), bad).toThrow(/MEMLEDGER_READ_WAIT_MS/);
    }
  });
});
