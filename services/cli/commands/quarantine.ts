import type { Command } from "commander";
import type { QuarantineOutcome } from "../../ledger-admin.js";
import { printJson, printLine } from "../io.js";
import type { CliContext } from "../context.js";
import { defined, keyOption, wholeNumber } from "../options.js";

/**
 * `memledger quarantine --app A --seq N --reason R`: an admin sets aside the message at stream sequence
 * N of app A's stream (`--app org`: the org stream), a message that is not a valid event and on which the
 * projections and the curator stop (`memledger status` shows it as `blocked`). Appends an audited
 * `ledger.quarantined` event, once per sequence; every reader skips N from then on. A valid event is
 * never set aside (`conflict`), and the log is never edited.
 */
export function register(program: Command, { io, globals, send }: CliContext): void {
  keyOption(
    program
      .command("quarantine")
      .description("admins: set aside a stream message that is not an event (projections stop on it); audited, once per sequence")
      .requiredOption("--seq <n>", "stream sequence of the message (`memledger status` names it under blocked)", wholeNumber(1))
      .requiredOption("--reason <text>", "why: kept in the log with who did it"),
  ).action(async (opts: { seq: number; reason: string; key?: string }, cmd: Command) => {
    const g = globals(cmd);
    const outcome = await send<"quarantine", QuarantineOutcome>(g, "quarantine", defined({ seq: opts.seq, reason: opts.reason, key: opts.key, sessionId: g.session }));
    if (g.json) printJson(io, outcome);
    else {
      printLine(
        io,
        `quarantined ${g.app} seq ${outcome.seq} (${outcome.subject}, ${outcome.bytes} bytes, ${outcome.digest}): ${outcome.error}; recorded at seq ${outcome.eventSeq}${outcome.replayed ? " (already done by this request)" : ""}`,
      );
    }
  });
}
