import { createTwoFilesPatch } from "diff";
import type { NatsConnection } from "@nats-io/transport-node";
import type { ObjectStore } from "@nats-io/obj";
import type { MemoryVersion } from "../../commands/memory.js";
import { ORG_APP } from "../../events/subjects.js";
import type { LiveClaim, OpenTask } from "../../projections/claims/reader.js";
import type { RequestOf, Verb } from "../../schemas/commands.js";
import { ErrorCode, MemledgerError, invalid } from "../../schemas/errors.js";
import type { OrgProvenance, PromotionReason, TranscriptSpan } from "../../schemas/events.js";
import type { Actor } from "../../schemas/primitives.js";
import { versionText } from "../audit/history.js";
import { exposedSessions, exposureOf, type ExposureEntry } from "../audit/exposure.js";
import { MemoryClient, type LogEntry, type MemoryHistoryView } from "../client.js";
import type { MemoryView } from "../command-service.js";
import { discoverScopes } from "../discovery.js";
import type { EventStore } from "../event-store.js";
import { isStreamNotFound } from "../nats.js";
import { readTranscript, useTranscripts } from "../transcripts.js";
import { QueueFold, RunsFold, type RunView } from "./folds.js";

export type { ProposalStatus, ProposalView, RunView } from "./folds.js";

/**
 * What the review page reads and does, as its human. Every action is a command verb sent through the SDK
 * (MemoryClient) as that human, so the broker's permissions and the policy apply exactly as they do to
 * the CLI, and a refusal comes back as the policy's own words. Reads go the same way where a verb exists
 * (log, history, show, claims, tasks: each filtered by the read policy); exposure, the curator's flags on
 * an org proposal and transcripts are read from the log and the object store directly, as `memledger
 * exposure` does (services/audit), because no verb serves them.
 */

/** The outcome of one action on one item: what the ledger appended, or why it refused. */
export type ActionResult = { ok: true; label: string; detail: string } | { ok: false; label: string; code: string; message: string };

export interface QueueItem {
  app: string;
  memoryId: string;
  scope: string;
  /** The memory subject's last sequence as read (sent back as expectedSeq would be stale after any other change). */
  seq: number;
  pending: MemoryVersion;
  active: MemoryVersion | null;
  /** A unified diff of the active version (or nothing, for a new memory) against the pending one. */
  diff: string;
  branch: string | null;
  worktree: string | null;
  transcriptRef: string | null;
  provenance: OrgProvenance | null;
  /** The curator's flags on the promotion that wrote this org proposal (e.g. the near-duplicate it merged into). */
  flags: PromotionReason[];
}

export interface MemoryPage {
  app: string;
  memoryId: string;
  history: MemoryHistoryView;
  /** Each version against the one before it (v1 against nothing). */
  diffs: { version: number; patch: string }[];
  promotions: MemoryView["promotions"];
  exposure: { sessions: ReturnType<typeof exposedSessions>; receipts: ExposureEntry[] } | { error: string };
}

export interface TimelineFilter {
  actor?: string | undefined;
  session?: string | undefined;
  /** An exact type (`memory.approved`) or a family (`memory`, `claim`, `run`, `proposal`, `session`). */
  type?: string | undefined;
  limit?: number | undefined;
}

const LOG_PAGE = 10_000;
/** Proposals a queue section shows at once, oldest first (`?limit=` asks for more, up to QUEUE_MAX). */
export const QUEUE_PAGE = 50;
export const QUEUE_MAX = 1000;

/** One proposal's outcome as the consolidation verbs report it (services/dream/review.ts ItemOutcome). */
interface DreamItemOutcome {
  proposalId: string;
  outcome: "applied" | "rejected" | "reverted" | "refused";
  events: { memoryId: string; seq: number; type: string }[];
  error?: { code: string; message: string };
}

export const describeError = (err: unknown): { code: string; message: string } =>
  err instanceof MemledgerError ? { code: err.code, message: err.message } : { code: ErrorCode.internal, message: err instanceof Error ? err.message : String(err) };

