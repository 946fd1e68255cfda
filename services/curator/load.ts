import { readFile } from "node:fs/promises";
import { parse as parseYaml } from "yaml";
import { invalid } from "../../schemas/errors.js";
import { CuratorPolicy, DEFAULT_CURATOR_POLICY } from "./policy.js";

/** Reads and checks a curator policy file: JSON, or YAML when its name ends in .yaml or .yml. */
export async function loadCuratorPolicy(file: string): Promise<CuratorPolicy> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw invalid(`cannot read curator policy ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = /\.ya?ml$/i.test(file) ? parseYaml(text) : JSON.parse(text);
  } catch (err) {
    throw invalid(`curator policy ${file} does not parse: ${(err as Error).message.split("\n")[0]}`);
  }
  const result = CuratorPolicy.safeParse(raw);
  if (!result.success) {
    const first = result.error.issues[0];
    throw invalid(`curator policy ${file}: ${first?.path.join(".") || "policy"}: ${first?.message ?? "invalid"}`);
  }
  return result.data;
}

/** --curator-policy, else MEMLEDGER_CURATOR_POLICY, else the defaults (nothing auto-approved). */
export async function resolveCuratorPolicy(file: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<CuratorPolicy> {
  const path = file ?? (env.MEMLEDGER_CURATOR_POLICY === "" ? undefined : env.MEMLEDGER_CURATOR_POLICY);
  return path === undefined ? DEFAULT_CURATOR_POLICY : loadCuratorPolicy(path);
}
