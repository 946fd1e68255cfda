import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { CLI, cleanEnv, collect, type Ran } from "../cli/support.js";
import { freePort } from "../support/servers.js";

/**
 * The review page's browser tests: a real `memledger up` and a real `memledger ui` (processes, on a
 * unique prefix), driven by Debian's chromium through playwright-core. Screenshots of each screen go to
 * test-results/screenshots/ (gitignored).
 */

export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const READY_MS = 45_000;
export const SCREENSHOTS = resolve(import.meta.dirname, "../../test-results/screenshots");

export interface Process {
  child: ChildProcess;
  exit: Promise<Ran>;
  /** What it printed on stdout up to the line that said it was ready. */
  ready: string;
  /** SIGTERM, then waits for it to exit. */
  stop(): Promise<Ran>;
}

/** Spawns the CLI and resolves once a stdout line contains `readyText`; fails (with its stderr) if it exits first. */
export async function startCli(args: string[], env: Record<string, string>, readyText: string): Promise<Process> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first (npm test does)`);
  const child = spawn(process.execPath, [CLI, ...args], { env: cleanEnv(env) });
  const exit = collect(child);
  let out = "";
  let timer: NodeJS.Timeout | undefined;
  const ready = await new Promise<string>((resolveReady, reject) => {
    child.stdout!.on("data", (s: string) => {
      out += s;
      if (out.includes(readyText)) resolveReady(out);
    });
    void exit.then((ran) => reject(new Error(`memledger ${args[0]} exited before it was ready (${ran.code}): ${ran.stderr}`)));
    // A process that never gets ready is stopped, not left behind.
    timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`memledger ${args[0]} was not ready after ${READY_MS} ms: ${out}`));
    }, READY_MS);
  }).finally(() => clearTimeout(timer));
  return {
    child,
    exit,
    ready,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      return exit;
    },
  };
}

/** Chromium, headless, with a fresh profile and without the background connections this machine refuses. */
export async function launchBrowser(): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  const profile = await mkdtemp(join(tmpdir(), "memledger-chromium-"));
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1366, height: 900 },
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
  } catch (err) {
    // No browser (chromium not installed) or one that would not start: its profile goes too.
    await rm(profile, { recursive: true, force: true });
    throw err;
  }
  return {
    context,
    async close() {
      await context.close().catch(() => undefined);
      await rm(profile, { recursive: true, force: true });
    },
  };
}

export async function screenshot(page: Page, name: string): Promise<string> {
  await mkdir(SCREENSHOTS, { recursive: true });
  const file = join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** Starts `memledger ui` on a free loopback port and resolves to its address. */
export async function startUiProcess(args: string[], env: Record<string, string>): Promise<Process & { url: string }> {
  const port = await freePort();
  const proc = await startCli(["ui", "--port", String(port), ...args], env, "listening on");
  const url = /listening on (http:\/\/\S+)/.exec(proc.ready)?.[1];
  if (!url) throw new Error(`no address in: ${proc.ready}`);
  return { ...proc, url };
}

export async function writePolicy(dir: string, policy: unknown): Promise<string> {
  const file = join(dir, "policy.json");
  await writeFile(file, JSON.stringify(policy, null, 2));
  return file;
}