export class UiLedger {
  private readonly clients = new Map<string, MemoryClient>();
  /** Each app's log as this human may read it, fetched once and then from where it stopped. */
  private readonly logs = new Map<string, { entries: LogEntry[]; next: number; pending: Promise<LogEntry[]> | null }>();
  /** Each app's queue and runs, folded from its log and advanced by what is new (folds.ts). */
  private readonly folds = new Map<string, { queue: QueueFold; runs: RunsFold }>();
  private transcripts: Promise<ObjectStore> | undefined;
  private readonly transcriptText = new Map<string, string[]>();

  constructor(
    private readonly nc: NatsConnection,
    readonly store: EventStore,
    readonly actor: Actor,
    readonly prefix: string,
  ) {}

  client(app: string): MemoryClient {
    let client = this.clients.get(app);
    if (!client) {
      client = new MemoryClient(this.nc, { app, as: this.actor, prefix: this.prefix });
      this.clients.set(app, client);
    }
    return client;
  }

  /** The apps that have a stream (the org is shown beside each). */
  async apps(): Promise<string[]> {
    const scopes = await discoverScopes(this.store);
    return scopes.map((s) => s.app).filter((a) => a !== ORG_APP);
  }

  /** The last sequence of an app's stream (0: none yet). */
  async lastSeq(app: string): Promise<number> {
    try {
      return await this.store.lastSeq(this.store.names.appStream(app));
    } catch (err) {
      if (isStreamNotFound(err)) return 0;
      throw err;
    }
  }

  /** The app's whole log as the human may read it (the `log` verb, read policy applied), oldest first. */
  async log(app: string): Promise<LogEntry[]> {
    let cached = this.logs.get(app);
    if (!cached) {
      cached = { entries: [], next: 1, pending: null };
      this.logs.set(app, cached);
    }
    const entry = cached;
    // One catch-up at a time per app: concurrent requests share it.
    entry.pending ??= (async () => {
      try {
        for (;;) {
          let page: LogEntry[];
          try {
            page = await this.client(app).log({ sinceSeq: entry.next, limit: LOG_PAGE });
          } catch (err) {
            // An app nobody wrote to has no stream yet: an empty log, not a failure.
            if (err instanceof MemledgerError && err.code === ErrorCode.not_found && /^no such app/.test(err.message)) return entry.entries;
            throw err;
          }
          for (const e of page) if (e.seq >= entry.next) entry.entries.push(e);
          if (page.length > 0) entry.next = page.at(-1)!.seq + 1;
          if (page.length < LOG_PAGE) return entry.entries;
        }
      } finally {
        entry.pending = null;
      }
    })();
    return entry.pending;
  }

  /** The app's folds, advanced to the end of its log as read now. */
  private async folded(app: string): Promise<{ queue: QueueFold; runs: RunsFold }> {
    const entries = await this.log(app);
    let folds = this.folds.get(app);
    if (!folds) {
      folds = { queue: new QueueFold(), runs: new RunsFold() };
      this.folds.set(app, folds);
    }
    folds.queue.advance(entries);
    folds.runs.advance(entries);
    return folds;
  }

