import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Verb } from "../../schemas/commands.js";
import { MemledgerError } from "../../schemas/errors.js";
import { LIMITS } from "../../schemas/primitives.js";
import type { AppendOutcome } from "../../schemas/commands.js";
import { naming, type Naming } from "../../events/subjects.js";
import { startLedger, streamMessageCount, type Ledger } from "../support/env.js";
import { rawRequest, rejectionOf } from "./support.js";

/**
 * Every malformed command gets code `invalid`, a message that names what is wrong, and changes
 * nothing. Each case goes through the real service over NATS: JSON payloads through the SDK
 * (MemoryClient.request), everything the SDK cannot express (bytes that are not JSON, subjects with
 * a bad app or actor) through a raw request on a subject built by events/subjects.ts.
 */

type Payload = Record<string, unknown> | unknown[] | string | number | null;

interface Case {
  name: string;
  /** Verb for an SDK request (default propose). */
  verb?: string;
  payload?: Payload;
  /** Raw bytes instead of JSON. */
  bytes?: Uint8Array;
  /** Builds the subject for a raw request (bad app, actor kind or id, unknown shape). */
  subject?: (names: Naming, app: string) => string;
  /** What the message must say. */
  message: RegExp;
}

const ok = { title: "A title", body: "A body." };
// Filled in once the seed memory exists: cases that need a real memory id use this placeholder.
const SEED = "__seed__";

