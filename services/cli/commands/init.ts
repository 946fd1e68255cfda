import { execFile } from "node:child_process";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { userInfo } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import type { Command } from "commander";
import { DEFAULT_PREFIX } from "../../../events/subjects.js";
import { invalid } from "../../../schemas/errors.js";
import { DEFAULT_NATS_URL } from "../../nats.js";
import { printJson, printLine } from "../io.js";
import type { CliContext } from "../context.js";

/**
 * `memledger init`: wires a repository's Claude Code to memledger. Writes the MCP server into `.mcp.json`
 * (project-scoped MCP servers: `{"mcpServers": {name: {command, args, env}}}`) and the SessionStart and
 * SessionEnd hooks into `.claude/settings.json` (`{"hooks": {Event: [{matcher?, hooks: [{type: "command",
 * command, timeout?}]}]}}`, per https://code.claude.com/docs/en/hooks). Both files are merged: every key,
 * server and hook that is not memledger's stays as it was; memledger's own entries are replaced in place.
 * Running it twice writes the same bytes.
 */

const SERVER_NAME = "memledger";
const HOOK_TIMEOUT_SECONDS = 30;

type Json = Record<string, unknown>;

interface InitPlan {
  /** The command that runs memledger, split into words: `memledger` or e.g. `npx memledger`. */
  command: string[];
  /** Global options memledger needs to find this repository's ledger. */
  globals: string[];
}

async function readJson(file: string): Promise<Json> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw err;
  }
  if (text.trim() === "") return {};
  try {
    const value = JSON.parse(text) as unknown;
    if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error("not a JSON object");
    return value as Json;
  } catch (err) {
    throw invalid(`${file} is not a JSON object (${(err as Error).message}): fix or move it, then run init again`);
  }
}

/** Written only when different, atomically (a rename), with the two-space indent and final newline editors keep. */
async function writeJson(file: string, value: Json): Promise<boolean> {
  const text = `${JSON.stringify(value, null, 2)}\n`;
  const before = await readFile(file, "utf8").catch(() => null);
  if (before === text) return false;
  await mkdir(path.dirname(file), { recursive: true });
  const temp = `${file}.memledger-${process.pid}.tmp`;
  await writeFile(temp, text);
  await rename(temp, file);
  return true;
}

const quoteWord = (word: string): string => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`);

/** Whether a hook command is one of ours for this verb (whatever memledger command or options it was written with). */
const isOurHook = (command: unknown, verb: string): boolean =>
  typeof command === "string" && /memledger|main\.js/.test(command) && command.trimEnd().endsWith(`hook ${verb}`);

function mergeHook(settings: Json, event: string, verb: string, command: string): void {
  const hooks = (settings.hooks && typeof settings.hooks === "object" && !Array.isArray(settings.hooks) ? settings.hooks : (settings.hooks = {})) as Json;
  const groups = (Array.isArray(hooks[event]) ? hooks[event] : (hooks[event] = [])) as Json[];
  const ours = { type: "command", command, timeout: HOOK_TIMEOUT_SECONDS };
  for (const group of groups) {
    const list = Array.isArray(group?.hooks) ? (group.hooks as Json[]) : [];
    const at = list.findIndex((h) => isOurHook(h?.command, verb));
    if (at >= 0) {
      list[at] = ours;
      return;
    }
  }
  groups.push({ hooks: [ours] });
}

export async function initRepository(root: string, plan: InitPlan): Promise<{ mcpJson: string; settings: string; changed: string[] }> {
  const [program, ...programArgs] = plan.command;
  const mcpFile = path.join(root, ".mcp.json");
  const mcp = await readJson(mcpFile);
  const servers = (mcp.mcpServers && typeof mcp.mcpServers === "object" && !Array.isArray(mcp.mcpServers) ? mcp.mcpServers : (mcp.mcpServers = {})) as Json;
  servers[SERVER_NAME] = { command: program, args: [...programArgs, ...plan.globals, "mcp"] };

  const settingsFile = path.join(root, ".claude", "settings.json");
  const settings = await readJson(settingsFile);
  const hookCommand = (verb: string) => [...plan.command, ...plan.globals, "hook", verb].map(quoteWord).join(" ");
  mergeHook(settings, "SessionStart", "session-start", hookCommand("session-start"));
  mergeHook(settings, "SessionEnd", "session-end", hookCommand("session-end"));

  const changed: string[] = [];
  if (await writeJson(mcpFile, mcp)) changed.push(mcpFile);
  if (await writeJson(settingsFile, settings)) changed.push(settingsFile);
  return { mcpJson: mcpFile, settings: settingsFile, changed };
}

/** The identity Claude Code acts as here: --as, MEMLEDGER_AGENT, else `claude-<login>`. */
function defaultAgent(): string {
  let login = "";
  try {
    login = userInfo().username;
  } catch {
    // no passwd entry (some containers): a plain name still works
  }
  const safe = login.replace(/[^A-Za-z0-9_-]/g, "").slice(0, 50);
  return safe ? `claude-${safe}` : "claude";
}

export function register(program: Command, { io, globals }: CliContext): void {
  program
    .command("init")
    .description("wire this repository's Claude Code to memledger: the MCP server in .mcp.json, SessionStart/SessionEnd hooks in .claude/settings.json (merged, idempotent)")
    .option("--dir <path>", "the repository (default: the git top level of the current directory, else it)")
    .option("--command <cmd>", "how to run memledger from the repository (default \"memledger\"; e.g. \"npx memledger\")")
    .action(async (opts: { dir?: string; command?: string }, cmd: Command) => {
      const g = globals(cmd);
      const raw = cmd.optsWithGlobals() as { as?: string; nats?: string; prefix?: string; app?: string };
      const start = path.resolve(opts.dir ?? process.cwd());
      const top = await promisify(execFile)("git", ["rev-parse", "--show-toplevel"], { cwd: start }).then(
        (r) => r.stdout.trim(),
        () => null,
      );
      const root = top ?? start;
      const agent = raw.as ?? (io.env.MEMLEDGER_AGENT || defaultAgent());
      // Only what differs from the defaults is written, so a default setup stays portable between machines.
      const globalArgs = ["--app", g.app, "--as", agent];
      if (g.prefix !== DEFAULT_PREFIX) globalArgs.push("--prefix", g.prefix);
      if (raw.nats !== undefined && raw.nats !== DEFAULT_NATS_URL) {
        if (/\/\/[^/@\s]+@/.test(raw.nats)) throw invalid("--nats carries credentials: init would write them into the repository; set NATS_URL in the environment instead");
        globalArgs.push("--nats", raw.nats);
      }
      const command = (opts.command ?? "memledger").trim().split(/\s+/).filter((w) => w.length > 0);
      if (command.length === 0) throw invalid("--command must name a program");
      const result = await initRepository(root, { command, globals: globalArgs });
      if (g.json) printJson(io, { root, app: g.app, as: agent, ...result });
      else {
        printLine(io, `${result.changed.length > 0 ? "wrote" : "unchanged:"} ${path.relative(root, result.mcpJson)} (MCP server "${SERVER_NAME}") and ${path.relative(root, result.settings)} (SessionStart, SessionEnd hooks)`);
        printLine(io, `Claude Code in ${root} now uses memledger app ${g.app} as agent ${agent}; keep 'memledger up' running.`);
      }
    });
}