  /**
   * The memories with a pending version, oldest proposal first, folded with the memory decider's own
   * evolve: the first `limit` with their diffs and flags (what a page shows), and how many wait in all.
   */
  async queue(app: string, limit = QUEUE_PAGE): Promise<{ items: QueueItem[]; total: number }> {
    const waiting = (await this.folded(app)).queue.waiting();
    // Diffs and the curator's flags only for what is shown: a long queue is read in pages.
    const items = await Promise.all(
      waiting.slice(0, limit).map(async ({ memoryId, state, seq, pending, proposed }): Promise<QueueItem> => {
        const active = state.versions.find((v) => v.version === state.activeVersion) ?? null;
        const provenance = (proposed?.type === "memory.proposed" ? proposed.data.provenance : undefined) ?? null;
        return {
          app,
          memoryId,
          scope: state.scope ?? "app",
          seq,
          pending,
          active,
          diff: createTwoFilesPatch(active ? `${memoryId}@v${active.version}` : "(no active version)", `${memoryId}@v${pending.version}`, active ? versionText(active) : "", versionText(pending), "", "", { context: 3 }),
          branch: proposed?.git?.branch ?? null,
          worktree: proposed?.git?.worktree ?? null,
          transcriptRef: proposed?.transcriptRef ?? null,
          provenance,
          flags: provenance ? await this.curatorFlags(provenance) : [],
        };
      }),
    );
    return { items, total: waiting.length };
  }

  /** The reasons the curator gave when it accepted the promotion that wrote an org proposal. */
  private async curatorFlags(provenance: OrgProvenance): Promise<PromotionReason[]> {
    const { app } = provenance.source;
    try {
      for await (const stored of this.store.readSubject(this.store.names.appStream(app), this.store.names.promotion(app, provenance.promotionId))) {
        const e = stored.event;
        if (e.type === "memory.promotion_accepted") return e.data.reasons;
        if (e.type === "memory.promotion_rejected") return e.data.reasons;
      }
    } catch {
      // Flags are an aid to the reviewer; a source app this connection cannot read shows none.
    }
    return [];
  }

  /** Approves or rejects each item in turn as the page's human; one item's refusal does not stop the rest. */
  async decide(app: string, items: { memoryId: string; version: number }[], action: "approve" | "reject", reason: string | undefined): Promise<ActionResult[]> {
    const results: ActionResult[] = [];
    for (const item of items) {
      const label = `${action} ${item.memoryId} v${item.version}`;
      results.push(
        await this.act(label, () =>
          action === "approve"
            ? this.client(app).approve(item.memoryId, { version: item.version })
            : this.client(app).reject(item.memoryId, reason ?? "", { version: item.version }),
        ),
      );
    }
    return results;
  }

  /** Runs one command; its outcome or its refusal (the service's message: the policy's reason) as a result. */
  async act(label: string, send: () => Promise<{ seq: number; type: string }>): Promise<ActionResult> {
    try {
      const outcome = await send();
      return { ok: true, label, detail: `${outcome.type} appended at sequence ${outcome.seq}` };
    } catch (err) {
      return { ok: false, label, ...describeError(err) };
    }
  }

  /**
   * A consolidation verb (dream_accept, dream_reject, dream_revert) as the page's human: one result per
   * proposal, as the service reports it (applied, rejected, reverted, or refused with its reason); a refusal
   * of the whole request (the policy's `dream` verb) is one refused result.
   */
  async review(app: string, verb: "dream_accept" | "dream_reject" | "dream_revert", payload: Record<string, unknown>, label: string): Promise<ActionResult[]> {
    let reply: { results: DreamItemOutcome[]; replayed?: boolean };
    try {
      reply = await this.client(app).request(verb as Verb, payload as RequestOf<Verb>);
    } catch (err) {
      return [{ ok: false, label, ...describeError(err) }];
    }
    if (reply.results.length === 0) return [{ ok: true, label, detail: reply.replayed ? "already done: nothing new appended" : "nothing to do" }];
    return reply.results.map((r): ActionResult => {
      const what = `${label} ${r.proposalId}`;
      if (r.outcome === "refused") return { ok: false, label: what, code: r.error?.code ?? "refused", message: r.error?.message ?? "refused" };
      const events = r.events.map((e) => `${e.type} at ${e.seq}`).join(", ");
      return { ok: true, label: what, detail: `${r.outcome}${events ? `: ${events}` : ""}` };
    });
  }

