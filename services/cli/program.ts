import { Command, CommanderError } from "commander";
import { invalid } from "../../schemas/errors.js";
import { cliContext, type CliContext } from "./context.js";
import { reportFailure, toFailure, type Io } from "./io.js";
import * as up from "./commands/up.js";
import * as memory from "./commands/memory.js";
import * as session from "./commands/session.js";
import * as auth from "./commands/auth.js";
import * as projection from "./commands/projection.js";
import * as search from "./commands/search.js";
import * as claim from "./commands/claim.js";
import * as hydrate from "./commands/hydrate.js";
import * as org from "./commands/org.js";
import * as evaluation from "./commands/eval.js";
import * as audit from "./commands/audit.js";
import * as mcp from "./commands/mcp.js";
import * as init from "./commands/init.js";
import * as hook from "./commands/hook.js";
import * as watch from "./commands/watch.js";
import * as quarantine from "./commands/quarantine.js";
import * as dream from "./commands/dream.js";
import * as ui from "./commands/ui.js";

/** One file per noun (services/cli/commands/), in the order `memledger --help` lists them. */
const NOUNS: readonly { register(program: Command, ctx: CliContext): void }[] = [
  up,
  memory,
  session,
  auth,
  projection,
  search,
  claim,
  hydrate,
  org,
  evaluation,
  audit,
  mcp,
  init,
  hook,
  watch,
  quarantine,
  dream,
  ui,
];

const GLOBALS_HELP = `
Global options go before or after the command. Environment defaults:
  MEMLEDGER_APP, NATS_URL, MEMLEDGER_AGENT, MEMLEDGER_PREFIX, MEMLEDGER_SESSION.
Exit status: 0 ok, 2 invalid input or usage, 3 conflict, 4 forbidden, 5 not found, 1 anything else.`;

export function buildProgram(io: Io, setExitCode: (code: number) => void): Command {
  const program = new Command("memledger");
  program
    .description("Event-sourced memory ledger for teams of AI agents, over NATS JetStream")
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      // run() prints errors itself, as one line (or JSON with --json).
      outputError: () => undefined,
    })
    .configureHelp({ showGlobalOptions: true })
    .option("--app <name>", "app whose ledger to use (env MEMLEDGER_APP, default \"default\")")
    .option("--nats <url>", "NATS server URL (env NATS_URL, default nats://127.0.0.1:4222)")
    .option("--as <actor>", "who acts: <agent id> or <kind>:<id>, kind agent|human|service (env MEMLEDGER_AGENT, default \"cli\")")
    .option("--prefix <prefix>", "subject and stream prefix (env MEMLEDGER_PREFIX, default \"memledger\")")
    .option("--session <id>", "session id sent with commands (env MEMLEDGER_SESSION)")
    .option("--json", "machine-readable output: one JSON value a line; errors as JSON on stderr")
    .addHelpText("after", GLOBALS_HELP);

  const ctx = cliContext(io, setExitCode, run);
  for (const noun of NOUNS) noun.register(program, ctx);
  return program;
}

/** Parses argv (without node and script), runs the verb, reports any failure; resolves to the exit status. */
export async function run(argv: string[], io: Io): Promise<number> {
  let exitCode = 0;
  const program = buildProgram(io, (code) => {
    exitCode = code;
  });
  try {
    await program.parseAsync(argv, { from: "user" });
    return exitCode;
  } catch (err) {
    // --help, `help` and the like end through exitOverride with status 0.
    if (err instanceof CommanderError && err.exitCode === 0) return 0;
    const failure =
      err instanceof CommanderError && err.code === "commander.help"
        ? toFailure(invalid("missing command; see memledger --help"))
        : toFailure(err);
    const json = program.opts().json === true || argv.includes("--json");
    reportFailure(io, failure, json);
    if (io.env.MEMLEDGER_DEBUG && err instanceof Error && err.stack) io.stderr.write(`${err.stack}\n`);
    return failure.exitCode;
  }
}
