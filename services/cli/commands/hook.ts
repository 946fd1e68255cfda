import { execFile } from "node:child_process";
import { appendFile } from "node:fs/promises";
import { promisify } from "node:util";
import type { Command } from "commander";
import { z } from "zod";
import { LIMITS } from "../../../schemas/primitives.js";
import { ErrorCode, MemledgerError, invalid } from "../../../schemas/errors.js";
import type { ContextPack } from "../../hydration/pack.js";
import { readAll, type Io } from "../io.js";
import type { CliContext } from "../context.js";
import { wholeNumber } from "../options.js";

/**
 * Claude Code hooks (`memledger init` installs them in .claude/settings.json).
 *
 * What Claude Code sends and expects, per its hooks reference (https://code.claude.com/docs/en/hooks,
 * "SessionStart" and "SessionEnd"): a JSON object on stdin with `session_id`, `transcript_path`, `cwd`,
 * `hook_event_name`, plus `source` (startup | resume | clear | compact) for SessionStart and `reason`
 * (clear | logout | prompt_input_exit | other) for SessionEnd. A SessionStart hook that exits 0 may print
 * `{"hookSpecificOutput": {"hookEventName": "SessionStart", "additionalContext": "…"}}`, whose
 * additionalContext is added to the model's context; it cannot block the session, and SessionEnd's output
 * is not shown to the model. `CLAUDE_ENV_FILE`, when set for SessionStart, is a file of `export` lines
 * whose variables later Bash tool calls see.
 *
 * A hook must never stand in the user's way: a failure (no service, no git) is reported on stderr and in
 * the context, and the hook still exits 0.
 */

const execFileAsync = promisify(execFile);

/** Extra fields are Claude Code's to add (model, permission_mode, …): passthrough, not strict. */
const HookInput = z
  .object({
    session_id: z.string().min(1),
    transcript_path: z.string().optional(),
    cwd: z.string().optional(),
    hook_event_name: z.string().optional(),
    source: z.string().optional(),
    reason: z.string().optional(),
  })
  .passthrough();
export type HookInput = z.infer<typeof HookInput>;