const cases: Case[] = [
  // ---- missing fields, wrong types, shapes ----
  { name: "missing title", payload: { body: "x" }, message: /propose: title: .*expected string, received undefined/ },
  { name: "missing body", payload: { title: "x" }, message: /propose: body: .*expected string, received undefined/ },
  { name: "title of the wrong type (number)", payload: { ...ok, title: 42 }, message: /title: .*expected string, received number/ },
  { name: "body of the wrong type (array)", payload: { ...ok, body: ["a"] }, message: /body: .*expected string, received array/ },
  { name: "tags as a string, not a list", payload: { ...ok, tags: "a,b" }, message: /tags: .*expected array, received string/ },
  { name: "importance as a string", payload: { ...ok, importance: "3" }, message: /importance: .*expected number, received string/ },
  { name: "empty payload for propose", bytes: new Uint8Array(), message: /propose: title: .*expected string/ },
  { name: "JSON array payload", payload: [ok], message: /propose: request: .*expected object, received array/ },
  { name: "JSON null payload", payload: null, message: /propose: request: .*expected object, received null/ },
  { name: "JSON string payload", payload: "propose this", message: /propose: request: .*expected object, received string/ },
  { name: "non-JSON payload", bytes: new TextEncoder().encode("title=x&body=y"), message: /propose request is not valid UTF-8 JSON/ },
  { name: "truncated JSON", bytes: new TextEncoder().encode('{"title":"x","body":'), message: /not valid UTF-8 JSON/ },
  {
    name: "invalid UTF-8 bytes inside a JSON string",
    // {"title":"<0xff 0xfe>","body":"x"}: a lenient decoder would turn these into U+FFFD and store them.
    bytes: new Uint8Array([...new TextEncoder().encode('{"title":"'), 0xff, 0xfe, ...new TextEncoder().encode('","body":"x"}')]),
    message: /propose request is not valid UTF-8 JSON/,
  },

  // ---- text content and limits ----
  { name: "blank title", payload: { ...ok, title: "   " }, message: /title: must not be blank/ },
  { name: "blank body", payload: { ...ok, body: "\n\t " }, message: /body: must not be blank/ },
  {
    name: `title over LIMITS.titleLength (${LIMITS.titleLength + 1} characters)`,
    payload: { ...ok, title: "t".repeat(LIMITS.titleLength + 1) },
    message: new RegExp(`title: at most ${LIMITS.titleLength} characters`),
  },
  {
    name: `body over LIMITS.bodyBytes (${LIMITS.bodyBytes + 1} ASCII bytes)`,
    payload: { ...ok, body: "b".repeat(LIMITS.bodyBytes + 1) },
    message: new RegExp(`body: at most ${LIMITS.bodyBytes} bytes`),
  },
  {
    // The limit is documented in bytes: 16,385 two-byte characters are under any character limit but over it.
    name: "body over LIMITS.bodyBytes in multi-byte characters",
    payload: { ...ok, body: "é".repeat(LIMITS.bodyBytes / 2 + 1) },
    message: new RegExp(`body: at most ${LIMITS.bodyBytes} bytes`),
  },
  {
    name: `too many tags (${LIMITS.tags + 1})`,
    payload: { ...ok, tags: Array.from({ length: LIMITS.tags + 1 }, (_, i) => `t${i}`) },
    message: new RegExp(`tags: .*<=${LIMITS.tags}`),
  },
  { name: "tag with a comma", payload: { ...ok, tags: ["ok", "a,b"] }, message: /tags\.1: must not contain ','/ },
  { name: "blank tag", payload: { ...ok, tags: [" "] }, message: /tags\.0: must not be blank/ },
  { name: "path with a comma", payload: { ...ok, paths: ["src/a,b.ts"] }, message: /paths\.0: must not contain ','/ },
  { name: "control character (BEL) in title", payload: { ...ok, title: "ding\u0007" }, message: /title: must not contain control characters/ },
  { name: "newline in title", payload: { ...ok, title: "two\nlines" }, message: /title: must not contain control characters/ },
  { name: "NUL in body", payload: { ...ok, body: "a\u0000b" }, message: /body: must not contain control characters other than tab and newline/ },
  { name: "newline in session task", verb: "session_start", payload: { task: "a\nb" }, message: /session_start: task: must not contain control characters/ },

  // ---- ids ----
  { name: "NUL in memoryId", verb: "approve", payload: { memoryId: "ab\u0000cd" }, message: /approve: memoryId: only letters, digits, '_' and '-'/ },
  { name: "dot in memoryId", verb: "approve", payload: { memoryId: "a.b" }, message: /memoryId: only letters, digits, '_' and '-'/ },
  { name: "space in memoryId", verb: "approve", payload: { memoryId: "a b" }, message: /memoryId: only letters, digits, '_' and '-'/ },
  { name: "wildcard * as memoryId", verb: "show", payload: { memoryId: "*" }, message: /show: memoryId: only letters, digits, '_' and '-'/ },
  { name: "wildcard > as memoryId", verb: "log", payload: { memoryId: ">" }, message: /log: memoryId: only letters, digits, '_' and '-'/ },
  { name: "empty memoryId", verb: "approve", payload: { memoryId: "" }, message: /memoryId: must not be empty/ },
  {
    name: `memoryId over LIMITS.idLength (${LIMITS.idLength + 1})`,
    verb: "approve",
    payload: { memoryId: "m".repeat(LIMITS.idLength + 1) },
    message: new RegExp(`memoryId: at most ${LIMITS.idLength} characters`),
  },
  { name: "wildcard in a propose's memoryId", payload: { ...ok, memoryId: "x.*" }, message: /propose: memoryId: only letters/ },
  { name: "bad supersede target id", verb: "supersede", payload: { memoryId: SEED, by: "a>b", reason: "dup" }, message: /supersede: by: only letters/ },
  { name: "empty sessionId", verb: "session_show", payload: { sessionId: "" }, message: /session_show: sessionId: must not be empty/ },
  { name: "session id with a dot", verb: "session_end", payload: { sessionId: "s.1" }, message: /session_end: sessionId: only letters/ },

  // ---- enums and numbers ----
  { name: "scope 'agent:' without an id", payload: { ...ok, scope: "agent:" }, message: /scope: one of app, org, agent:<id>, team:<name>/ },
  { name: "scope 'galaxy'", payload: { ...ok, scope: "galaxy" }, message: /scope: one of app, org, agent:<id>, team:<name>/ },
  { name: "bad kind", payload: { ...ok, kind: "rumour" }, message: /kind: .*expected one of .*"note"/ },
  { name: "importance 0", payload: { ...ok, importance: 0 }, message: /importance: .*>=1/ },
  { name: "importance 6", payload: { ...ok, importance: 6 }, message: /importance: .*<=5/ },
  { name: "importance 2.5", payload: { ...ok, importance: 2.5 }, message: /importance: .*expected int/ },
  { name: "negative expectedSeq", payload: { ...ok, memoryId: SEED, expectedSeq: -1 }, message: /expectedSeq: .*>=0/ },
  { name: "fractional expectedSeq", verb: "approve", payload: { memoryId: SEED, expectedSeq: 1.5 }, message: /expectedSeq: .*expected int/ },
  { name: "approve version 0", verb: "approve", payload: { memoryId: SEED, version: 0 }, message: /approve: version: .*>=1/ },
  { name: "rollback without toVersion", verb: "rollback", payload: { memoryId: SEED }, message: /rollback: toVersion: .*expected number, received undefined/ },
  { name: "log limit 0", verb: "log", payload: { limit: 0 }, message: /log: limit: .*>=1/ },
  { name: "log limit over 10,000", verb: "log", payload: { limit: 10_001 }, message: /log: limit: .*<=10000/ },
  { name: "reject with a blank reason", verb: "reject", payload: { memoryId: SEED, reason: "  " }, message: /reject: reason: must not be blank/ },

  // ---- unknown fields ----
  { name: "unknown field expected_seq (typo of expectedSeq)", payload: { ...ok, memoryId: SEED, expected_seq: 1 }, message: /Unrecognized key.*"expected_seq"/ },
  // Identity comes from the subject (which broker permissions pin to the sender), never from the
  // payload: an `actor` field in a command is ignored, and the event records the subject's actor
  // (test/auth/broker.int.spec.ts checks that against an auth-enabled broker).
  { name: "unknown field in git context", payload: { ...ok, git: { branch: "main", sha: "abc" } }, message: /git: .*Unrecognized key.*"sha"/ },

  // ---- context fields ----
  {
    name: `oversized idempotency key (${LIMITS.keyLength + 1})`,
    payload: { ...ok, key: "k".repeat(LIMITS.keyLength + 1) },
    message: new RegExp(`key: at most ${LIMITS.keyLength} characters`),
  },
  { name: "blank idempotency key", payload: { ...ok, key: " " }, message: /key: must not be blank/ },
  { name: "blank correlationId", verb: "approve", payload: { memoryId: SEED, correlationId: "" }, message: /correlationId: must not be blank/ },

  // ---- subjects: verb, app, actor ----
  { name: "unknown verb", verb: "frobnicate", payload: ok, message: /unknown verb 'frobnicate'; known: propose, approve/ },
  { name: "verb that is an Object prototype key", verb: "constructor", payload: ok, message: /unknown verb 'constructor'/ },
  { name: "bad actor kind in the subject", subject: (n, app) => n.command(app, "robot" as never, "r2d2", "propose"), payload: ok, message: /bad actor 'robot\.r2d2' in the subject/ },
  { name: "wildcard * as actor id in the subject", subject: (n, app) => n.command(app, "agent", "*", "propose"), payload: ok, message: /bad actor 'agent\.\*' in the subject/ },
  { name: "wildcard > as actor id in the subject", subject: (n, app) => n.command(app, "agent", ">", "propose"), payload: ok, message: /bad actor 'agent\.>' in the subject/ },
  { name: "NUL in the actor id in the subject", subject: (n, app) => n.command(app, "agent", "a\u0000b", "propose"), payload: ok, message: /bad actor 'agent\.a\u0000b' in the subject/ },
  { name: "dot in the actor id (an extra subject token)", subject: (n, app) => n.command(app, "agent", "a.b", "propose"), payload: ok, message: /not a command subject/ },
  { name: "subject without a verb", subject: (n, app) => `${n.prefix}.cmd.${app}.agent.alice`, payload: ok, message: /not a command subject/ },
  { name: "uppercase app name in the subject", subject: (n) => n.command("App1", "agent", "alice", "propose"), payload: ok, message: /bad app name 'App1'/ },
  { name: "app name starting with '-' in the subject", subject: (n) => n.command("-app", "agent", "alice", "propose"), payload: ok, message: /bad app name '-app'/ },
  {
    name: `app name over LIMITS.appLength in the subject`,
    subject: (n) => n.command("a".repeat(LIMITS.appLength + 1), "agent", "alice", "propose"),
    payload: ok,
    message: /bad app name 'a+'/,
  },

  // ---- refused by the decider (valid shape, impossible meaning): still `invalid`, still nothing stored ----
  { name: "a revision that moves the memory to another scope", payload: { ...ok, memoryId: SEED, scope: "org" }, message: /lives in scope app; a revision cannot move it to org/ },
  { name: "a memory superseding itself", verb: "supersede", payload: { memoryId: SEED, by: SEED, reason: "loop" }, message: /cannot supersede itself/ },
];

