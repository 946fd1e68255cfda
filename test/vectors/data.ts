/** Test data shared by the conformance suite and the benchmark (no vitest here: the benchmark runs under plain node). */
import seedrandom from "seedrandom";

/** Seeded pseudo-random numbers, so a failing case can be replayed. */
export const seededRandom = (seed: number): (() => number) => seedrandom(String(seed));

export function randomVector(random: () => number, dimensions: number): Float32Array {
  const vector = new Float32Array(dimensions);
  for (let i = 0; i < dimensions; i++) vector[i] = random() * 2 - 1;
  return vector;
}
