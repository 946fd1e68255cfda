import type { Command } from "commander";
import type { RequestOf, Verb } from "../../schemas/commands.js";
import { MemoryClient } from "../client.js";
import type { Io } from "./io.js";
import { checkRequest, resolveGlobals, type GlobalOptions } from "./options.js";

/** Sends one request to the command service and resolves to its reply. */
export type Send = <V extends Verb, R = unknown>(g: GlobalOptions, verb: V, payload: RequestOf<V>) => Promise<R>;

/** What every noun's `register(program, ctx)` gets: the one way each command reaches the outside. */
export interface CliContext {
  io: Io;
  /** The global options (--app, --nats, --as, ...) as seen from this command, env defaults applied. */
  globals(cmd: Command): GlobalOptions;
  send: Send;
  /** The exit status of a command that succeeds in running but reports a failure (verify, up, curator). */
  setExitCode(code: number): void;
  /** Runs another command line in-process (org search is search on the org's index). */
  run(argv: string[], io: Io): Promise<number>;
}

/** Sends one request: checked locally first (nothing is sent when it is invalid), then to the service. */
export const send: Send = async <V extends Verb, R>(g: GlobalOptions, verb: V, payload: RequestOf<V>): Promise<R> => {
  checkRequest(verb, payload);
  const client = await MemoryClient.connect({ app: g.app, as: g.as, prefix: g.prefix, servers: g.nats });
  try {
    return await client.request<V, R>(verb, payload);
  } finally {
    await client.close().catch(() => undefined);
  }
};

export function cliContext(io: Io, setExitCode: (code: number) => void, run: CliContext["run"]): CliContext {
  return { io, globals: (cmd) => resolveGlobals(cmd.optsWithGlobals(), io.env), send, setExitCode, run };
}