  async memory(app: string, memoryId: string): Promise<MemoryPage> {
    const client = this.client(app);
    const [history, shown] = await Promise.all([client.history(memoryId), client.show(memoryId)]);
    const byVersion = new Map(history.versions.map((v) => [v.version, v]));
    const diffs = history.versions.map((v) => {
      const before = byVersion.get(v.version - 1);
      return { version: v.version, patch: createTwoFilesPatch(before ? `${memoryId}@v${before.version}` : "(nothing)", `${memoryId}@v${v.version}`, before ? versionText(before) : "", versionText(v), "", "", { context: 3 }) };
    });
    let exposure: MemoryPage["exposure"];
    try {
      // Receipts live on the sessions of the app's stream; the org has no sessions of its own.
      const receipts = app === ORG_APP ? [] : await exposureOf(this.store, app, memoryId);
      exposure = { sessions: exposedSessions(receipts), receipts };
    } catch (err) {
      exposure = { error: describeError(err).message };
    }
    return { app, memoryId, history, diffs, promotions: shown.promotions, exposure };
  }

  /** The app's events as the human may read them, newest first, narrowed by actor, session and type. */
  async timeline(app: string, filter: TimelineFilter): Promise<LogEntry[]> {
    const entries = await this.log(app);
    const type = filter.type?.trim();
    const matchesType = (t: string) => !type || t === type || t.startsWith(`${type}.`);
    const out: LogEntry[] = [];
    for (let i = entries.length - 1; i >= 0 && out.length < (filter.limit ?? 300); i--) {
      const e = entries[i]!;
      if (filter.actor && `${e.actor.kind}:${e.actor.id}` !== filter.actor && e.actor.id !== filter.actor) continue;
      if (filter.session && e.sessionId !== filter.session) continue;
      if (!matchesType(e.type)) continue;
      out.push(e);
    }
    return out;
  }

  async claims(app: string): Promise<{ claims: LiveClaim[] | { error: string }; tasks: OpenTask[] | { error: string } }> {
    const client = this.client(app);
    const [claims, tasks] = await Promise.all([
      client.claims().catch((err: unknown) => ({ error: describeError(err).message })),
      client.tasks().catch((err: unknown) => ({ error: describeError(err).message })),
    ]);
    return { claims, tasks };
  }

  /** Consolidation runs and their proposals, folded from the run.* and proposal.* events of the log. */
  async runs(app: string): Promise<RunView[]> {
    return (await this.folded(app)).runs.list();
  }

  /** The cited lines of a stored transcript (1-based, inclusive), or why they cannot be shown. */
  async excerpt(span: TranscriptSpan): Promise<{ lines: { n: number; text: string }[] } | { error: string }> {
    try {
      const hex = span.digest.slice("sha256:".length);
      let lines = this.transcriptText.get(hex);
      if (!lines) {
        this.transcripts ??= useTranscripts(this.store.nc, this.store.names).catch((err) => {
          this.transcripts = undefined;
          throw err;
        });
        const bytes = await readTranscript(await this.transcripts, { name: hex });
        lines = new TextDecoder().decode(bytes).split(/\r?\n/);
        if (this.transcriptText.size > 64) this.transcriptText.clear();
        this.transcriptText.set(hex, lines);
      }
      const [from, to] = span.lines;
      if (from > lines.length) return { error: `the transcript has ${lines.length} lines; the span starts at ${from}` };
      return { lines: lines.slice(from - 1, Math.min(to, lines.length)).map((text, i) => ({ n: from + i, text })) };
    } catch (err) {
      return { error: describeError(err).message };
    }
  }

  async close(): Promise<void> {
    this.clients.clear();
  }
}

/** `memoryId@version` as the queue's checkboxes and buttons carry it. */
export function parseItem(value: string): { memoryId: string; version: number } {
  const at = value.lastIndexOf("@");
  const version = Number(value.slice(at + 1));
  if (at <= 0 || !Number.isInteger(version) || version < 1) throw invalid(`not an item: ${JSON.stringify(value.slice(0, 80))}`);
  return { memoryId: value.slice(0, at), version };
}
