import { invalid } from "../../schemas/errors.js";
import { llmSettingsFromEnv } from "./analysers/llm.js";
import { DEFAULT_DREAM_SETTINGS, type DreamSettings } from "./phase.js";
import { DEFAULT_DREAM_LOCK_TTL_MS } from "./lock.js";

/**
 * The consolidation settings from the environment (docs/consolidation.md lists them); a flag given on the
 * command line wins over its variable, and a variable over DEFAULT_DREAM_SETTINGS.
 *
 *   MEMLEDGER_DREAM_MIN_HOURS            gate: hours since the last completed run (default 24)
 *   MEMLEDGER_DREAM_MIN_SESSIONS         gate: sessions ended since it (default 5)
 *   MEMLEDGER_DREAM_REPO_DIR             prune: repository to check memories' paths against
 *   MEMLEDGER_DREAM_NEVER_RETRIEVED_DAYS prune: never retrieved and older than this (default 90)
 *   MEMLEDGER_DREAM_MERGE_SIMILARITY     merge: similarity threshold (default 0.9)
 *   MEMLEDGER_DREAM_LEARN_MIN_SESSIONS   learn: sessions a pattern must recur in (default 3)
 *   MEMLEDGER_LLM_*                      learn: the LLM analyser (services/dream/analysers/llm.ts)
 *   MEMLEDGER_DREAM_LOCK_TTL_MS          lock: how long a silent holder keeps it (default 30000)
 *   MEMLEDGER_DREAM                      `up`: 1/true runs the scheduled dream component
 *   MEMLEDGER_DREAM_INTERVAL_MS          `up`: how often it looks at the gates (default 600000)
 */
const num = (env: NodeJS.ProcessEnv, name: string, min: number, max: number, integer: boolean): number | undefined => {
  const raw = env[name]?.trim();
  if (!raw) return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    throw invalid(`bad ${name} '${raw}': ${integer ? "a whole number" : "a number"} from ${min} to ${max}`);
  }
  return n;
};

export function dreamSettingsFromEnv(env: NodeJS.ProcessEnv = process.env, overrides: Partial<DreamSettings> = {}): DreamSettings {
  const fromEnv: Partial<DreamSettings> = {};
  const set = <K extends keyof DreamSettings>(key: K, value: DreamSettings[K] | undefined) => {
    if (value !== undefined) fromEnv[key] = value;
  };
  set("minHoursSinceLastRun", num(env, "MEMLEDGER_DREAM_MIN_HOURS", 0, 24 * 365, false));
  set("minSessionsSinceLastRun", num(env, "MEMLEDGER_DREAM_MIN_SESSIONS", 0, 1_000_000, true));
  set("repoDir", env.MEMLEDGER_DREAM_REPO_DIR?.trim() || undefined);
  set("neverRetrievedDays", num(env, "MEMLEDGER_DREAM_NEVER_RETRIEVED_DAYS", 0, 36_500, false));
  set("mergeSimilarity", num(env, "MEMLEDGER_DREAM_MERGE_SIMILARITY", 0, 1, false));
  set("learnMinSessions", num(env, "MEMLEDGER_DREAM_LEARN_MIN_SESSIONS", 1, 1_000_000, true));
  set("llm", llmSettingsFromEnv(env) ?? undefined);
  const defined = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)) as Partial<DreamSettings>;
  return { ...DEFAULT_DREAM_SETTINGS, ...fromEnv, ...defined };
}

export const dreamLockTtlFromEnv = (env: NodeJS.ProcessEnv = process.env): number => num(env, "MEMLEDGER_DREAM_LOCK_TTL_MS", 500, 3_600_000, true) ?? DEFAULT_DREAM_LOCK_TTL_MS;

export const DEFAULT_DREAM_INTERVAL_MS = 600_000;
export const dreamIntervalFromEnv = (env: NodeJS.ProcessEnv = process.env): number => num(env, "MEMLEDGER_DREAM_INTERVAL_MS", 100, 86_400_000, true) ?? DEFAULT_DREAM_INTERVAL_MS;
export const dreamEnabledFromEnv = (env: NodeJS.ProcessEnv = process.env): boolean => /^(1|true|yes|on)$/i.test(env.MEMLEDGER_DREAM?.trim() ?? "");