export async function readHookInput(io: Io): Promise<HookInput> {
  const text = await readAll(io.stdin);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw invalid("the hook expects Claude Code's hook JSON on stdin");
  }
  const parsed = HookInput.safeParse(raw);
  if (!parsed.success) throw invalid(`hook input: ${parsed.error.issues[0]?.path.join(".")}: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}

/** A Claude Code session id as a memledger id: the same when it is one (a UUID is), else a stable token. */
export function sessionIdOf(claudeSessionId: string): string {
  if (/^[A-Za-z0-9_-]{1,64}$/.test(claudeSessionId)) return claudeSessionId;
  return claudeSessionId.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64);
}

async function git(cwd: string, ...args: string[]): Promise<string | null> {
  try {
    const { stdout } = await execFileAsync("git", args, { cwd, timeout: 5_000, maxBuffer: 4 * 1024 * 1024 });
    return stdout.trim();
  } catch {
    return null;
  }
}

export interface GitContext {
  branch: string | null;
  worktree: string | null;
  /** The branch the work will merge into: origin's HEAD, else main, else master. */
  defaultBranch: string | null;
  /** Paths changed against the default branch (committed on this branch or not), at most LIMITS.paths. */
  paths: string[];
}

/** What the repository says about the work at hand; every part null or empty outside a repository. */
export async function gitContext(cwd: string): Promise<GitContext> {
  const worktree = await git(cwd, "rev-parse", "--show-toplevel");
  if (worktree === null) return { branch: null, worktree: null, defaultBranch: null, paths: [] };
  const head = await git(cwd, "rev-parse", "--abbrev-ref", "HEAD");
  const branch = head && head !== "HEAD" ? head : null;
  let defaultBranch = (await git(cwd, "symbolic-ref", "--short", "refs/remotes/origin/HEAD")) ?? null;
  if (defaultBranch === null) {
    for (const candidate of ["main", "master"]) {
      if ((await git(cwd, "rev-parse", "--verify", "--quiet", `refs/heads/${candidate}`)) !== null) {
        defaultBranch = candidate;
        break;
      }
    }
  }
  const base = defaultBranch ? await git(cwd, "merge-base", defaultBranch, "HEAD") : null;
  // Against the merge base and the working tree: what this branch changed, committed or not.
  const changed = await git(worktree, "diff", "--name-only", base ?? "HEAD");
  const untracked = await git(worktree, "ls-files", "--others", "--exclude-standard");
  const paths = [...new Set([...(changed ?? "").split("\n"), ...(untracked ?? "").split("\n")])]
    .filter((p) => p.length > 0 && p.length <= LIMITS.pathLength)
    .slice(0, LIMITS.paths);
  return { branch, worktree, defaultBranch, paths };
}

/** The task a session is for: MEMLEDGER_TASK, else the branch's words (`fix/webhook-retries` → "fix webhook retries"). */
const taskOf = (env: NodeJS.ProcessEnv, branch: string | null): string =>
  (env.MEMLEDGER_TASK ?? "").trim() || (branch ? branch.replace(/[/_.-]+/g, " ").trim() : "");

const describe = (err: unknown): string => (err instanceof MemledgerError ? `${err.code}: ${err.message}` : (err as Error).message);

export function register(program: Command, { io, globals }: CliContext): void {
  const hook = program.command("hook").description("Claude Code hooks (installed by memledger init): read the hook JSON on stdin");

  hook
    .command("session-start")
    .description("SessionStart: starts a memledger session (branch, worktree, task and paths from git) and prints the hydration pack as additionalContext")
    .option("--budget <tokens>", "token ceiling for the pack (default 4000)", wholeNumber(1))
    .action(async (opts: { budget?: number }, cmd: Command) => {
      const g = globals(cmd);
      const input = await readHookInput(io);
      const sessionId = sessionIdOf(input.session_id);
      const context = await gitContext(input.cwd ?? process.cwd());
      const task = taskOf(io.env, context.branch);
      const header = [`memledger: app ${g.app}, acting as ${g.as.kind}:${g.as.id}, session ${sessionId}${context.branch ? `, branch ${context.branch}` : ""}.`];
      let markdown: string;
      try {
        const { MemoryClient } = await import("../../client.js");
        const client = await MemoryClient.connect({ app: g.app, as: g.as, prefix: g.prefix, servers: g.nats });
        try {
          const where = { ...(context.branch ? { branch: context.branch } : {}), ...(context.worktree ? { worktree: context.worktree } : {}) };
          try {
            await client.startSession({ sessionId, task, ...where, ...(Object.keys(where).length > 0 ? { git: where } : {}) });
          } catch (err) {
            // resume, clear and compact fire SessionStart again for a session memledger already knows.
            if (!(err instanceof MemledgerError && err.code === ErrorCode.conflict)) throw err;
          }
          const pack: ContextPack = await client.hydrate({ task, paths: context.paths, sessionId, ...(context.branch ? { branch: context.branch } : {}), ...(opts.budget ? { budget: opts.budget } : {}) });
          markdown = pack.markdown;
        } finally {
          await client.close().catch(() => undefined);
        }
        // Later `memledger` calls from the agent's Bash tool carry the session (Claude Code's CLAUDE_ENV_FILE).
        if (io.env.CLAUDE_ENV_FILE) await appendFile(io.env.CLAUDE_ENV_FILE, `export MEMLEDGER_SESSION=${sessionId}\n`).catch(() => undefined);
      } catch (err) {
        io.stderr.write(`memledger hook session-start: ${describe(err)}\n`);
        markdown = `_memledger could not hydrate this session (${describe(err)}); its memory tools may be unavailable._\n`;
      }
      const output = { hookSpecificOutput: { hookEventName: "SessionStart", additionalContext: `${header.join("\n")}\n\n${markdown}` } };
      io.stdout.write(`${JSON.stringify(output)}\n`);
    });

  hook
    .command("session-end")
    .description("SessionEnd: ends the memledger session and stores the transcript (transcript_path) in the object store, referenced by digest")
    .action(async (_opts, cmd: Command) => {
      const g = globals(cmd);
      const input = await readHookInput(io);
      const sessionId = sessionIdOf(input.session_id);
      try {
        const { MemoryClient } = await import("../../client.js");
        const client = await MemoryClient.connect({ app: g.app, as: g.as, prefix: g.prefix, servers: g.nats });
        try {
          const summary = input.reason ? `Claude Code session ended (${input.reason})`.slice(0, LIMITS.reasonLength) : undefined;
          const options = summary ? { summary } : {};
          let ended;
          try {
            ended = await client.endSession(sessionId, { ...options, ...(input.transcript_path ? { transcriptFile: input.transcript_path } : {}) });
          } catch (err) {
            // An unreadable transcript must not leave the session open: end it without one, and say so.
            if (!(err instanceof MemledgerError && err.code === ErrorCode.invalid && err.details.file !== undefined)) throw err;
            io.stderr.write(`memledger hook session-end: ${describe(err)}; ending the session without a transcript\n`);
            ended = await client.endSession(sessionId, options);
          }
          if (g.json) io.stdout.write(`${JSON.stringify(ended)}\n`);
        } finally {
          await client.close().catch(() => undefined);
        }
      } catch (err) {
        if (err instanceof MemledgerError && err.code === ErrorCode.conflict && err.details.reason === "already_ended") return;
        io.stderr.write(`memledger hook session-end: ${describe(err)}\n`);
      }
    });
}
