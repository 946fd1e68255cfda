import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { closeSync, openSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * Private servers for tests that need their own configuration (auth, a cluster, a crash): each runs on
 * its own loopback port with its own store directory, and is stopped by its process id.
 */

export const NATS_SERVER_BIN = process.env.NATS_SERVER_BIN ?? "/usr/sbin/nats-server";
export const REDIS_SERVER_BIN = process.env.REDIS_SERVER_BIN ?? "redis-server";

/** A loopback TCP port nothing listens on right now. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, "close");
  return port;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves once something accepts TCP connections on 127.0.0.1:port (or throws after timeoutMs). */
export async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const { connect } = await import("node:net");
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

export interface NatsServerOptions {
  /** Extra configuration text (authorization, accounts, cluster blocks). */
  config?: string;
  /** Port; default a free one. */
  port?: number;
  /** Store directory; default a fresh temporary one, removed by stop(). */
  storeDir?: string;
  /** Server name (cluster members need distinct names). */
  name?: string;
}

export interface NatsServer {
  readonly port: number;
  readonly url: string;
  readonly storeDir: string;
  readonly configFile: string;
  /** What the server logs (stdout and stderr): a store's failures are reported to clients without their cause. */
  readonly logFile: string;
  readonly pid: number;
  /** SIGKILL (crash) or SIGTERM (clean), then waits for the process to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the same server again on the same port and store (after kill). */
  restart(): Promise<void>;
  /** Kills it (if running) and removes its directory. */
  stop(): Promise<void>;
}

/** Starts `nats-server -js` on its own port and store directory, with `config` appended to its config file. */
export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServer> {
  const dir = await mkdtemp(join(tmpdir(), "memledger-nats-"));
  const port = options.port ?? (await freePort());
  const storeDir = options.storeDir ?? join(dir, "store");
  const configFile = join(dir, "nats.conf");
  const lines = [
    `listen: "127.0.0.1:${port}"`,
    options.name ? `server_name: "${options.name}"` : "",
    `jetstream { store_dir: ${JSON.stringify(storeDir)} }`,
    options.config ?? "",
  ];
  await writeFile(configFile, lines.filter(Boolean).join("\n") + "\n");
  let child: ChildProcess | undefined;
  const logFile = join(dir, "server.log");
  const launch = async () => {
    const log = openSync(logFile, "a");
    child = spawn(NATS_SERVER_BIN, ["-c", configFile], { stdio: ["ignore", log, log] });
    closeSync(log);
    await waitForPort(port);
  };
  const kill = async (signal: NodeJS.Signals = "SIGKILL") => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = once(c, "exit");
    process.kill(c.pid!, signal);
    await exited;
  };
  await launch();
  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    storeDir,
    configFile,
    logFile,
    get pid() {
      return child?.pid ?? -1;
    },
    kill,
    restart: launch,
    async stop() {
      await kill("SIGKILL");
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface NatsCluster {
  readonly servers: NatsServer[];
  /** All client URLs, comma separated (what connectNats takes). */
  readonly urls: string;
  stop(): Promise<void>;
}

/** Three (or n) JetStream servers on loopback forming one cluster; each with its own store, stopped by pid. */
export async function startNatsCluster(size = 3, name = "memledger-test"): Promise<NatsCluster> {
  const clientPorts = await Promise.all(Array.from({ length: size }, () => freePort()));
  const routePorts = await Promise.all(Array.from({ length: size }, () => freePort()));
  const routes = routePorts.map((p) => `nats-route://127.0.0.1:${p}`).join(", ");
  const servers: NatsServer[] = [];
  try {
    // Cluster members wait for each other's routes: start all, then let them elect a meta leader.
    servers.push(
      ...(await Promise.all(
        clientPorts.map((port, i) =>
          startNatsServer({
            port,
            name: `${name}-n${i}`,
            config: `cluster { name: "${name}", listen: "127.0.0.1:${routePorts[i]}", routes: [ ${routes} ] }`,
          }),
        ),
      )),
    );
  } catch (err) {
    await Promise.allSettled(servers.map((s) => s.stop()));
    throw err;
  }
  const urls = servers.map((s) => s.url).join(",");
  await waitForJetStreamCluster(urls);
  return {
    servers,
    urls,
    async stop() {
      await Promise.allSettled(servers.map((s) => s.stop()));
    },
  };
}

export interface RedisServer {
  readonly port: number;
  readonly url: string;
  readonly pid: number;
  stop(): Promise<void>;
}

/** A private redis-server without persistence on its own port, stopped by pid. */
export async function startRedisServer(): Promise<RedisServer> {
  const dir = await mkdtemp(join(tmpdir(), "memledger-redis-"));
  const port = await freePort();
  const child = spawn(REDIS_SERVER_BIN, ["--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no", "--dir", dir], { stdio: "ignore" });
  await waitForPort(port);
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid!,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, "exit");
        process.kill(child.pid!, "SIGKILL");
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Resolves once the cluster has a JetStream meta leader (account info answers); fails after timeoutMs. */
export async function waitForJetStreamCluster(urls: string, timeoutMs = 30_000): Promise<void> {
  const { connect } = await import("@nats-io/transport-node");
  const { jetstreamManager } = await import("@nats-io/jetstream");
  const nc = await connect({ servers: urls.split(","), reconnect: true });
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      try {
        const jsm = await jetstreamManager(nc, { timeout: 1_000 });
        await jsm.getAccountInfo();
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`the JetStream cluster at ${urls} elected no meta leader in ${timeoutMs} ms: ${(err as Error).message}`);
        await sleep(200);
      }
    }
  } finally {
    await nc.close();
  }
}
