import { describe, expect, it } from "vitest";
import { ErrorCode, MemledgerError, conflict, internal, invalid, unavailable } from "../../schemas/errors.js";

describe("MemledgerError", () => {
  it("keeps the cause it wraps, as the NATS client's errors do", () => {
    const cause = new Error("wrong last sequence: 7");
    const err = unavailable("append failed", { subject: "s" }, cause);
    expect(err).toBeInstanceOf(MemledgerError);
    expect(err.code).toBe(ErrorCode.unavailable);
    expect(err.cause).toBe(cause);
    expect(err.details).toEqual({ subject: "s" });
  });

  it("has no cause when none is given, and the wire form never carries one", () => {
    const err = conflict("stale", { currentSeq: 3 });
    expect(err.cause).toBeUndefined();
    expect(JSON.parse(JSON.stringify(internal("boom", {}, new Error("secret detail"))))).toEqual({ code: "internal", message: "boom", details: {} });
    expect(invalid("bad").details).toEqual({});
  });
});
