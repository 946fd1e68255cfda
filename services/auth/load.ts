import { readFile } from "node:fs/promises";
import { parse as parseYaml } from "yaml";
import { invalid } from "../../schemas/errors.js";
import { PERMISSIVE_POLICY, Policy } from "../../schemas/policy.js";

/** Checks a policy given as data; a bad one is `invalid`, naming the first problem's path. */
export function parsePolicy(raw: unknown, source = "policy"): Policy {
  const result = Policy.safeParse(raw);
  if (!result.success) {
    const first = result.error.issues[0];
    const where = first?.path.length ? first.path.map(String).join(".") : "policy";
    throw invalid(`${source}: ${where}: ${first?.message ?? "invalid"}`, {
      issues: result.error.issues.map((i) => ({ path: i.path.map(String), message: i.message })),
    });
  }
  return result.data;
}

/** Reads and checks a policy file: JSON, or YAML when its name ends in .yaml or .yml. */
export async function loadPolicy(file: string): Promise<Policy> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw invalid(`cannot read policy ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let raw: unknown;
  const yaml = /\.ya?ml$/i.test(file);
  try {
    raw = yaml ? parseYaml(text) : JSON.parse(text);
  } catch (err) {
    throw invalid(`policy ${file} is not valid ${yaml ? "YAML" : "JSON"}: ${(err as Error).message.split("\n")[0]}`);
  }
  return parsePolicy(raw, `policy ${file}`);
}

/** The policy `memledger up` runs with: --policy, else MEMLEDGER_POLICY, else the permissive built-in. */
export async function resolvePolicy(file: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<{ policy: Policy; source: string }> {
  const path = file ?? (env.MEMLEDGER_POLICY === "" ? undefined : env.MEMLEDGER_POLICY);
  if (path === undefined) return { policy: PERMISSIVE_POLICY, source: "built-in permissive default" };
  return { policy: await loadPolicy(path), source: path };
}
