import { LRUCache } from "lru-cache";
import { sessionDecider } from "../../commands/session.js";
import type { CommandHandler } from "../command-handler.js";
import { forbidden } from "../../schemas/errors.js";
import { authorize, sessionOfScope, type Policy, type ScopeFacts } from "../../schemas/policy.js";
import type { Actor } from "../../schemas/primitives.js";

/**
 * Session candidates (`session:<id>`, docs/candidates.md) are private to the agent that started the
 * session, and, read from within a session, to the sessions of the same worktree. The policy is pure and
 * cannot know who started a session: these are the facts it is given (schemas/policy.ts ScopeFacts),
 * read from the session aggregate.
 */

/** What reads and writes need of a session: its agent, its worktree, whether it ended. */
export interface SessionFact {
  agentId: string | null;
  worktree: string | null;
  ended: boolean;
}

/** Reads one session's state from the log (the command handler's load, caught up): null when there is none. */
export type LoadSession = (app: string, sessionId: string) => Promise<SessionFact | null>;

/** The session aggregate as the command handler loads it, caught up with the log. */
export const loadSessionWith =
  (handler: Pick<CommandHandler, "load">): LoadSession =>
  async (app, sessionId) => {
    const { state } = await handler.load(sessionDecider, app, sessionId);
    return state.id === null ? null : { agentId: state.agentId, worktree: state.worktree, ended: state.endedAt !== null };
  };

/**
 * Sessions by app and id, remembered once seen: a session's agent and worktree are fixed by its first
 * event (`session.started`; a second start is refused by the decider), so a remembered answer never goes
 * stale for reads. Whether it ended does change: writes ask `fresh`. An absent session is not remembered
 * (it may start a moment later).
 */
export class SessionDirectory {
  private readonly known = new LRUCache<string, SessionFact>({ max: 10_000 });

  constructor(private readonly load: LoadSession) {}

  private static key = (app: string, sessionId: string) => `${app}\u0000${sessionId}`;

  /** The session as remembered, or undefined when it was never seen. */
  cached(app: string, sessionId: string): SessionFact | undefined {
    return this.known.get(SessionDirectory.key(app, sessionId));
  }

  /** The session as the log has it now (for writes: whether it ended is decided on this). */
  async fresh(app: string, sessionId: string): Promise<SessionFact | null> {
    const fact = await this.load(app, sessionId);
    if (fact !== null && fact.agentId !== null) this.known.set(SessionDirectory.key(app, sessionId), fact);
    return fact;
  }
}

/**
 * A session's candidates are shared by the sessions of one worktree: two sessions in different worktrees
 * (or either without one) keep their own. A session without a worktree is a worktree of its own.
 */
export const worktreeKey = (sessionId: string, fact: SessionFact | null | undefined): string =>
  fact?.worktree ? `worktree:${fact.worktree}` : `session:${sessionId}`;

/**
 * Which scopes one actor may read in one app, for one request: the policy's answer per scope (memoised,
 * a search or a log asks per hit), with session scopes resolved through the directory. Synchronous, so
 * filters stay where they are; a session scope not resolved yet is refused and noted in `missed`, and the
 * caller resolves them and asks again (CommandService.readAs). Closed by default: what is not known is
 * not shown.
 *
 * Worktree isolation: an agent reading from within a session (`readerSession`) sees, of its own
 * candidates, only those of sessions in the same worktree as that one. Readers who hold a rule on other
 * agents' sessions (reviewers, admins) see them all.
 */
export class ScopeReader {
  /** Session ids met but not resolved yet: resolve them and ask again. */
  readonly missed = new Set<string>();
  private readonly absent = new Set<string>();
  private readonly answers = new Map<string, boolean>();
  private readonly facts: ScopeFacts;

  constructor(
    private readonly policy: Policy,
    readonly actor: Actor,
    readonly app: string,
    private readonly directory: SessionDirectory | undefined,
    readonly readerSession: string | undefined,
  ) {
    this.facts = { sessionAgent: (id) => this.fact(id)?.agentId };
  }

  private fact(sessionId: string): SessionFact | null | undefined {
    if (this.absent.has(sessionId)) return null;
    const fact = this.directory?.cached(this.app, sessionId);
    if (fact === undefined && this.directory) this.missed.add(sessionId);
    return fact;
  }

  /** The agent whose session's candidates `scope` holds, when known (null for other scopes). */
  sessionAgent(scope: string): string | null {
    const session = sessionOfScope(scope);
    return session === null ? null : (this.fact(session)?.agentId ?? null);
  }

  mayRead = (scope: string): boolean => {
    const session = sessionOfScope(scope);
    if (session === null) {
      let answer = this.answers.get(scope);
      if (answer === undefined) this.answers.set(scope, (answer = authorize(this.policy, this.actor, "read", scope).allowed));
      return answer;
    }
    const fact = this.fact(session);
    if (!fact) return false;
    if (!authorize(this.policy, this.actor, "read", scope, this.facts).allowed) return false;
    if (this.readerSession === undefined || this.actor.kind !== "agent" || fact.agentId !== this.actor.id) return true;
    // The agent's own candidates, read from within one of its sessions: that session's worktree only.
    const mine = this.fact(this.readerSession);
    if (mine === undefined) return false;
    return worktreeKey(this.readerSession, mine) === worktreeKey(session, fact);
  };

  /** Resolves every session met but not known (and `more`), so the next pass can answer for them. */
  async resolve(more: Iterable<string> = []): Promise<void> {
    if (!this.directory) return;
    const ids = new Set([...this.missed, ...more]);
    this.missed.clear();
    await Promise.all(
      [...ids].map(async (id) => {
        if (this.absent.has(id) || this.directory!.cached(this.app, id)) return;
        if ((await this.directory!.fresh(this.app, id)) === null) this.absent.add(id);
      }),
    );
  }

  /**
   * Runs a read with this filter, and again when it met session scopes not resolved yet: the filter is
   * synchronous and closed for what it does not know, so the second pass is the one that may show them.
   * For reads only (running one twice is safe).
   */
  async twoPass<T>(run: (reader: ScopeReader) => Promise<T>): Promise<T> {
    if (this.readerSession !== undefined) await this.resolve([this.readerSession]);
    for (let pass = 1; ; pass++) {
      const result = await run(this);
      if (this.missed.size === 0 || pass >= 3) return result;
      await this.resolve();
    }
  }

  /** Throws `forbidden`, as the guard's requireRead does, unless `scope` is readable (resolving it first). */
  async require(scope: string, what: string): Promise<void> {
    const session = sessionOfScope(scope);
    if (session !== null) await this.resolve([session, ...(this.readerSession ? [this.readerSession] : [])]);
    if (this.mayRead(scope)) return;
    const decision = authorize(this.policy, this.actor, "read", scope, this.facts);
    const reason = decision.allowed
      ? `${this.actor.kind}:${this.actor.id} may not read in scope ${scope} from session ${this.readerSession}: its candidates belong to another worktree`
      : decision.reason;
    throw forbidden(`${reason} (${what})`, { actor: this.actor, verb: "read", scope, roles: decision.roles, missing: { verb: "read", scope } });
  }
}
