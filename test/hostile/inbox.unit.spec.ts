import { afterEach, describe, expect, it } from "vitest";
import { inboxPrefixFor, replyRefusal, resolveInboxPrefix } from "../../services/nats.js";

/** The rules behind issue 9 item 1, without a server: whose inbox a reply subject is, and which prefix a client uses. */

describe("inbox prefixes", () => {
  const saved = process.env.NATS_INBOX_PREFIX;
  afterEach(() => {
    if (saved === undefined) delete process.env.NATS_INBOX_PREFIX;
    else process.env.NATS_INBOX_PREFIX = saved;
  });

  it("a broker user's own prefix; none for a name that cannot be part of a subject", () => {
    expect(inboxPrefixFor("agent.coder-1")).toBe("_INBOX_agent.coder-1");
    expect(inboxPrefixFor("memledger")).toBe("_INBOX_memledger");
    for (const bad of ["a b", "a.*", "a.>", "a..b", ".a", ""]) expect(inboxPrefixFor(bad)).toBeNull();
  });

  it("explicit, else NATS_INBOX_PREFIX, else the user's own, else the shared _INBOX", () => {
    delete process.env.NATS_INBOX_PREFIX;
    expect(resolveInboxPrefix(undefined)).toBe("_INBOX");
    expect(resolveInboxPrefix("human.alice")).toBe("_INBOX_human.alice");
    expect(resolveInboxPrefix("a b")).toBe("_INBOX");
    process.env.NATS_INBOX_PREFIX = "_INBOX";
    expect(resolveInboxPrefix("human.alice")).toBe("_INBOX");
    expect(resolveInboxPrefix("human.alice", "_INBOX_custom")).toBe("_INBOX_custom");
  });
});

describe("reply subjects the command service answers on", () => {
  const alice = { kind: "human", id: "alice" };

  it("the shared inbox and the sender's own", () => {
    for (const reply of ["_INBOX.abc", "_INBOX.abc.1", "_INBOX_human.alice.xyz.7"]) expect(replyRefusal(reply, "memledger", alice)).toBeNull();
  });

  it("never a subject under the ledger prefix, a system subject, another user's inbox or a wildcard", () => {
    const refused: [string, RegExp][] = [
      ["memledger.app.a.memory.m1", /under the ledger prefix/],
      ["memledger.org.memory.m1", /under the ledger prefix/],
      ["memledger", /under the ledger prefix/],
      ["memledger.org.>", /not a plain subject/],
      ["_INBOX.*", /not a plain subject/],
      ["_INBOX..x", /not a plain subject/],
      ["_INBOX. x", /not a plain subject/],
      ["$JS.API.STREAM.DELETE.memledger_org", /not an inbox of the sender/],
      ["$KV.memledger_projections.x", /not an inbox of the sender/],
      ["_INBOX_agent.bob.x", /not an inbox of the sender/],
      ["_INBOX_human.alice", /not an inbox of the sender/],
      ["_INBOX_human.alicex.y", /not an inbox of the sender/],
      ["_INBOX", /not an inbox of the sender/],
      ["anything.else", /not an inbox of the sender/],
    ];
    for (const [reply, why] of refused) expect(replyRefusal(reply, "memledger", alice), reply).toMatch(why);
    // Without a parsable sender only the shared inbox is one.
    expect(replyRefusal("_INBOX_human.alice.x", "memledger", null)).toMatch(/not an inbox/);
  });

  it("a ledger prefix that looks like an inbox does not make its stream subjects inboxes", () => {
    expect(replyRefusal("_INBOX.app.a.memory.m1", "_INBOX", alice)).toMatch(/under the ledger prefix _INBOX/);
    expect(replyRefusal("_INBOX_human.app.a.memory.m1", "_INBOX_human", { kind: "human", id: "app" })).toMatch(/under the ledger prefix/);
  });
});
