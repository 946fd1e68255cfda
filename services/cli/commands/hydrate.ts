import type { Command } from "commander";
import { forbidden, MemledgerError } from "../../../schemas/errors.js";
import type { ContextPack } from "../../hydration/pack.js";
import { printJson, type Io } from "../io.js";
import type { CliContext } from "../context.js";
import { asOfOptions, commaList, defined, isAsOf, parseAsOf, snapshotOption, wholeNumber, type AsOfOptions, type GlobalOptions } from "../options.js";

interface HydrateOptions {
  agent?: string;
  task?: string;
  branch?: string;
  paths?: string[];
  budget?: number;
  files?: string;
}

/**
 * When no service answers, an agent still gets the part it can read itself: MEMORY.md from the local
 * files root, in the same pack format and budget, every other section saying why it is missing.
 */
async function localPack(g: GlobalOptions, opts: HydrateOptions, io: Io, why: string): Promise<ContextPack | null> {
  // The offline fallback only: loaded when no service answered (the tokenizer's tables are large).
  const [{ readMemoryIndex }, { assemblePack }, { o200kTokens }, { readModelConfig }] = await Promise.all([
    import("../../../projections/files/index.js"),
    import("../../hydration/pack.js"),
    import("../../hydration/tokens.js"),
    import("../../read-models.js"),
  ]);
  const root = readModelConfig(io.env, { filesRoot: opts.files }).filesRoot;
  const index = await readMemoryIndex(root, g.app).catch(() => null);
  if (index === null) return null;
  const unavailable = { available: false as const, reason: why };
  return assemblePack(
    {
      app: g.app,
      agent: opts.agent ?? g.as.id,
      task: opts.task ?? "",
      branch: opts.branch ?? null,
      paths: opts.paths ?? [],
      memoryIndex: { available: true, value: index },
      relevant: [],
      fragileCandidates: [],
      claims: unavailable,
      changes: { since: null, events: [], omittedOlder: 0 },
    },
    { budget: opts.budget ?? 4000 },
    o200kTokens,
  );
}

/**
 * `hydrate --as-of-seq N | --as-of TIME`: an auditor's read straight from the log (no service, no
 * receipt), the pack built by hydration's own code from the state of that moment
 * (services/audit/time-travel.ts), under the same read policy as a live pack.
 */
async function packAsOf(g: GlobalOptions, opts: HydrateOptions & AsOfOptions, io: Io): Promise<ContextPack> {
  const asOf = parseAsOf(opts);
  const [{ hydrateAsOf }, { resolvePolicy }, { mayRead }, { withStore }] = await Promise.all([
    import("../../audit/time-travel.js"),
    import("../../auth/load.js"),
    import("../../../schemas/policy.js"),
    import("../read-models.js"),
  ]);
  const { policy } = await resolvePolicy(undefined, io.env);
  const readable = (scope: string) => mayRead(policy, g.as, scope);
  const agent = opts.agent ?? g.as.id;
  // Someone else's pack shows that agent's scratchpad: only for those who may read it (as the service says).
  if (agent !== g.as.id && !readable(`agent:${agent}`)) throw forbidden(`hydrate --agent ${agent}: ${g.as.kind}:${g.as.id} may not read agent:${agent}`);
  const input = { agent, task: opts.task ?? "", branch: opts.branch ?? null, paths: opts.paths ?? [], budget: opts.budget ?? 4000, sessionId: g.session, readable };
  return (await withStore(g, (store) => hydrateAsOf(store, g.app, input, asOf, { noSnapshot: opts.snapshot === false }))).pack;
}

export function register(program: Command, { io, globals, send }: CliContext): void {
  const hydrate = program
    .command("hydrate")
    .description("one markdown context pack for starting a session: fragile memories on your paths, others' claims, relevant memories, MEMORY.md, changes since your last session")
    .option("--agent <id>", "whose pack (default: --as)")
    .option("--task <text>", "what the session is for: ranks the relevant memories")
    .option("--branch <name>", "git branch: boosts memories proposed on it")
    .option("--paths <p,q>", "paths you will touch: fragile memories and locks on them, boosts", commaList)
    .option("--budget <tokens>", "token ceiling for the pack, o200k_base (default 4000)", wholeNumber(1))
    .option("--files <dir>", "local files root for MEMORY.md when no service answers (env MEMLEDGER_FILES)");
  snapshotOption(asOfOptions(hydrate, "the pack as it would have been at this time (ISO 8601), folded from the log"))
    .action(async (opts: HydrateOptions & AsOfOptions, cmd: Command) => {
      const g = globals(cmd);
      if (isAsOf(opts)) {
        const pack = await packAsOf(g, opts, io);
        if (g.json) printJson(io, pack);
        else io.stdout.write(pack.markdown);
        return;
      }
      const payload = defined({ agent: opts.agent, task: opts.task, branch: opts.branch, paths: opts.paths, budget: opts.budget, sessionId: g.session });
      let pack: ContextPack;
      try {
        pack = await send<"hydrate", ContextPack>(g, "hydrate", payload);
      } catch (err) {
        if (!(err instanceof MemledgerError && err.code === "unavailable")) throw err;
        const local = await localPack(g, opts, io, "no memledger service answered, so only the local MEMORY.md is shown");
        if (!local) throw err;
        io.stderr.write(`memledger: ${err.message}; falling back to the local MEMORY.md\n`);
        pack = local;
      }
      if (g.json) printJson(io, pack);
      else io.stdout.write(pack.markdown);
    });
}
