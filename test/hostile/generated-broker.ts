import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { PermissionViolationError, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import type { CredentialsFile } from "../../services/auth/broker-config.js";
import { run } from "../../services/cli/program.js";
import { connectNats } from "../../services/nats.js";
import { freePort, startNatsServer, type NatsServer } from "../support/servers.js";
import { uniquePrefix } from "../support/env.js";

/**
 * A private nats-server (own port and store, stopped by pid) running the configuration that
 * `memledger auth config` generated from a policy: what an operator deploys, attacked as it is.
 */
export interface GeneratedBroker {
  dir: string;
  prefix: string;
  policyFile: string;
  configFile: string;
  server: NatsServer;
  creds: CredentialsFile;
  /** Connects as one user of the credentials file, the way the SDK and CLI do (URL only). */
  connectAs(name: string): Promise<NatsConnection>;
  /** `memledger <argv>` in this process, as `as` (its URL in NATS_URL), on this broker's prefix. */
  cli(as: string, argv: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Message count of every stream of the prefix, by name. */
  streamCounts(): Promise<Record<string, number>>;
  stop(): Promise<void>;
}

export async function startGeneratedBroker(policy: unknown, label = "hostile"): Promise<GeneratedBroker> {
  const dir = await mkdtemp(join(tmpdir(), "memledger-hostile-"));
  const prefix = uniquePrefix(label);
  const policyFile = join(dir, "policy.json");
  await writeFile(policyFile, JSON.stringify(policy));
  const port = await freePort();
  const storeDir = join(dir, "jetstream");
  const configFile = join(dir, "nats.conf");
  const connections: NatsConnection[] = [];
  let admin: NatsConnection | undefined;

  const cli = async (as: string, argv: string[], url?: string) => {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let out = "";
    let err = "";
    stdout.on("data", (c: Buffer) => (out += c.toString()));
    stderr.on("data", (c: Buffer) => (err += c.toString()));
    const env = { NATS_URL: url ?? "", MEMLEDGER_PREFIX: prefix, MEMLEDGER_AGENT: as };
    const code = await run(argv, { stdin: process.stdin, stdout, stderr, env } as never);
    return { code, stdout: out, stderr: err };
  };

  const generated = await cli("human:ops", ["auth", "config", "--policy", policyFile, "--out", configFile, "--port", String(port), "--store-dir", storeDir, "--json"]);
  if (generated.code !== 0) throw new Error(`auth config failed: ${generated.stderr}`);
  const creds = JSON.parse(await readFile(join(dir, "nats.credentials.json"), "utf8")) as CredentialsFile;
  // The generated file as it is (listen, store, users); startNatsServer's own listen/store lines say the same.
  const server = await startNatsServer({ port, storeDir, config: await readFile(configFile, "utf8") });

  const broker: GeneratedBroker = {
    dir,
    prefix,
    policyFile,
    configFile,
    server,
    creds,
    async connectAs(name) {
      const user = creds.users[name];
      if (!user) throw new Error(`no user ${name} in the credentials file`);
      const nc = await connectNats({ servers: user.url, name: `hostile-${name}`, reconnect: false });
      connections.push(nc);
      return nc;
    },
    cli: (as, argv) => cli(as, argv, creds.users[as]?.url),
    async streamCounts() {
      admin ??= await broker.connectAs("memledger");
      const jsm = await jetstreamManager(admin);
      const counts: Record<string, number> = {};
      for await (const info of jsm.streams.list()) {
        if (info.config.name.startsWith(`${prefix}_`)) counts[info.config.name] = info.state.messages;
      }
      return counts;
    },
    async stop() {
      for (const nc of connections) await nc.close().catch(() => undefined);
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return broker;
}

/** Every permission violation the server reported on a connection (the v3 client's status events). */
export function violations(nc: NatsConnection): PermissionViolationError[] {
  const seen: PermissionViolationError[] = [];
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === "error" && s.error instanceof PermissionViolationError) seen.push(s.error);
    }
  })();
  return seen;
}

/** Lets the status iterator deliver what the server answered before the flush's PONG. */
export async function settle(nc: NatsConnection): Promise<void> {
  await nc.flush();
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}
