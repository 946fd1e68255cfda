import { describe, expect, it } from "vitest";
import { DEFAULT_PREFIX, naming } from "../../events/subjects.js";
import { MINIMUM_SERVER_VERSION, serverFeatures, versionAtLeast } from "../../services/nats.js";

/** NATS subject matching: `*` is one token, a final `>` is one or more tokens. */
function subjectMatches(filter: string, subject: string): boolean {
  const wanted = filter.split(".");
  const tokens = subject.split(".");
  for (let i = 0; i < wanted.length; i++) {
    if (wanted[i] === ">") return i === wanted.length - 1 && tokens.length > i;
    if (i >= tokens.length || (wanted[i] !== "*" && wanted[i] !== tokens[i])) return false;
  }
  return wanted.length === tokens.length;
}

describe("naming", () => {
  const names = naming();

  it("uses the default prefix unless told otherwise", () => {
    expect(names.prefix).toBe(DEFAULT_PREFIX);
    expect(naming("t1").prefix).toBe("t1");
  });

  it("spells streams and event subjects as documented", () => {
    expect(names.appStream("app1")).toBe("memledger_app_app1");
    expect(names.orgStream()).toBe("memledger_org");
    expect(names.appEvents("app1")).toBe("memledger.app.app1.>");
    expect(names.orgEvents()).toBe("memledger.org.>");
    expect(names.aggregate("app1", "memory", "mem-1")).toBe("memledger.app.app1.memory.mem-1");
    expect(names.aggregate("app1", "session", "ses-1")).toBe("memledger.app.app1.session.ses-1");
  });

  it("puts every aggregate under its own app's event filter and no other app's", () => {
    const subject = names.aggregate("app1", "memory", "mem-1");
    expect(subjectMatches(names.appEvents("app1"), subject)).toBe(true);
    expect(subjectMatches(names.appEvents("app2"), subject)).toBe(false);
    expect(subjectMatches(naming("other").appEvents("app1"), subject)).toBe(false);
  });

  it("keeps commands out of every event filter and inside the command filter", () => {
    const subject = names.command("app1", "agent", "agent-a", "propose");
    expect(subject).toBe("memledger.cmd.app1.agent.agent-a.propose");
    expect(subjectMatches(names.allCommands(), subject)).toBe(true);
    expect(subjectMatches(names.appEvents("app1"), subject)).toBe(false);
    expect(subjectMatches(names.orgEvents(), subject)).toBe(false);
  });

  it("parses the command subjects it builds", () => {
    for (const [app, actorKind, actorId, verb] of [
      ["app1", "agent", "agent-a", "propose"],
      ["billing", "human", "alice", "session_start"],
      ["app1", "service", "consolidator", "approve"],
    ] as const) {
      expect(names.parseCommand(names.command(app, actorKind, actorId, verb))).toEqual({ app, actorKind, actorId, verb });
    }
    const custom = naming("t1");
    expect(custom.parseCommand(custom.command("app1", "agent", "a", "show"))).toEqual({ app: "app1", actorKind: "agent", actorId: "a", verb: "show" });
  });

  it("refuses command subjects of another prefix", () => {
    expect(names.parseCommand(naming("other").command("app1", "agent", "a", "propose"))).toBeNull();
    expect(naming("other").parseCommand(names.command("app1", "agent", "a", "propose"))).toBeNull();
  });

  it("refuses subjects that are not commands, or have too few or too many tokens", () => {
    expect(names.parseCommand("memledger.app.app1.memory.mem-1.x")).toBeNull();
    expect(names.parseCommand(names.aggregate("app1", "memory", "mem-1"))).toBeNull();
    expect(names.parseCommand("memledger.cmd.app1.agent.propose")).toBeNull();
    expect(names.parseCommand("memledger.cmd.app1.agent.a.propose.extra")).toBeNull();
    expect(names.parseCommand("memledger.cmd")).toBeNull();
    expect(names.parseCommand("")).toBeNull();
  });

  it("throws on a prefix that could not name a subject or a stream", () => {
    for (const bad of ["", "a.b", "has space", "*", ">", "x".repeat(33), "é"]) {
      expect(() => naming(bad), JSON.stringify(bad)).toThrow();
    }
    expect(() => naming("x".repeat(32))).not.toThrow();
    expect(() => naming("Team_1-a")).not.toThrow();
  });
});

describe("server features", () => {
  it("on 2.9.10 (the server here) offers direct get and nothing newer", () => {
    expect(serverFeatures("2.9.10")).toStrictEqual({
      version: "2.9.10",
      directGet: true,
      multipleFilterSubjects: false,
      streamMetadata: false,
      perMessageTtl: false,
      atomicBatchPublish: false,
      lastSubjectSequenceSubject: false,
    });
  });

  it("turns features on with the release that introduced them", () => {
    expect(serverFeatures("2.10.22")).toMatchObject({ multipleFilterSubjects: true, streamMetadata: true, perMessageTtl: false });
    expect(serverFeatures("2.11.0")).toMatchObject({ perMessageTtl: true, lastSubjectSequenceSubject: true, atomicBatchPublish: false });
    expect(Object.values(serverFeatures("2.12.1")).filter((flag) => flag === false)).toEqual([]);
    expect(Object.values(serverFeatures("2.8.4")).filter((flag) => flag === true)).toEqual([]);
  });

  it("accepts 2.9.10 as new enough", () => {
    expect(versionAtLeast("2.9.10", MINIMUM_SERVER_VERSION)).toBe(true);
  });
});

describe("versionAtLeast", () => {
  it("holds for equal versions", () => {
    expect(versionAtLeast("2.9.0", "2.9.0")).toBe(true);
  });

  it("compares parts as numbers, not as text", () => {
    expect(versionAtLeast("2.10.0", "2.9.0")).toBe(true);
    expect(versionAtLeast("2.9.10", "2.10.0")).toBe(false);
    expect(versionAtLeast("2.9.9", "2.9.10")).toBe(false);
    expect(versionAtLeast("2.9.10", "2.9.9")).toBe(true);
  });

  it("lets a higher major or minor win whatever follows", () => {
    expect(versionAtLeast("3.0.0", "2.12.9")).toBe(true);
    expect(versionAtLeast("2.12.0", "2.11.99")).toBe(true);
    expect(versionAtLeast("1.99.99", "2.0.0")).toBe(false);
  });

  it("reads missing parts as zero", () => {
    expect(versionAtLeast("2.10", "2.10.0")).toBe(true);
    expect(versionAtLeast("2", "2.9.0")).toBe(false);
    expect(versionAtLeast("2.9.0", "2.9")).toBe(true);
  });

  it("counts a pre-release as its release, since release candidates ship the features", () => {
    expect(versionAtLeast("2.11.0-RC.1", "2.11.0")).toBe(true);
    expect(versionAtLeast("2.10.0-beta", "2.11.0")).toBe(false);
  });

  it("treats an unreadable or unknown version as too old", () => {
    expect(versionAtLeast("0.0.0", MINIMUM_SERVER_VERSION)).toBe(false);
    expect(versionAtLeast("", MINIMUM_SERVER_VERSION)).toBe(false);
    expect(versionAtLeast("garbage", MINIMUM_SERVER_VERSION)).toBe(false);
  });
});