const withSeed = (payload: Payload | undefined, seed: string): Payload | undefined =>
  payload === undefined ? undefined : (JSON.parse(JSON.stringify(payload).replaceAll(SEED, seed)) as Payload);

describe("invalid commands", () => {
  let ledger: Ledger;
  let seed: AppendOutcome;
  let stream: string;
  let streamsBefore: string[];

  const streamsOfPrefix = async () => {
    const jsm = await jetstreamManager(ledger.nc);
    const names: string[] = [];
    for await (const name of jsm.streams.names()) if (name.startsWith(`${ledger.prefix}_`)) names.push(name);
    return names.sort();
  };

  beforeAll(async () => {
    ledger = await startLedger();
    // Create the stream with one valid proposal, so "nothing changed" is a real count to compare.
    seed = await ledger.client("alice").propose({ title: "Seed", body: "The one valid proposal." });
    stream = ledger.service.names.appStream(ledger.app);
    expect(await streamMessageCount(ledger.nc, stream)).toBe(1);
    streamsBefore = await streamsOfPrefix();
    expect(streamsBefore).toEqual([stream]);
  });
  afterAll(async () => ledger?.cleanup());

  it("has at least 30 cases, with unique names", () => {
    expect(cases.length).toBeGreaterThanOrEqual(30);
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
  });

  it.each(cases)("$name → invalid", async (c) => {
    const payload = withSeed(c.payload, seed.memoryId);
    const before = await streamMessageCount(ledger.nc, stream);
    let code: string;
    let message: string;
    if (c.subject || c.bytes) {
      const names = naming(ledger.prefix);
      const subject = c.subject ? c.subject(names, ledger.app) : names.command(ledger.app, "agent", "alice", c.verb ?? "propose");
      const reply = await rawRequest(ledger.nc, subject, c.bytes ?? JSON.stringify(payload));
      expect(reply.ok).toBe(false);
      if (reply.ok) return;
      ({ code, message } = reply.error);
    } else {
      const client = ledger.client("alice");
      const err = await rejectionOf(client.request((c.verb ?? "propose") as Verb, payload as never));
      expect(err).toBeInstanceOf(MemledgerError);
      ({ code, message } = err);
    }
    expect(code).toBe("invalid");
    expect(message).toMatch(c.message);
    expect(await streamMessageCount(ledger.nc, stream)).toBe(before);
  });

  it("an invalid command for an app without a stream creates no stream", async () => {
    const err = await rejectionOf(ledger.client("alice", "fresh-app").propose({ title: "", body: "x" }));
    expect(err.code).toBe("invalid");
    expect(err.message).toMatch(/title: must not be blank/);
  });

  it("after every case the ledger is unchanged: one event, one stream, and the seed memory as it was", async () => {
    expect(await streamMessageCount(ledger.nc, stream)).toBe(1);
    expect(await streamsOfPrefix()).toEqual(streamsBefore);
    const shown = await ledger.client("alice").show(seed.memoryId);
    expect(shown).toMatchObject({ seq: seed.seq, status: "proposed", superseded: null, scope: "app" });
    expect(shown.versions.map((v) => v.version)).toEqual([1]);
  });
});
