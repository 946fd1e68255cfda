/**
 * The workload of `npm run bench -- peers`, spelled once for both sides: memledger (bench/peers.ts) and
 * the peer, Emmett's PostgreSQL event store (bench/peers/emmett.mjs, which imports the compiled copy of
 * this file from dist/). Same commands, same decider, same envelope, same projection fold.
 */
import { memoryDecider, type MemoryCommand, type MemoryState } from "../../commands/memory.js";
import { CURRENT_SCHEMA_VERSION, type LedgerEvent } from "../../schemas/events.js";
import type { MemoryKind } from "../../schemas/primitives.js";

export const APP = "bench";
export const KINDS: readonly MemoryKind[] = ["note", "fact", "decision", "convention", "procedure", "fragile"];
const BODY_BYTES = 256;
/** A ~256-byte markdown body, the size of a typical short memory (as bench/append.ts). */
const BODY = ("Use pnpm, not npm, in this repository: the lockfile is pnpm-lock.yaml and CI runs `pnpm install --frozen-lockfile`. " +
  "Run the tests with `pnpm vitest run` and the build with `pnpm build` before pushing; the release job refuses dirty trees. ")
  .repeat(3)
  .slice(0, BODY_BYTES);

/** The proposal of memory `i`: its kind cycles through every kind, so the projection has six counts. */
export const proposeCommand = (i: number): Extract<MemoryCommand, { type: "propose" }> => ({
  type: "propose",
  revision: false,
  scope: "app",
  title: `peer bench memory ${String(i).padStart(8, "0")}`,
  body: BODY,
  kind: KINDS[i % KINDS.length]!,
  tags: ["bench"],
  paths: [],
  importance: 3,
});
export const approveCommand: MemoryCommand = { type: "approve" };

/**
 * What one writer ("agent") does: propose a memory (a new aggregate: expected version "no stream"), then
 * approve it (expected version: the proposal's), then the next memory. Each step is one append.
 * `approved` tallies the approvals by kind: the rebuilt projection must come out equal to it.
 */
export class WriterScript<P> {
  pending: { kind: MemoryKind; state: P } | null = null;
  readonly approved = new Map<MemoryKind, number>();

  approvedOne(kind: MemoryKind): void {
    this.approved.set(kind, (this.approved.get(kind) ?? 0) + 1);
  }
}

/**
 * The envelope memledger's CommandHandler builds for a decided event (services/command-handler.ts,
 * `envelope`), without its last schema check and hash chain: the peer stores this as the event's data.
 */
export function envelope(id: string, aggregateId: string, actorId: string, command: MemoryCommand, state: MemoryState): LedgerEvent {
  const decided = memoryDecider.decide(command, state);
  return {
    id,
    type: decided.type,
    schemaVersion: CURRENT_SCHEMA_VERSION[decided.type],
    aggregateId,
    app: APP,
    scope: memoryDecider.scopeOf(command, state),
    actor: { kind: "agent", id: actorId },
    sessionId: null,
    transcriptRef: null,
    git: null,
    causationId: null,
    correlationId: id,
    time: new Date().toISOString(),
    data: decided.data,
  } as LedgerEvent;
}

/** The projection both sides rebuild from the start: active (approved) memories per kind. */
export class ActiveByKind {
  private readonly kindOf = new Map<string, MemoryKind>();
  readonly counts = new Map<MemoryKind, number>();
  events = 0;

  apply(event: { type: string; aggregateId: string; data: unknown }): void {
    this.events++;
    if (event.type === "memory.proposed") {
      this.kindOf.set(event.aggregateId, (event.data as { kind: MemoryKind }).kind);
    } else if (event.type === "memory.approved") {
      const kind = this.kindOf.get(event.aggregateId);
      if (kind === undefined) throw new Error(`memory ${event.aggregateId} approved before it was proposed`);
      this.counts.set(kind, (this.counts.get(kind) ?? 0) + 1);
    }
  }
}

/** Counts by kind as a plain, ordered object (to compare and to send between processes). */
export const countsObject = (counts: ReadonlyMap<MemoryKind, number>): Record<string, number> =>
  Object.fromEntries(KINDS.map((k) => [k, counts.get(k) ?? 0]));

/** The tallies of several writers, summed. */
export function sumTallies(writers: readonly WriterScript<unknown>[]): Record<string, number> {
  const total = new Map<MemoryKind, number>();
  for (const w of writers) for (const [k, n] of w.approved) total.set(k, (total.get(k) ?? 0) + n);
  return countsObject(total);
}

export { memoryDecider };
