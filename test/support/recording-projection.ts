import type { Checkpoint, ProjectedEvent, ProjectionDefinition, ProjectionTarget } from "../../projections/projection.js";

/** What a recording target has durably committed: it outlives the target, like a disk. */
export interface RecordingDisk {
  current: string;
  generations: Map<string, { seq: number; applied: number[] }>;
  nextGeneration: number;
}

export const newDisk = (): RecordingDisk => ({ current: "g1", generations: new Map([["g1", { seq: 0, applied: [] }]]), nextGeneration: 2 });

/**
 * The smallest honest projection: it records which sequences it applied, buffering until commit, and
 * can be told to fail on an event to play a poison message.
 */
export function recordingProjection(disk: RecordingDisk, failOn: (e: ProjectedEvent) => boolean = () => false): ProjectionDefinition {
  const open = (generation: string): ProjectionTarget => {
    const durable = disk.generations.get(generation)!;
    let checkpoint: Checkpoint = { seq: durable.seq, generation };
    let buffered: number[] = [];
    return {
      get checkpoint() {
        return checkpoint;
      },
      async apply(events) {
        for (const e of events) {
          if (failOn(e)) throw new Error(`cannot apply seq ${e.seq}`);
          if (e.seq > checkpoint.seq && !buffered.includes(e.seq)) buffered.push(e.seq);
        }
      },
      async commit(seq) {
        durable.applied.push(...buffered);
        durable.seq = seq;
        buffered = [];
        checkpoint = { seq, generation };
      },
      async currentGeneration() {
        return disk.current;
      },
      async close() {
        buffered = [];
      },
    };
  };
  return {
    name: "recording",
    async openLive() {
      return open(disk.current);
    },
    async openFresh() {
      const generation = `g${disk.nextGeneration++}`;
      disk.generations.set(generation, { seq: 0, applied: [] });
      return open(generation);
    },
    async promote(_scope, fresh) {
      const old = disk.current;
      disk.current = fresh.checkpoint.generation;
      disk.generations.delete(old);
    },
  };
}
