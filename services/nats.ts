import { connect, type NatsConnection } from "@nats-io/transport-node";
import { JetStreamApiCodes, JetStreamApiError, type JsMsg } from "@nats-io/jetstream";
import { unavailable } from "../schemas/errors.js";

export const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";

export const natsUrlFromEnv = (): string => process.env.NATS_URL ?? DEFAULT_NATS_URL;

export interface ConnectOptions {
  servers?: string;
  name?: string;
  user?: string;
  pass?: string;
  /** Fail fast for one-shot CLI calls; long-running services keep reconnecting forever. */
  reconnect?: boolean;
  timeoutMs?: number;
  /**
   * Where this connection's replies arrive (`<inboxPrefix>.<unique>`). Default: NATS_INBOX_PREFIX if set,
   * else `_INBOX_<user>` when the connection logs in as a user (see {@link inboxPrefixFor}), else `_INBOX`.
   */
  inboxPrefix?: string;
}

/** The prefix every NATS client uses for replies unless told otherwise; one shared namespace. */
export const SHARED_INBOX_PREFIX = "_INBOX";

/** User names that can name an inbox: subject tokens separated by dots, no wildcards or spaces. */
const INBOX_SAFE_USER = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

/**
 * A user's own reply namespace, `_INBOX_<user>` (for `agent.coder-1`: `_INBOX_agent.coder-1`), in which
 * only that user may subscribe (`memledger auth config` grants `_INBOX_<user>.>` and nothing of the
 * shared `_INBOX.>`), so no other user can read its replies. Broker user names are `<kind>.<id>` with
 * ids of `[A-Za-z0-9_-]`, so no user's namespace lies inside another's. Null for a user name that cannot
 * be part of a subject (such a user keeps the shared prefix).
 */
export function inboxPrefixFor(user: string): string | null {
  return INBOX_SAFE_USER.test(user) ? `${SHARED_INBOX_PREFIX}_${user}` : null;
}

/** The reply prefix a connection uses: explicit, else NATS_INBOX_PREFIX, else the user's own, else shared. */
export function resolveInboxPrefix(user: string | undefined, explicit?: string): string {
  const fromEnv = process.env.NATS_INBOX_PREFIX;
  if (explicit) return explicit;
  if (fromEnv) return fromEnv;
  return (user !== undefined ? inboxPrefixFor(user) : null) ?? SHARED_INBOX_PREFIX;
}

/**
 * Takes `user:password@` out of NATS URLs (`nats://memledger:secret@host:4222`, percent-encoded as in
 * any URL), since the client does not read them there: the URLs without them, and the first pair found.
 */
export function splitCredentials(servers: string): { servers: string; user?: string; pass?: string } {
  let user: string | undefined;
  let pass: string | undefined;
  const stripped = servers.replace(/(^|,)(\s*[a-z][a-z0-9+.-]*:\/\/)([^/@\s,]+)@/gi, (_all, sep: string, scheme: string, info: string) => {
    if (user === undefined) {
      const colon = info.indexOf(":");
      user = decodeURIComponent(colon < 0 ? info : info.slice(0, colon));
      pass = colon < 0 ? undefined : decodeURIComponent(info.slice(colon + 1));
    }
    return `${sep}${scheme}`;
  });
  return { servers: stripped, ...(user !== undefined ? { user } : {}), ...(pass !== undefined ? { pass } : {}) };
}

/**
 * Why the command service must not answer on `reply`, or null when it may. A request's reply subject is
 * whatever its sender chose, and the service publishes as a user that may write the ledger's streams: a
 * reply aimed at `<prefix>.app.<app>.memory.<id>` would be stored there as junk. So it answers only into
 * an inbox: the shared `_INBOX.` (clients without a user of their own), or the sender's own
 * `_INBOX_<kind>.<id>.` (the broker user `<kind>.<id>` of the actor in the command subject), never a
 * subject under the ledger's prefix, a `$` system subject, another user's inbox, or anything else.
 */
export function replyRefusal(reply: string, ledgerPrefix: string, sender: { kind: string; id: string } | null): string | null {
  if (!/^[^\s*>]+$/.test(reply) || reply.split(".").some((token) => token === "")) return `reply subject '${reply}' is not a plain subject`;
  if (reply === ledgerPrefix || reply.startsWith(`${ledgerPrefix}.`)) return `reply subject '${reply}' is under the ledger prefix ${ledgerPrefix}`;
  const own = sender ? inboxPrefixFor(`${sender.kind}.${sender.id}`) : null;
  const inboxes = [SHARED_INBOX_PREFIX, ...(own ? [own] : [])];
  if (inboxes.some((prefix) => reply.startsWith(`${prefix}.`) && reply.length > prefix.length + 1)) return null;
  return `reply subject '${reply}' is not an inbox of the sender (${inboxes.map((p) => `${p}.>`).join(" or ")})`;
}

