import { execFileSync } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readFile, realpath, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Objm } from "@nats-io/obj";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MemoryClient } from "../../services/client.js";
import { MemledgerError } from "../../schemas/errors.js";
import { startLedger, streamMessageCount, type Ledger } from "../support/env.js";
import { cli, jsonLine, lines } from "./support.js";

/**
 * The Claude Code hooks as Claude Code runs them: a child process given the documented hook JSON on stdin
 * (session_id, transcript_path, cwd, hook_event_name, source / reason), in a scratch git repository.
 */

let ledger: Ledger;
let client: MemoryClient;
let repo: string;
let transcriptFile: string;
const transcriptText = `${JSON.stringify({ type: "user", message: "fix the webhook retries" })}\n${JSON.stringify({ type: "assistant", message: "done" })}\n`;
const sha256 = (s: string | Uint8Array) => createHash("sha256").update(s).digest("hex");

const git = (...args: string[]) => execFileSync("git", ["-c", "user.name=t", "-c", "user.email=t@t", ...args], { cwd: repo });

beforeAll(async () => {
  ledger = await startLedger({ app: "hooks" });
  client = ledger.client("coder-1");
  repo = await realpath(await mkdtemp(path.join(tmpdir(), "memledger-hook-")));
  git("init", "-q", "-b", "main");
  await mkdir(path.join(repo, "src"));
  await writeFile(path.join(repo, "src", "webhook.ts"), "export {}\n");
  await writeFile(path.join(repo, "README.md"), "# r\n");
  git("add", ".");
  git("commit", "-q", "-m", "base");
  git("checkout", "-q", "-b", "fix/webhook-retries");
  await writeFile(path.join(repo, "src", "webhook.ts"), "export const retries = 5;\n"); // changed, not committed
  transcriptFile = path.join(repo, "transcript.jsonl");
  await writeFile(transcriptFile, transcriptText);
  await mkdir(path.join(repo, ".claude"));
}, 30_000);

afterAll(async () => {
  await ledger?.cleanup();
  await rm(repo, { recursive: true, force: true });
});

const globals = () => ["--app", "hooks", "--prefix", ledger.prefix, "--as", "coder-1"];
const hookInput = (sessionId: string, extra: Record<string, unknown>) =>
  JSON.stringify({ session_id: sessionId, transcript_path: transcriptFile, cwd: repo, permission_mode: "default", model: "claude-sonnet-4-5", ...extra });

