import cliProgress from "cli-progress";
import type { ProjectionProgress } from "../../projections/projection.js";
import { isMemledgerError } from "../../schemas/errors.js";
import { isUnusableState } from "../../projections/unusable.js";
import type { Io } from "./io.js";

/**
 * What `memledger up` says on stderr while projections open and catch up, so a slow start never looks
 * like a hang: a line per projection and app as it opens saved state (`memledger: search app1: loading
 * snapshot (1234 memories, seq 5678)`), a line when saved state is set aside, and a catch-up that lasts
 * longer than `everyMs`: on a terminal a bar per projection and app, otherwise a plain line at most once
 * per `everyMs` each (logs, CI), then `caught up`. A catch-up over sooner, and "up to date", say nothing:
 * a quick start stays quiet.
 */
export function startupProgress(io: Io, options: { tty?: boolean; everyMs?: number } = {}) {
  const stream = io.stderr as NodeJS.WriteStream;
  const tty = options.tty ?? stream.isTTY === true;
  const everyMs = options.everyMs ?? 1000;
  /** Catch-ups under way: when each began, when it last printed a line (0: not yet shown). */
  const catchUps = new Map<string, { startedAt: number; shownAt: number }>();
  const bars = new Map<string, cliProgress.SingleBar>();
  let multi: cliProgress.MultiBar | undefined;

  const write = (line: string) => {
    // Above the bars while they are drawn, so they stay at the bottom of the terminal.
    if (multi && bars.size > 0) multi.log(`${line}\n`);
    else io.stderr.write(`${line}\n`);
  };

  return {
    update(p: ProjectionProgress): void {
      const key = `${p.projection} ${p.app}`;
      const line = `memledger: ${key}: ${p.message}`;
      const now = Date.now();
      if (p.phase === "catching-up" && p.total !== undefined && p.done !== undefined) {
        const catchUp = catchUps.get(key) ?? { startedAt: now, shownAt: 0 };
        catchUps.set(key, catchUp);
        if (now - catchUp.startedAt < everyMs) return;
        if (tty) {
          multi ??= new cliProgress.MultiBar(
            { stream, format: "{key} [{bar}] {value}/{total} | ETA {eta_formatted}", hideCursor: false, clearOnComplete: false },
            cliProgress.Presets.shades_classic,
          );
          const bar = bars.get(key) ?? multi.create(p.total, p.done, { key });
          bars.set(key, bar);
          bar.setTotal(p.total);
          bar.update(p.done, { key });
          catchUp.shownAt = now;
          return;
        }
        if (now - catchUp.shownAt < everyMs) return;
        catchUp.shownAt = now;
        io.stderr.write(`${line}\n`);
        return;
      }
      const catchUp = catchUps.get(key);
      catchUps.delete(key);
      const bar = bars.get(key);
      if (bar && multi) {
        bar.update(bar.getTotal());
        multi.remove(bar);
        bars.delete(key);
      }
      // "caught up" only closes a catch-up that was shown; "up to date" has nothing to tell.
      if (p.phase === "caught-up" && !catchUp?.shownAt) return;
      write(line);
      if (multi && bars.size === 0) {
        multi.stop();
        multi = undefined;
      }
    },
    /** Stops drawing (before `ready` and on exit). */
    done(): void {
      multi?.stop();
      multi = undefined;
      bars.clear();
    },
  };
}

/**
 * A projection error that a restart cannot cure: read-model state the process may not read or replace
 * (permissions, a directory in the way). Such an error names its file and what to do; `up` stops at once
 * on it rather than retrying every few seconds. Unusable state (cut short, damaged) never gets here: it
 * is set aside and rebuilt from the log.
 */
export function needsOperator(err: unknown, where: string): boolean {
  return where.startsWith("projection ") && isMemledgerError(err) && typeof err.details.file === "string" && !isUnusableState(err);
}
