import type { Command } from "commander";
import { invalid } from "../../../schemas/errors.js";
import type { LedgerEvent } from "../../../schemas/events.js";
import { printJson, printLine } from "../io.js";
import type { CliContext } from "../context.js";
import { commaList, wholeNumber } from "../options.js";
import { PULL_EXPIRES_MS, isStreamNotFound } from "../../nats.js";

/**
 * `memledger watch`: the change signals of the founding design ("fragile module flagged", "task claimed",
 * "new memory available") read from the log itself as events land: an ordered consumer on the app's
 * stream, from its end or from `--since-seq`. Nothing is written and no durable state is left behind.
 */

/** What watch shows unless --types says otherwise: everything but session bookkeeping. */
export const DEFAULT_FAMILIES = ["memory", "claim", "promotion", "consolidation"] as const;

/**
 * A `--types` token matches an exact type (`memory.approved`), a family (`memory`, `claim`, `consolidation`,
 * `session`), or `promotion` (the `memory.promotion_*` events). `memory` alone means the lifecycle, not
 * promotions, so the two can be chosen apart.
 */
export function typeMatcher(tokens: readonly string[]): (type: string) => boolean {
  const checks = tokens.map((token) => {
    if (token === "promotion") return (type: string) => type.startsWith("memory.promotion_");
    if (token.includes(".")) return (type: string) => type === token;
    if (token === "memory") return (type: string) => type.startsWith("memory.") && !type.startsWith("memory.promotion_");
    return (type: string) => type.startsWith(`${token}.`);
  });
  return (type) => checks.some((check) => check(type));
}

const quote = (s: string, max = 80): string => JSON.stringify(s.length > max ? `${s.slice(0, max - 1)}…` : s);

/** The signal an event carries, in a few words. */
export function signalOf(event: LedgerEvent): string {
  const data = event.data as Record<string, unknown>;
  switch (event.type) {
    case "memory.proposed": {
      const fragile = data.kind === "fragile" ? `FRAGILE ${(data.paths as string[]).join(", ") || "(no paths)"}: ` : "";
      return `${fragile}v${String(data.version)} ${quote(String(data.title))} proposed [${String(data.kind)}, ${event.scope}]`;
    }
    case "memory.approved":
      return `v${String(data.version)} approved: new memory available`;
    case "memory.rejected":
      return `v${String(data.version)} rejected: ${quote(String(data.reason))}`;
    case "memory.superseded":
      return `superseded${data.by ? ` by ${String(data.by)}` : ""}: ${quote(String(data.reason))}`;
    case "memory.rolled_back":
      return `rolled back v${String(data.fromVersion)} -> v${String(data.toVersion)}`;
    case "memory.reinstated":
      return `reinstated: ${quote(String(data.reason))}`;
    case "claim.task_opened":
      return `task ${String(data.name)} opened (p${String(data.priority)})`;
    case "claim.claimed":
      return `${String(data.kind)} ${String(data.name)} claimed by ${String(data.holder)} until ${String(data.expiresAt)}${data.takeoverOf ? " (took over a lapsed lease)" : ""}`;
    case "claim.renewed":
      return `lease renewed by ${String(data.holder)} until ${String(data.expiresAt)}`;
    case "claim.released":
      return `released by ${String(data.holder)}${data.done ? " (done)" : ""}`;
    case "memory.promotion_requested":
      return `promotion of v${String(data.version)} requested`;
    case "memory.promotion_accepted":
      return `promoted to org memory ${String(data.orgMemoryId)} v${String(data.orgVersion)} (${String(data.outcome)})`;
    case "memory.promotion_rejected":
      return `promotion rejected: ${(data.reasons as { code: string }[]).map((r) => r.code).join(", ")}`;
    default: {
      const text = JSON.stringify(data ?? {});
      return text.length > 120 ? `${text.slice(0, 119)}…` : text;
    }
  }
}

export function register(program: Command, { io, globals }: CliContext): void {
  program
    .command("watch")
    .description("print memory, claim, promotion and consolidation events of the app as they land (from the log; one JSON object a line with --json)")
    .option("--types <a,b>", `event types or families to show (default ${DEFAULT_FAMILIES.join(",")}; also session, or exact types like memory.approved)`, commaList)
    .option("--since-seq <n>", "start at this stream sequence (inclusive) instead of the end", wholeNumber(1))
    .option("--count <n>", "exit after printing this many events", wholeNumber(1))
    .action(async (opts: { types?: string[]; sinceSeq?: number; count?: number }, cmd: Command) => {
      const g = globals(cmd);
      const tokens = opts.types && opts.types.length > 0 ? opts.types : [...DEFAULT_FAMILIES];
      for (const token of tokens) {
        if (!/^[a-z_]+(\.[a-z_]+)?$/.test(token)) throw invalid(`--types: '${token}' is not an event type or family (e.g. memory, claim, promotion, memory.approved)`);
      }
      const matches = typeMatcher(tokens);
      const [{ connectNats }, { EventStore }, { naming }, { DeliverPolicy }] = await Promise.all([
        import("../../nats.js"),
        import("../../event-store.js"),
        import("../../../events/subjects.js"),
        import("@nats-io/jetstream"),
      ]);
      const nc = await connectNats({ servers: g.nats, name: `memledger-watch-${g.app}`, reconnect: true });
      let stopped = false;
      let messages: { stop(): void } | undefined;
      const stop = () => {
        stopped = true;
        messages?.stop();
      };
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
      try {
        const store = await EventStore.open(nc, naming(g.prefix));
        const stream = store.names.appStream(g.app);
        // An app nobody wrote to yet has no stream: wait for its first event rather than create it.
        let consumer;
        let waiting = false;
        for (;;) {
          try {
            consumer = await store.js.consumers.get(stream, opts.sinceSeq !== undefined ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: opts.sinceSeq } : { deliver_policy: DeliverPolicy.New });
            break;
          } catch (err) {
            if (stopped) return;
            if (!isStreamNotFound(err)) throw err;
            if (!waiting) io.stderr.write(`memledger watch: app ${g.app} has no events yet (no stream ${stream}); waiting\n`);
            waiting = true;
            await new Promise((r) => setTimeout(r, 1_000));
          }
        }
        const iterator = await consumer.consume({ max_messages: 256, expires: PULL_EXPIRES_MS });
        messages = iterator;
        if (stopped) iterator.stop();
        // The consumer exists: from here on nothing that lands is missed (scripts wait for this line).
        io.stderr.write(`memledger watch: watching ${stream} ${opts.sinceSeq !== undefined ? `from seq ${opts.sinceSeq}` : "from now"} for ${tokens.join(", ")}\n`);
        let printed = 0;
        for await (const m of iterator) {
          const stored = await store.decodeStored(stream, m);
          if (!stored || !matches(stored.event.type)) continue;
          const e = stored.event;
          if (g.json) printJson(io, { seq: stored.seq, subject: stored.subject, ...e });
          else printLine(io, [String(stored.seq).padStart(6), e.time, e.type.padEnd(26), e.aggregateId, `${e.actor.kind}:${e.actor.id}`, signalOf(e)].join("  "));
          printed++;
          if (opts.count !== undefined && printed >= opts.count) break;
        }
      } finally {
        process.off("SIGINT", stop);
        process.off("SIGTERM", stop);
        messages?.stop();
        await nc.close().catch(() => undefined);
      }
    });
}
