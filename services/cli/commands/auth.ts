import type { Command } from "commander";
import type { CliContext } from "../context.js";
import { printJson } from "../io.js";
import { wholeNumber } from "../options.js";

/** `memledger auth config`: identity from the broker, nats-server users and permissions from a policy. */
export function register(program: Command, { io, globals }: CliContext): void {
  program
    .command("auth")
    .description("identity from the broker: nats-server users and permissions from a policy")
    .command("config")
    .description("write a nats-server config (users, permissions, JetStream) and, beside it, a 0600 credentials file; prints no secret")
    .requiredOption("--policy <file>", "the policy whose actors become users (JSON or YAML)")
    .option("--out <file>", "the config to write (default nats.conf); credentials go to <name>.credentials.json beside it")
    .option("--port <n>", "port nats-server listens on (default 4222)", wholeNumber(1))
    .option("--host <addr>", "address nats-server listens on (default 127.0.0.1)")
    .option("--store-dir <dir>", "JetStream store directory (default: jetstream beside the config)")
    .option("--bcrypt-cost <n>", "bcrypt cost of the password hashes in the config (default 8; every login pays it)", wholeNumber(4))
    .action(async (opts: { policy: string; out?: string; port?: number; host?: string; storeDir?: string; bcryptCost?: number }, cmd: Command) => {
      const g = globals(cmd);
      const { writeAuthConfig } = await import("../../auth/broker-config.js");
      printJson(io, await writeAuthConfig({ policyFile: opts.policy, out: opts.out, prefix: g.prefix, port: opts.port, host: opts.host, storeDir: opts.storeDir, bcryptCost: opts.bcryptCost }), !g.json);
    });
}
