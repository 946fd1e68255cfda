import { CommanderError } from "commander";
import { EXIT_CODE, ErrorCode, MemledgerError } from "../../schemas/errors.js";

/** Everything the CLI touches outside itself, so the commands stay testable and never call process.exit. */
export interface Io {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  stdin: NodeJS.ReadableStream;
  env: NodeJS.ProcessEnv;
}

export const processIo = (): Io => ({
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: process.stdin,
  env: process.env,
});

/** A URL fit for logs: `nats://user:secret@host` becomes `nats://***@host`. */
export const redactUrl = (url: string): string => url.replace(/\/\/[^/@\s]+@/g, "//***@");

/** One line, whatever the message holds: scripts read stderr line by line. */
const oneLine = (s: string): string => s.replace(/\s*[\r\n]+\s*/g, " ").trim();

export const printLine = (io: Io, line: string): void => {
  io.stdout.write(`${line}\n`);
};

export const printJson = (io: Io, value: unknown, pretty = false): void => {
  io.stdout.write(`${pretty ? JSON.stringify(value, null, 2) : JSON.stringify(value)}\n`);
};

export interface Failure {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
  exitCode: number;
}

/** Maps anything thrown to a code and an exit status. Usage errors are invalid input (exit 2). */
export function toFailure(err: unknown): Failure {
  if (err instanceof MemledgerError) {
    const details = Object.keys(err.details).length > 0 ? err.details : undefined;
    return { code: err.code, message: oneLine(err.message), details, exitCode: EXIT_CODE[err.code] };
  }
  if (err instanceof CommanderError) {
    return { code: ErrorCode.invalid, message: oneLine(err.message.replace(/^error:\s*/, "")), exitCode: EXIT_CODE.invalid };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { code: ErrorCode.internal, message: oneLine(message || "unexpected failure"), exitCode: EXIT_CODE.internal };
}

/**
 * `memledger: <code>: <message>`, or with --json one JSON object; on stderr either way. Credentials in a
 * NATS URL (the connection error names the URL) never reach the terminal.
 */
export function reportFailure(io: Io, failure: Failure, json: boolean): void {
  const { exitCode: _exitCode, ...error } = failure;
  const line = json ? JSON.stringify({ ok: false, error }) : `memledger: ${failure.code}: ${failure.message}`;
  io.stderr.write(`${redactUrl(line)}\n`);
}

export async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks).toString("utf8");
}
