import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { access, constants, mkdir, open } from "node:fs/promises";
import { connect } from "node:net";
import path from "node:path";
import { unavailable } from "../schemas/errors.js";
import { DEFAULT_NATS_URL, splitCredentials } from "./nats.js";
import { DEFAULT_DATA_DIR, DEFAULT_REDIS_URL } from "./read-models.js";
import { onRedisHealth } from "../projections/claims/redis-health.js";

/**
 * The embedded default: `memledger up` on a laptop with nothing running. When nothing answers on a
 * loopback NATS (or Redis) URL and embedding is on, it starts `nats-server -js` (and `redis-server`) from
 * PATH on that URL's port, with data under `.memledger/` (MEMLEDGER_DATA), and stops them when it exits.
 * Embedding is on by default only for the default local URLs (`--embedded` turns it on for any loopback
 * URL, `--no-embedded` off): a URL someone configured is theirs, and a remote one is never replaced.
 */

export const INSTALL_HINT = "apt-get install nats-server redis-server";

export interface EmbeddedOptions {
  natsUrl: string;
  redisUrl: string;
  /** true: --embedded; false: --no-embedded; undefined: on for the default URLs only. */
  embedded: boolean | undefined;
  /** Where the servers keep their data: MEMLEDGER_DATA, else .memledger. */
  dataDir: string;
  env: NodeJS.ProcessEnv;
  log: (line: string) => void;
  /** Where to look for the binaries; default PATH, then the sbin directories Debian installs servers to. */
  searchDirs?: string[];
}

export interface EmbeddedServers {
  /** What was started, by name: pid and URL. */
  readonly started: readonly { name: string; pid: number; url: string }[];
  /** Stops every server started here (SIGTERM, then SIGKILL after 10 s) and says so. Idempotent. */
  stop(): Promise<void>;
}

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]"]);

/** Host and port of the first server in a NATS or Redis URL. */
export function hostPort(url: string, defaultPort: number): { host: string; port: number } {
  const first = splitCredentials(url).servers.split(",")[0]!.trim();
  const parsed = new URL(first.includes("://") ? first : `nats://${first}`);
  return { host: parsed.hostname, port: parsed.port ? Number(parsed.port) : defaultPort };
}

export const isLoopback = (url: string, defaultPort: number): boolean => LOOPBACK.has(hostPort(url, defaultPort).host);