/**
 * Connects with reconnects on and async stack traces off: the v3 client otherwise builds an Error per
 * request, which shared/NOTES.md (the project's measurements of this stack) measured as a third of the publish throughput.
 */
export async function connectNats(options: ConnectOptions = {}): Promise<NatsConnection> {
  const fromUrl = splitCredentials(options.servers ?? natsUrlFromEnv());
  const servers = fromUrl.servers;
  const user = options.user ?? fromUrl.user;
  try {
    return await connect({
      servers,
      name: options.name ?? "memledger",
      user,
      pass: options.pass ?? fromUrl.pass,
      // An auth-enabled broker (memledger auth config) lets each user read replies in its own inbox only.
      inboxPrefix: resolveInboxPrefix(user, options.inboxPrefix),
      noAsyncTraces: true,
      reconnect: options.reconnect ?? true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      timeout: options.timeoutMs ?? 5_000,
    });
  } catch (err) {
    throw unavailable(`cannot reach NATS at ${servers}: ${(err as Error).message}`, { servers });
  }
}

/** NATS's default for the largest message a server accepts, for a connection that has not said (1 MiB). */
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

/**
 * The largest message, in bytes, the server this connection talks to accepts (its `max_payload`). A
 * reply larger than that cannot be sent at all: the requester would only see its request time out.
 */
export const maxPayloadOf = (nc: NatsConnection): number => nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;

/** Server features memledger could use, by the version that introduced them. */
const FEATURES = {
  directGet: "2.9.0",
  lastSubjectSequenceSubject: "2.11.0",
  multipleFilterSubjects: "2.10.0",
  streamMetadata: "2.10.0",
  perMessageTtl: "2.11.0",
  atomicBatchPublish: "2.12.0",
} as const;

export type ServerFeatures = Record<keyof typeof FEATURES, boolean> & { version: string };

/** The oldest server memledger runs on: it needs direct get and per-subject expected sequences. */
export const MINIMUM_SERVER_VERSION = FEATURES.directGet;

const parseVersion = (v: string): number[] => v.split(/[.-]/).slice(0, 3).map((n) => Number.parseInt(n, 10) || 0);

export function versionAtLeast(version: string, minimum: string): boolean {
  const a = parseVersion(version);
  const b = parseVersion(minimum);
  for (let i = 0; i < 3; i++) {
    if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  }
  return true;
}

export function serverFeatures(version: string): ServerFeatures {
  const flags = Object.fromEntries(
    Object.entries(FEATURES).map(([name, since]) => [name, versionAtLeast(version, since)]),
  ) as Record<keyof typeof FEATURES, boolean>;
  return { version, ...flags };
}

/**
 * Refuses servers too old to keep memledger's promises, and reports what the server lacks so that the
 * code paths for newer features (which 2.9.10 silently ignores rather than refuses) are never taken.
 */
export function checkServer(nc: NatsConnection): ServerFeatures {
  const version = nc.info?.version ?? "0.0.0";
  if (!versionAtLeast(version, MINIMUM_SERVER_VERSION)) {
    throw unavailable(`nats-server ${version} is too old: memledger needs ${MINIMUM_SERVER_VERSION} or newer`, {
      version,
    });
  }
  if (nc.info?.jetstream === false) throw unavailable("nats-server runs without JetStream (start it with -js)");
  return serverFeatures(version);
}

/**
 * How long each pull of a `consume()` waits before it is renewed. The client's default (30 s) is also how
 * long a consumer whose server died goes unnoticed: in a cluster that lost the node hosting it, delivery
 * stalled 30 to 90 s with nothing logged (test/faults/cluster.e2e.spec.ts); with 5 s it resumes within
 * seconds. Every long-running consumer of the ledger passes it.
 */
export const PULL_EXPIRES_MS = 5_000;

type ErrorClass = abstract new (...args: never[]) => Error;

/**
 * Whether `err`, or an error in its `cause` chain, is an instance of one of `classes` (the NATS clients'
 * named error classes): decisions about failures branch on those, never on message text. The v3 client
 * wraps, e.g. a request's TimeoutError or PermissionViolationError in a RequestError's cause.
 */
export function causedBy(err: unknown, ...classes: ErrorClass[]): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (classes.some((c) => e instanceof c)) return true;
  }
  return false;
}

/**
 * JetStream API codes memledger reacts to that the client's JetStreamApiCodes does not list (the others
 * come from there).
 */
export const JetStreamCreateCodes = {
  /** "stream name already in use": two processes created one stream at once, or with other settings. */
  StreamNameInUse: 10058,
  /**
   * "stream create failed": with the fixed text "error creating store for stream" it is the server's file
   * store that failed (it logs the cause, "Stream create failed for ...", and sends only that sentence).
   */
  StreamCreate: 10049,
} as const;

