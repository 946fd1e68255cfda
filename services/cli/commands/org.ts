import type { Command } from "commander";
import type { PromoteOutcome } from "../../../schemas/commands.js";
import type { CliContext } from "../context.js";
import { printJson, printLine, redactUrl, toFailure, type Io } from "../io.js";
import { defined, keyOption, modeOption, wholeNumber, type GlobalOptions } from "../options.js";

/**
 * Org knowledge from the command line:
 *   memledger promote ID [--reason R]       ask the curator to make an approved memory org knowledge
 *   memledger curator [--curator-policy F]  run the curator alone (`memledger up` runs it too)
 *   memledger org search "QUERY"            search the org's memories only
 */
export function register(program: Command, { io, globals, send, run, setExitCode }: CliContext): void {
  keyOption(
    program
      .command("promote")
      .description("ask the curator to make the memory's approved version org knowledge; `show ID` lists the decision")
      .argument("<id>", "memory id")
      .option("--reason <text>", "why it holds beyond this app"),
  ).action(async (id: string, opts: { reason?: string; key?: string }, cmd: Command) => {
    const g = globals(cmd);
    printJson(io, await send<"promote", PromoteOutcome>(g, "promote", defined({ memoryId: id, reason: opts.reason, key: opts.key, sessionId: g.session })));
  });

  program
    .command("curator")
    .description("run the curator alone until SIGINT or SIGTERM: promotion requests of every app become org memories")
    .option("--curator-policy <file>", "how promotions are decided, JSON or YAML (env MEMLEDGER_CURATOR_POLICY; default: nothing auto-approved)")
    .option("--policy <file>", "who may do what (env MEMLEDGER_POLICY): the curator writes the org only if service:curator may")
    .option("--replicas <n>", "replicas for the org stream if it creates it", wholeNumber(1))
    .action(async (opts: { curatorPolicy?: string; policy?: string; replicas?: number }, cmd: Command) => {
      setExitCode(await runCurator(globals(cmd), opts, io));
    });

  modeOption(
    program
      .command("org")
      .description("org knowledge, shared by every app")
      .command("search")
      .description("search the org's active memories only (`memledger search` searches the app's and the org's together)")
      .argument("<query>", "words, identifiers or paths"),
    "bm25, vector or hybrid (default hybrid)",
  )
    .option("--k <n>", "how many results (default 10)", wholeNumber(1))
    .option("--kind <kind>", "only this kind")
    .action(async (query: string, opts: { mode?: string; k?: number; kind?: string }, cmd: Command) => {
      const g = globals(cmd);
      // The org stream is projected as the search index of the app "org": the same search, on that index only.
      // As the same actor: what it may read is decided by the policy either way.
      const argv = ["search", query, "--app", "org", "--nats", g.nats, "--prefix", g.prefix, "--as", `${g.as.kind}:${g.as.id}`];
      if (opts.mode !== undefined) argv.push("--mode", opts.mode);
      if (opts.k !== undefined) argv.push("--k", String(opts.k));
      if (opts.kind !== undefined) argv.push("--kind", opts.kind);
      if (g.json) argv.push("--json");
      setExitCode(await run(argv, io));
    });
}

/** Like `up`, with the curator as the only component. */
async function runCurator(g: GlobalOptions, opts: { curatorPolicy?: string; policy?: string; replicas?: number }, io: Io): Promise<number> {
  const log = (line: string) => io.stderr.write(`memledger curator: ${line}\n`);
  // Loaded on use, like `up`: the runtime pulls in every service.
  const [{ resolvePolicy }, { resolveCuratorPolicy }, { curatorComponent, startMemledger }] = await Promise.all([
    import("../../auth/load.js"),
    import("../../curator/load.js"),
    import("../../runtime.js"),
  ]);
  const curatorPolicy = await resolveCuratorPolicy(opts.curatorPolicy, io.env);
  const { policy, source } = await resolvePolicy(opts.policy, io.env);
  const runtime = await startMemledger({
    servers: g.nats,
    prefix: g.prefix,
    replicas: opts.replicas,
    policy,
    components: [curatorComponent(curatorPolicy)],
    onError: (err, where) => log(`error: ${where}: ${toFailure(err).message}`),
  });
  const ready = { status: "ready", prefix: runtime.prefix, nats: redactUrl(g.nats), components: runtime.components, policy: source, curatorPolicy };
  if (g.json) printJson(io, ready);
  else printLine(io, `memledger curator ready: promotions under ${runtime.prefix} via ${ready.nats} (policy: ${source}; auto-approve: ${curatorPolicy.autoApprove})`);
  return new Promise<number>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      log(`${signal}: stopping`);
      runtime.stop().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    void runtime.closed.then((err) => {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      if (err) log(`connection to NATS closed: ${toFailure(err).message}`);
      resolve(err ? 1 : 0);
    });
  });
}
