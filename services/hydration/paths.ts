/**
 * Path overlap between what an agent is about to touch and what a memory or lock names. Paths are
 * compared by whole segments, so `src/pay` does not match `src/payments`; either side may be the
 * prefix (a memory on `src/payments` concerns an agent editing `src/payments/stripe.ts`, and a memory
 * on `src/payments/stripe.ts` concerns an agent working on all of `src/payments`).
 */
export function normalizePath(path: string): string {
  let p = path.trim().replace(/\\/g, "/");
  // A trailing glob names the folder it is in: `src/payments/**` is about `src/payments`.
  p = p.replace(/(\/\*\*?)+$/, "");
  p = p.replace(/^(\.\/)+/, "").replace(/\/{2,}/g, "/").replace(/\/+$/, "");
  return p;
}

export function pathsOverlap(a: string, b: string): boolean {
  const x = normalizePath(a);
  const y = normalizePath(b);
  if (x === "" || y === "") return false;
  return x === y || y.startsWith(`${x}/`) || x.startsWith(`${y}/`);
}

/** The agent's paths that `subjectPaths` touch, in the agent's order (empty: no overlap). */
export function overlappingPaths(agentPaths: readonly string[], subjectPaths: readonly string[]): string[] {
  return agentPaths.filter((mine) => subjectPaths.some((theirs) => pathsOverlap(mine, theirs)));
}
