/**
 * The app's MEMORY.md as it was at a moment: the files projection's own pure fold (applyEvent) over the
 * stream up to the bound (from a verified snapshot when there is one, snapshots.ts), rendered by its own
 * renderer, so it is byte for byte what the live projection showed then. Search and hydrate as of a
 * moment are in time-travel.ts, over the same folded state.
 */
export { memoryIndexAsOf } from "./time-travel.js";