/** The fixed sentence a server sends in place of the file store's own failure (nats-server jetstream_api.go). */
const STORE_FAILED = "error creating store for stream";

/**
 * The server's file store could not be set up for a new stream. Seen once in CI on a loaded machine for a
 * stream of a fresh, unique name, and reported elsewhere for a name deleted and made again at once: a
 * condition of the server's disk at that moment, so a creation is tried again before it is reported.
 * The one decision here made on a message's text: code 10049 carries every cause of a failed creation,
 * and the server tells this one apart only by replacing the cause with that fixed sentence.
 */
export function isStoreCreateFailure(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (e instanceof JetStreamApiError && e.code === JetStreamCreateCodes.StreamCreate && e.message.includes(STORE_FAILED)) return true;
  }
  return false;
}

export interface CreateRetry {
  /** Tries in all, the first included (default 6). */
  attempts?: number;
  /** The first wait; each next one doubles (default 50 ms: six tries span about 1.5 s). */
  delayMs?: number;
}

/**
 * Creates a JetStream resource (`what`: a stream, a KV bucket, an object store) through `create`, trying
 * again while the server reports its file store failed (isStoreCreateFailure). Once the tries are spent
 * that failure is `unavailable`, pointing at the server's log, where the cause is; any other error is
 * thrown as it came, for the caller to report. Every creation of memledger's own streams and buckets
 * goes through here.
 */
export async function createJetStreamResource<T>(what: string, create: () => Promise<T>, retry: CreateRetry = {}): Promise<T> {
  const attempts = retry.attempts ?? 6;
  let delay = retry.delayMs ?? 50;
  for (let attempt = 1; ; attempt++) {
    try {
      return await create();
    } catch (err) {
      if (!isStoreCreateFailure(err)) throw err;
      if (attempt >= attempts) {
        throw unavailable(
          `the NATS server could not create the file store of ${what} (${attempt} tries): its log says why, as "Stream create failed for ..."`,
          { attempts: attempt },
          err,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay *= 2;
    }
  }
}

/** The stream does not exist: a JetStream API error with that code (the client's StreamNotFoundError is one). */
export function isStreamNotFound(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (e instanceof JetStreamApiError && e.code === JetStreamApiCodes.StreamNotFound) return true;
  }
  return false;
}

/** Where a JetStream delivery sits: its stream sequence, and what the consumer had beyond it when it was sent. */
export interface DeliveryPosition {
  seq: number;
  pending: number;
}

/** The digits of `text` from `start` to `end` as a number, or NaN when anything else is there. */
function digitsAt(text: string, start: number, end: number): number {
  if (end <= start) return Number.NaN;
  let value = 0;
  for (let i = start; i < end; i++) {
    const digit = text.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) return Number.NaN;
    value = value * 10 + digit;
  }
  return value;
}

/**
 * The stream sequence and pending count of a delivery, read from its reply subject. The client's own
 * `msg.seq` and `msg.info` split the subject into all its fields and parse five numbers for every
 * message, of which a replay needs two: 0.45 µs a message against 0.16 here (a micro-benchmark of 200k
 * reply subjects), on the reading thread of every rebuild.
 * Both subject layouts the client reads are read here:
 *   $JS.ACK.<stream>.<consumer>.<delivered>.<seq>.<dseq>.<time>.<pending>                      (9 tokens)
 *   $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<seq>.<dseq>.<time>.<pending>.… (11 or more)
 * Undefined for anything else (callers then ask the client, which says what is wrong).
 */
export function deliveryPosition(reply: string): DeliveryPosition | undefined {
  if (typeof reply !== "string" || !reply.startsWith("$JS.ACK.")) return undefined;
  // Where each of the first twelve tokens ends (a dot, or the end of the subject).
  const ends: number[] = [];
  for (let at = reply.indexOf("."); at !== -1 && ends.length < 12; at = reply.indexOf(".", at + 1)) ends.push(at);
  if (ends.length < 12) ends.push(reply.length);
  const tokens = ends.length;
  let seqToken: number;
  if (tokens === 9) seqToken = 5;
  else if (tokens >= 11) seqToken = 7;
  else return undefined;
  const seq = digitsAt(reply, ends[seqToken - 1]! + 1, ends[seqToken]!);
  const pending = digitsAt(reply, ends[seqToken + 2]! + 1, ends[seqToken + 3]!);
  return Number.isNaN(seq) || Number.isNaN(pending) ? undefined : { seq, pending };
}

/**
 * {@link deliveryPosition} of a JetStream message; the client's own parse when its reply subject is
 * not one of those layouts. The reply subject is not in the client's JsMsg type, only in its class.
 */
export function deliveryOf(m: JsMsg): DeliveryPosition {
  return deliveryPosition((m as JsMsg & { reply?: string }).reply as string) ?? { seq: m.seq, pending: m.info.pending };
}