describe("memledger hook session-start / session-end", () => {
  it("starts a session from git, prints the pack as additionalContext, then ends it storing the transcript by digest", async () => {
    // A fragile memory on the file this branch changed: the pack must name it (paths come from git).
    const fragile = await client.propose({ title: "Webhook retries are fragile", body: "Never retry a 4xx.", kind: "fragile", paths: ["src/webhook.ts"] });
    await ledger.client("human:alice").approve(fragile.memoryId);

    const sessionId = randomUUID();
    const envFile = path.join(repo, ".claude", "env");
    const started = await cli([...globals(), "hook", "session-start"], {
      input: hookInput(sessionId, { hook_event_name: "SessionStart", source: "startup" }),
      env: { CLAUDE_ENV_FILE: envFile },
    });
    expect(started.code, started.stderr).toBe(0);
    expect(started.stderr).toBe("");
    const output = jsonLine(started);
    expect(Object.keys(output)).toEqual(["hookSpecificOutput"]);
    expect(output.hookSpecificOutput.hookEventName).toBe("SessionStart");
    const context: string = output.hookSpecificOutput.additionalContext;
    expect(context).toContain(`session ${sessionId}`);
    expect(context).toContain("Webhook retries are fragile");
    expect(await readFile(envFile, "utf8")).toBe(`export MEMLEDGER_SESSION=${sessionId}\n`);

    const session = await client.showSession(sessionId);
    expect(session).toMatchObject({ agentId: "coder-1", branch: "fix/webhook-retries", worktree: repo, task: "fix webhook retries", endedAt: null });

    // resume fires SessionStart again: the same session, no second start event (only the exposure
    // receipts of the packs, appended after each reply: the session was shown the fragile memory)
    const stream = `${ledger.prefix}_app_hooks`;
    const before = await streamMessageCount(ledger.nc, stream);
    const resumed = await cli([...globals(), "hook", "session-start"], { input: hookInput(sessionId, { hook_event_name: "SessionStart", source: "resume" }) });
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(jsonLine(resumed).hookSpecificOutput.additionalContext).toContain(`session ${sessionId}`);
    await ledger.service.flushExposure();
    const since = await client.log({ sinceSeq: before + 1 });
    expect(since.map((e) => e.type)).toEqual(since.map(() => "session.exposed"));
    expect((await client.log({})).filter((e) => e.type === "session.exposed" && e.aggregateId === sessionId).length).toBeGreaterThan(0);

    const ended = await cli([...globals(), "hook", "session-end"], { input: hookInput(sessionId, { hook_event_name: "SessionEnd", reason: "prompt_input_exit" }) });
    expect(ended.code, ended.stderr).toBe(0);
    expect(ended.stdout).toBe("");
    expect(ended.stderr).toBe("");

    const digest = sha256(transcriptText);
    const log = await client.log({});
    const endEvent = log.find((e) => e.type === "session.ended" && e.aggregateId === sessionId);
    expect(endEvent?.schemaVersion).toBe(2);
    expect(endEvent?.data).toEqual({
      summary: "Claude Code session ended (prompt_input_exit)",
      transcript: { digest: `sha256:${digest}`, bytes: Buffer.byteLength(transcriptText), name: digest },
    });
    const store = await new Objm(ledger.nc).open(`${ledger.prefix}_transcripts`);
    const stored = await store.getBlob(digest);
    expect(sha256(stored!)).toBe(digest);
    expect(new TextDecoder().decode(stored!)).toBe(transcriptText);

    // SessionEnd again (a retry): quiet, nothing appended
    const count = await streamMessageCount(ledger.nc, stream);
    const again = await cli([...globals(), "hook", "session-end"], { input: hookInput(sessionId, { hook_event_name: "SessionEnd", reason: "other" }) });
    expect(again.code).toBe(0);
    expect(again.stderr).toBe("");
    expect(await streamMessageCount(ledger.nc, stream)).toBe(count);
  }, 60_000);

  it("never blocks Claude Code: with no service answering, session-start still exits 0 and says why in the context", async () => {
    const ran = await cli(["--app", "hooks", "--prefix", `${ledger.prefix}x`, "--as", "coder-1", "hook", "session-start"], {
      input: hookInput(randomUUID(), { hook_event_name: "SessionStart", source: "startup" }),
    });
    expect(ran.code).toBe(0);
    expect(jsonLine(ran).hookSpecificOutput.additionalContext).toMatch(/could not hydrate this session \(unavailable: /);
    expect(lines(ran.stderr)).toHaveLength(1);
    expect(ran.stderr).toMatch(/^memledger hook session-start: unavailable: /);
  }, 30_000);

  it("ends the session even when the transcript cannot be read, saying so", async () => {
    const sessionId = randomUUID();
    const started = await cli([...globals(), "hook", "session-start"], { input: hookInput(sessionId, { hook_event_name: "SessionStart", source: "startup" }) });
    expect(started.code, started.stderr).toBe(0);
    const ended = await cli([...globals(), "hook", "session-end"], {
      input: JSON.stringify({ session_id: sessionId, transcript_path: path.join(repo, "gone.jsonl"), cwd: repo, hook_event_name: "SessionEnd", reason: "logout" }),
    });
    expect(ended.code).toBe(0);
    expect(ended.stderr).toMatch(/^memledger hook session-end: invalid: cannot read the transcript .*gone\.jsonl: ENOENT; ending the session without a transcript\n$/);
    const session = await client.showSession(sessionId);
    expect(session.endedAt).not.toBeNull();
    expect(session.transcript).toBeNull();
  }, 30_000);

  it("refuses hook input that is not the hook JSON (exit 2), sending nothing", async () => {
    const ran = await cli([...globals(), "hook", "session-end"], { input: "not json" });
    expect(ran.code).toBe(2);
    expect(ran.stderr).toMatch(/^memledger: invalid: the hook expects Claude Code's hook JSON on stdin/);
  });
});

describe("memledger session end --transcript and the SDK", () => {
  it("stores the transcript and references its digest; a reference to bytes never stored is not_found and appends nothing", async () => {
    const { sessionId } = await client.startSession({ task: "cli transcript" });
    const ended = jsonLine(await cli([...globals(), "session", "end", sessionId, "--summary", "ok", "--transcript", transcriptFile]));
    expect(ended).toMatchObject({ sessionId, type: "session.ended" });
    expect((await client.showSession(sessionId)).transcript).toEqual({ digest: `sha256:${sha256(transcriptText)}`, bytes: Buffer.byteLength(transcriptText), name: sha256(transcriptText) });

    const missingFile = await cli([...globals(), "session", "end", sessionId, "--transcript", path.join(repo, "nope.jsonl")]);
    expect(missingFile.code).toBe(2);
    expect(missingFile.stderr).toMatch(/^memledger: invalid: cannot read the transcript .*ENOENT/);

    const other = await client.startSession({ task: "forged reference" });
    const stream = `${ledger.prefix}_app_hooks`;
    const before = await streamMessageCount(ledger.nc, stream);
    const neverStored = sha256("bytes nobody stored");
    const refused = await client
      .endSession(other.sessionId, { transcript: { digest: `sha256:${neverStored}`, bytes: 19, name: neverStored } })
      .catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(MemledgerError);
    expect((refused as MemledgerError).code).toBe("not_found");
    // the right name with the wrong size is not the stored object either
    const wrongSize = await client
      .endSession(other.sessionId, { transcript: { digest: `sha256:${sha256(transcriptText)}`, bytes: 1, name: sha256(transcriptText) } })
      .catch((err: unknown) => err);
    expect((wrongSize as MemledgerError).code).toBe("invalid");
    expect(await streamMessageCount(ledger.nc, stream)).toBe(before);

    const bytes = new TextEncoder().encode("a transcript from memory\n");
    await client.endSession(other.sessionId, { transcriptBytes: bytes });
    expect((await client.showSession(other.sessionId)).transcript?.digest).toBe(`sha256:${sha256(bytes)}`);
  }, 30_000);
});