/** Whether something accepts TCP connections there within timeoutMs. */
export function answers(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: host.replace(/^\[|\]$/g, ""), port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/** A program on PATH, or in the sbin directories Debian installs servers to (not on every user's PATH). */
export const defaultSearchDirs = (env: NodeJS.ProcessEnv): string[] => [
  ...(env.PATH ?? "").split(path.delimiter).filter((d) => d.length > 0),
  "/usr/sbin",
  "/usr/local/sbin",
  "/usr/local/bin",
];

async function findProgram(name: string, dirs: string[]): Promise<string | null> {
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

async function waitUntilAnswering(host: string, port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw unavailable(`exited (${child.exitCode ?? child.signalCode}) before it listened`);
    if (await answers(host, port, 250)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw unavailable(`did not listen on ${host}:${port} within ${timeoutMs} ms`);
}

interface ServerSpec {
  name: "nats-server" | "redis-server";
  url: string;
  args: (port: number, dir: string) => string[];
}

async function startServer(spec: ServerSpec, program: string, host: string, port: number, dataDir: string): Promise<ChildProcess> {
  const dir = path.resolve(dataDir, spec.name === "nats-server" ? "nats" : "redis");
  await mkdir(dir, { recursive: true });
  // Its own log beside its data: the operator's terminal gets memledger's lines only.
  const logFile = await open(path.join(dir, `${spec.name}.log`), "a");
  try {
    // Its own process group: Ctrl-C in the terminal reaches memledger alone, which drains through the server
    // and then stops it, rather than the server dying under the drain.
    const child = spawn(program, spec.args(port, dir), { stdio: ["ignore", logFile.fd, logFile.fd], detached: true });
    child.once("error", () => undefined);
    await waitUntilAnswering(host, port, child, 15_000).catch((err: Error) => {
      child.kill("SIGKILL");
      throw unavailable(`embedded ${spec.name} on ${host}:${port} failed: ${err.message} (see ${path.join(dir, `${spec.name}.log`)})`);
    });
    return child;
  } finally {
    await logFile.close();
  }
}

export async function startEmbedded(options: EmbeddedOptions): Promise<EmbeddedServers> {
  const { log } = options;
  const specs: (ServerSpec & { defaultUrl: string; defaultPort: number; required: boolean })[] = [
    {
      name: "nats-server",
      url: options.natsUrl,
      defaultUrl: DEFAULT_NATS_URL,
      defaultPort: 4222,
      required: true,
      args: (port, dir) => ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", dir],
    },
    {
      name: "redis-server",
      url: options.redisUrl,
      defaultUrl: DEFAULT_REDIS_URL,
      defaultPort: 6379,
      required: false,
      // Claims are a projection of the log: rebuilt from it, so Redis keeps nothing on disk.
      args: (port, dir) => ["--bind", "127.0.0.1", "--port", String(port), "--dir", dir, "--save", "", "--appendonly", "no"],
    },
  ];
  const children: { name: string; child: ChildProcess; url: string }[] = [];
  const killAll = () => {
    for (const { child } of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
  };
  // Should `up` die without stopping them (a second Ctrl-C exits at once), they still go with it.
  process.once("exit", killAll);

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      process.off("exit", killAll);
      for (const { name, child, url } of [...children].reverse()) {
        if (child.exitCode !== null || child.signalCode !== null) {
          log(`embedded ${name} (pid ${child.pid}) on ${url} had already exited (${child.exitCode ?? child.signalCode})`);
          continue;
        }
        const exited = once(child, "exit");
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
        log(`stopped embedded ${name} (pid ${child.pid}) on ${url}`);
      }
    })());

  try {
    for (const spec of specs) {
      const { host, port } = hostPort(spec.url, spec.defaultPort);
      if (await answers(host, port)) continue;
      const loopback = LOOPBACK.has(host);
      const on = options.embedded ?? spec.url === spec.defaultUrl;
      if (!on || !loopback) {
        if (options.embedded === true && !loopback) log(`--embedded ignored for ${spec.url}: a remote server is never replaced`);
        continue; // not ours to start: up says what is affected when it fails to reach it
      }
      const program = await findProgram(spec.name, options.searchDirs ?? defaultSearchDirs(options.env));
      if (program === null) {
        const message = `nothing answers on ${spec.url} and ${spec.name} is not installed; install it with: ${INSTALL_HINT}`;
        if (spec.required) throw unavailable(message, { install: INSTALL_HINT });
        log(message);
        continue;
      }
      const child = await startServer(spec, program, host, port, options.dataDir);
      const url = `${spec.name === "nats-server" ? "nats" : "redis"}://${host}:${port}`;
      children.push({ name: spec.name, child, url });
      log(`started embedded ${spec.name} (pid ${child.pid}) on ${url}, data in ${path.resolve(options.dataDir, spec.name === "nats-server" ? "nats" : "redis")}; it stops when memledger stops`);
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { started: children.map(({ name, child, url }) => ({ name, pid: child.pid!, url })), stop };
}

/** MEMLEDGER_DATA, else .memledger: where embedded servers keep their data. */
export const embeddedDataDir = (env: NodeJS.ProcessEnv): string => (env.MEMLEDGER_DATA ?? "").trim() || DEFAULT_DATA_DIR;

/**
 * Runs `serve` (memledger up) with embedded servers around it when they are needed: started before it,
 * stopped after it returns or throws. Failing to start one that is required (NATS) is the caller's error.
 */
export async function withEmbedded(
  options: { natsUrl: string; redisUrl: string; embedded: boolean | undefined; env: NodeJS.ProcessEnv; log: (line: string) => void },
  serve: () => Promise<number>,
): Promise<number> {
  const servers = await startEmbedded({ ...options, dataDir: embeddedDataDir(options.env) });
  // Redis down: said once, with what it affects; said again when it is back. ioredis retries quietly.
  const unsubscribe = onRedisHealth((health) =>
    options.log(
      health.state === "down"
        ? `Redis at ${health.url} is unreachable (${health.error.message}): the claims projection and the claims section of hydration wait for it, and claims/tasks queries answer unavailable; everything else is served. Retrying quietly.`
        : `Redis at ${health.url} is back: the claims projection catches up`,
    ),
  );
  try {
    // A cluster URL lists several servers: any one answering is enough for the client.
    const seeds = splitCredentials(options.natsUrl).servers.split(",").map((s) => hostPort(s.trim(), 4222));
    const nats = seeds[0]!;
    if (!(await Promise.all(seeds.map((seed) => answers(seed.host, seed.port, 2_000)))).some(Boolean)) {
      const hint = LOOPBACK.has(nats.host) ? `start nats-server -js there, or run memledger up --embedded (installs with: ${INSTALL_HINT})` : "memledger cannot serve without it";
      throw unavailable(`nothing answers on ${splitCredentials(options.natsUrl).servers} (NATS): ${hint}`);
    }
    return await serve();
  } finally {
    unsubscribe();
    await servers.stop();
  }
}
