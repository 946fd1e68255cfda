import { spawn, type ChildProcess } from "node:child_process";
import { resolve } from "node:path";
import { expect } from "vitest";
import { NATS_URL } from "../support/env.js";

export const CLI = resolve(import.meta.dirname, "../../dist/services/cli/main.js");

export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** An environment without the caller's MEMLEDGER_* settings, so only what a test passes counts. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("MEMLEDGER_")) env[k] = v;
  return { ...env, NATS_URL, ...extra };
}

export function collect(child: ChildProcess, input?: string): Promise<Ran> {
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (s: string) => (stdout += s));
  child.stderr?.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  if (child.stdin) child.stdin.end(input ?? "");
  return new Promise((resolvePromise, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => resolvePromise({ code, signal, stdout, stderr }));
  });
}

export function cli(args: string[], options: { input?: string; env?: Record<string, string> } = {}): Promise<Ran> {
  return collect(spawn(process.execPath, [CLI, ...args], { env: cleanEnv(options.env) }), options.input);
}

export const lines = (s: string): string[] => s.split("\n").filter((l) => l.length > 0);

/** The one JSON line a command printed; fails with its output when it did not succeed. */
export function jsonLine(ran: Ran): any {
  expect(ran.code, `exit ${ran.code}, stderr: ${ran.stderr}`).toBe(0);
  expect(lines(ran.stdout)).toHaveLength(1);
  return JSON.parse(ran.stdout);
}

/** A failure: the expected status and exactly one line on stderr, `memledger: <code>: …`, nothing on stdout. */
export function failed(ran: Ran, exitCode: number, code: string): string {
  expect(ran.code, `stdout: ${ran.stdout} stderr: ${ran.stderr}`).toBe(exitCode);
  expect(lines(ran.stderr), ran.stderr).toHaveLength(1);
  expect(ran.stderr).toMatch(new RegExp(`^memledger: ${code}: \\S`));
  expect(ran.stderr).not.toMatch(/\n\s+at /);
  expect(ran.stdout).toBe("");
  return ran.stderr;
}

