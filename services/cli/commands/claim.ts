import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { printJson, printLine } from "../io.js";
import { defined, keyOption, ttlOption, wholeNumber } from "../options.js";

/**
 * Work coordination:
 *   memledger claim / renew / release NAME [--lock]   a lease on a task (or a lock on a path or module)
 *   memledger claims, memledger tasks                 what is held, what is open
 *   memledger task open NAME                          a task others can claim
 */
export function register(program: Command, { io, globals, send }: CliContext): void {
  const claimOptions = (c: Command) =>
    keyOption(c.option("--lock", "a lock on a module or path instead of a task"));

  claimOptions(
    ttlOption(
      program
        .command("claim")
        .description("claim a task (or, with --lock, a module or path) for a lease; conflict (exit 3) names the holder")
        .argument("<name>", "task id, or the path/module with --lock"),
      "lease length, e.g. 90s, 10m, 2h (default 10m)",
    ).option("--priority <n>", "1 (most urgent) to 5, when the claim opens the task", wholeNumber(1)),
  ).action(async (name: string, opts, cmd: Command) => {
    const g = globals(cmd);
    printJson(io, await send(g, "claim", defined({ name, kind: opts.lock ? "lock" : "task", ttlMs: opts.ttl, priority: opts.priority, key: opts.key, sessionId: g.session })));
  });

  claimOptions(
    ttlOption(program.command("renew").description("extend your lease").argument("<name>", "task id, or the path/module with --lock"), "new lease length (default: the current one)"),
  ).action(async (name: string, opts, cmd: Command) => {
    const g = globals(cmd);
    printJson(io, await send(g, "renew", defined({ name, kind: opts.lock ? "lock" : "task", ttlMs: opts.ttl, key: opts.key, sessionId: g.session })));
  });

  claimOptions(
    program
      .command("release")
      .description("give a claim back; --done marks the task finished")
      .argument("<name>", "task id, or the path/module with --lock")
      .option("--done", "the task is finished for good"),
  ).action(async (name: string, opts, cmd: Command) => {
    const g = globals(cmd);
    printJson(io, await send(g, "release", defined({ name, kind: opts.lock ? "lock" : "task", done: opts.done, key: opts.key, sessionId: g.session })));
  });

  program
    .command("claims")
    .description("live claims and locks (from the Redis projection)")
    .option("--agent <id>", "only what this agent holds")
    .action(async (opts: { agent?: string }, cmd: Command) => {
      const g = globals(cmd);
      const claims = await send<"claims", { kind: string; name: string; holder: string; expiresAt: string }[]>(g, "claims", defined({ agent: opts.agent }));
      for (const c of claims) {
        if (g.json) printJson(io, c);
        else printLine(io, `${c.kind.padEnd(4)}  ${c.name}  held by ${c.holder} until ${c.expiresAt}`);
      }
    });

  program
    .command("tasks")
    .description("open tasks by priority")
    .option("--unclaimed", "only tasks nobody holds")
    .option("--limit <n>", "at most this many (default 100)", wholeNumber(1))
    .action(async (opts: { unclaimed?: boolean; limit?: number }, cmd: Command) => {
      const g = globals(cmd);
      const tasks = await send<"tasks", { name: string; priority: number; title: string | null; holder?: string | null }[]>(g, "tasks", defined({ unclaimed: opts.unclaimed, limit: opts.limit }));
      for (const t of tasks) {
        if (g.json) printJson(io, t);
        else printLine(io, `p${t.priority}  ${t.name}${t.title ? `  ${t.title}` : ""}${t.holder ? `  (held by ${t.holder})` : ""}`);
      }
    });

  keyOption(
    program
      .command("task")
      .description("tasks: open")
      .command("open")
      .description("open a task others can claim")
      .argument("<name>", "task id")
      .option("--title <text>", "what it is")
      .option("--priority <n>", "1 (most urgent) to 5 (default 3)", wholeNumber(1)),
  ).action(async (name: string, opts, cmd: Command) => {
    const g = globals(cmd);
    printJson(io, await send(g, "open_task", defined({ name, title: opts.title, priority: opts.priority, key: opts.key, sessionId: g.session })));
  });
}
