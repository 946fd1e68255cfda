import { randomBytes } from "node:crypto";
import { chmod, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, extname, join, resolve } from "node:path";
import bcrypt from "bcryptjs";
import { ORG_APP, naming } from "../../events/subjects.js";
import { invalid } from "../../schemas/errors.js";
import type { Policy } from "../../schemas/policy.js";
import type { ActorKind } from "../../schemas/primitives.js";
import { inboxPrefixFor } from "../nats.js";
import { loadPolicy } from "./load.js";

/**
 * Identity from the broker: a nats-server configuration in which every actor the policy names is a
 * user that may publish only on its own command subjects, so the actor the command service reads from
 * the subject is the one the broker authenticated. Nobody but the memledger service user may publish
 * on the ledger's stream subjects or use the JetStream API.
 *
 * Replies: each user reads replies in its own inbox namespace only (`_INBOX_<user>.>`, services/nats.ts
 * `inboxPrefixFor`; memledger's clients take that prefix from the user name they log in with). Nobody
 * may subscribe to the shared `_INBOX.>`, through which any user could read replies meant for others.
 * The service may publish into the users' inboxes (its replies) and nowhere else outside the ledger.
 *
 * Passwords: the configuration holds bcrypt hashes only (nats-server checks a `$2a$`/`$2b$` password
 * as a bcrypt hash); the plain passwords are in the credentials file beside it (mode 0600).
 */

/** NATS system subjects (not memledger's: those come from events/subjects.ts). */
const JS_ALL = "$JS.>";
const JS_API = "$JS.API.>";
const JS_ACK = "$JS.ACK.>";
const JS_FLOW = "$JS.FC.>";
const JS_EVENTS = "$JS.EVENT.>";
const KV_ALL = "$KV.>";
const OBJ_ALL = "$O.>";
const SYS_ALL = "$SYS.>";

/** Every reply to a user goes to `<its inbox prefix>.<unique token>`. */
const inboxOf = (user: string): string => {
  const prefix = inboxPrefixFor(user);
  if (prefix === null) throw invalid(`broker user '${user}' cannot name an inbox`);
  return `${prefix}.>`;
};

/**
 * bcrypt cost of the hashes in the configuration. The passwords are 192 random bits, so no cost factor
 * makes guessing them feasible or infeasible: the hash is what keeps a leaked configuration from being a
 * list of logins, and the cost is only what every login pays on the server (connect p50 on the 2-core
 * test machine at load average 29: plain password 2.5 ms, cost 8 about 100 ms, cost 11, `nats server
 * passwd`'s default, 770 ms). Every one-shot CLI call logs in, so the default is low; `--bcrypt-cost`
 * raises it.
 */
export const BCRYPT_COST = 8;

/** The credentials-file key and default user name of the service that runs `memledger up`. */
export const SERVICE_USER = "memledger";

/**
 * The read-only auditor (issue 12 item 7): runs history, diff, blame, index, export, verify and exposure,
 * which read the streams directly, and nothing that writes. Always emitted, like the service user.
 */
export const AUDITOR_USER = "auditor";

/**
 * What reading a stream takes, on every stream (stream names are one subject token, so `<prefix>_app_*`
 * cannot be spelled; the auditor reads the whole ledger anyway): stream names and info, direct gets,
 * ephemeral ordered consumers (create, info, next message; they expire on their own, so no delete).
 * Bodies of some requests carry the selector, so subject-level limits are not airtight (NOTES); nothing
 * here can append, edit or delete a message. `$JS.API.INFO` is the client's JetStream check.
 */
const READ_STREAMS = [
  "$JS.API.INFO",
  "$JS.API.STREAM.NAMES",
  "$JS.API.STREAM.LIST",
  "$JS.API.STREAM.INFO.*",
  "$JS.API.DIRECT.GET.*",
  "$JS.API.DIRECT.GET.*.>",
  "$JS.API.STREAM.MSG.GET.*",
  "$JS.API.CONSUMER.CREATE.*",
  "$JS.API.CONSUMER.CREATE.*.>",
  "$JS.API.CONSUMER.INFO.*.*",
  "$JS.API.CONSUMER.MSG.NEXT.*.*",
];
/** Everything that changes a stream, refused explicitly (also where an allow above would overlap). */
const WRITE_STREAMS = [
  "$JS.API.STREAM.CREATE.>",
  "$JS.API.STREAM.UPDATE.>",
  "$JS.API.STREAM.DELETE.>",
  "$JS.API.STREAM.PURGE.>",
  "$JS.API.STREAM.MSG.DELETE.>",
  "$JS.API.STREAM.SNAPSHOT.>",
  "$JS.API.STREAM.RESTORE.>",
  "$JS.API.CONSUMER.DURABLE.CREATE.>",
  "$JS.API.CONSUMER.DELETE.>",
];

export interface Permissions {
  publish: { allow: string[]; deny?: string[] };
  subscribe: { allow: string[]; deny?: string[] };
}

export interface BrokerUser {
  /** `memledger` for the service, `<kind>:<id>` for an actor of the policy. */
  name: string;
  /** The NATS user name: `memledger`, or `<kind>.<id>`. */
  user: string;
  password: string;
  /** Where its replies arrive: `_INBOX_<user>`; the SDK and CLI derive it from the user name. */
  inboxPrefix: string;
  permissions: Permissions;
}

/** A user as the configuration file names it: the bcrypt hash of its password, never the password. */
export type HashedBrokerUser = Omit<BrokerUser, "password"> & { passwordHash: string };

/** The concrete actors a policy names (wildcard entries give roles but cannot log in). */
export function policyActors(policy: Policy): { kind: ActorKind; id: string; apps: string[] | null }[] {
  return Object.entries(policy.actors)
    .filter(([pattern]) => !pattern.includes("*"))
    .map(([pattern, entry]) => {
      const [kind, id] = pattern.split(":") as [ActorKind, string];
      return { kind, id, apps: entry.apps ?? policy.apps ?? null };
    });
}

/** Every user of the broker and its permissions; `passwordFor` supplies (or keeps) each one's secret. */
export function brokerUsers(policy: Policy, prefix: string, passwordFor: (name: string) => string): BrokerUser[] {
  const names = naming(prefix);
  const streamSubjects = [names.appEvents("*"), names.orgEvents()];
  /**
   * Session transcripts (services/transcripts.ts), agents only: an agent's SDK stores its transcript in the object
   * store before session_end (the service then checks it is there). That takes the bucket's own stream
   * (info, direct and message gets to find an object already there) and publishing its chunks and
   * metadata; nothing of any other stream. Never its creation: the service creates the bucket at start,
   * so no agent chooses its configuration (a max age that drops transcripts, say).
   */
  const transcriptsStream = `OBJ_${names.transcriptsBucket()}`;
  const storeTranscripts = [
    // The JetStream client's check that the API is there (account limits and usage; reveals no data).
    "$JS.API.INFO",
    `$JS.API.STREAM.INFO.${transcriptsStream}`,
    `$JS.API.STREAM.MSG.GET.${transcriptsStream}`,
    `$JS.API.DIRECT.GET.${transcriptsStream}`,
    `$JS.API.DIRECT.GET.${transcriptsStream}.>`,
    `$O.${names.transcriptsBucket()}.>`,
  ];
  const actors = policyActors(policy).map(({ kind, id, apps }): BrokerUser => {
    const name = `${kind}:${id}`;
    const user = `${kind}.${id}`;
    return {
      name,
      user,
      password: passwordFor(name),
      inboxPrefix: inboxPrefixFor(user)!,
      permissions: {
        publish: {
          // The org is every app's (the guard treats it as always declared): its commands stay reachable.
          allow: [...(apps ? [...new Set([...apps, ORG_APP])] : ["*"]).map((app) => names.command(app, kind, id, ">")), ...(kind === "agent" ? storeTranscripts : [])],
          deny: [...streamSubjects, KV_ALL, SYS_ALL, JS_ACK, JS_FLOW, JS_EVENTS, ...WRITE_STREAMS, "$JS.API.CONSUMER.>"],
        },
        // Its own replies only.
        subscribe: { allow: [inboxOf(user)] },
      },
    };
  });
  const service: BrokerUser = {
    name: SERVICE_USER,
    user: SERVICE_USER,
    password: passwordFor(SERVICE_USER),
    inboxPrefix: inboxPrefixFor(SERVICE_USER)!,
    permissions: {
      // The JetStream API (streams, direct get, consumers), appends, acks, KV and object store, and its
      // replies: into each user's inbox, nowhere else (the command service also refuses any reply
      // subject that is not an inbox, services/command-service.ts).
      publish: { allow: [JS_API, JS_ACK, JS_FLOW, ...streamSubjects, KV_ALL, OBJ_ALL, ...actors.map((a) => inboxOf(a.user))] },
      // Commands (queue group), replies to its own requests, advisories, and stream subjects for consumers.
      subscribe: { allow: [names.allCommands(), inboxOf(SERVICE_USER), JS_EVENTS, ...streamSubjects, KV_ALL, OBJ_ALL] },
    },
  };
  const auditor: BrokerUser = {
    name: AUDITOR_USER,
    user: AUDITOR_USER,
    password: passwordFor(AUDITOR_USER),
    inboxPrefix: inboxPrefixFor(AUDITOR_USER)!,
    permissions: {
      // Reads only: no command subject, no stream subject, no KV or object store write, no stream change.
      publish: { allow: READ_STREAMS, deny: [...WRITE_STREAMS, ...streamSubjects, `${prefix}.cmd.>`, KV_ALL, OBJ_ALL, SYS_ALL, JS_ACK] },
      subscribe: { allow: [inboxOf(AUDITOR_USER)] },
    },
  };
  const seen = new Set<string>();
  for (const u of [service, ...actors, auditor]) {
    if (seen.has(u.user)) throw invalid(`two broker users named '${u.user}'`);
    seen.add(u.user);
  }
  return [service, ...actors, auditor];
}

/** bcrypt hashes of every user's password, for the configuration file. */
export async function hashPasswords(users: BrokerUser[], cost = BCRYPT_COST): Promise<HashedBrokerUser[]> {
  return Promise.all(users.map(async ({ password, ...rest }) => ({ ...rest, passwordHash: await bcrypt.hash(password, cost) })));
}

/** What nats-server takes as a bcrypt hash rather than a plain password. */
export const isBcryptHash = (s: string): boolean => /^\$2[ab]\$\d{2}\$[./A-Za-z0-9]{53}$/.test(s);

export interface NatsConfOptions {
  host: string;
  port: number;
  storeDir: string;
  /** Where the config came from, for its header comment. */
  source: string;
  prefix: string;
}

const q = (s: string) => JSON.stringify(s);
const list = (items: string[]) => `[${items.map(q).join(", ")}]`;

function permissionsBlock(p: Permissions, indent: string): string {
  const side = (name: string, rules: { allow: string[]; deny?: string[] }) =>
    `${indent}  ${name}: { allow: ${list(rules.allow)}${rules.deny?.length ? `, deny: ${list(rules.deny)}` : ""} }`;
  return [`${indent}permissions: {`, side("publish", p.publish), side("subscribe", p.subscribe), `${indent}}`].join("\n");
}

/** The nats-server configuration text: listen address, JetStream store, one user per identity. */
export function renderNatsConf(users: HashedBrokerUser[], options: NatsConfOptions): string {
  const lines = [
    `# Generated by \`memledger auth config\` from ${options.source} (prefix ${options.prefix}).`,
    "# Passwords are bcrypt hashes; the passwords are in the credentials file beside it. Kept private",
    "# anyway (mode 0600): it lists who may do what. Regenerate it when the policy changes.",
    `listen: ${q(`${options.host}:${options.port}`)}`,
    "",
    "jetstream {",
    `  store_dir: ${q(options.storeDir)}`,
    "}",
    "",
    "authorization {",
    "  users: [",
  ];
  for (const u of users) {
    // Never a plain password here: a hash is what the server compares against.
    if (!isBcryptHash(u.passwordHash)) throw invalid(`the password of broker user '${u.user}' is not a bcrypt hash`);
    // Quoted, the `$` of the hash is not read as a variable reference.
    lines.push(`    # ${u.name}`, "    {", `      user: ${q(u.user)}`, `      password: ${q(u.passwordHash)}`, permissionsBlock(u.permissions, "      "), "    }");
  }
  lines.push("  ]", "}", "");
  return lines.join("\n");
}

export interface AuthConfigOptions {
  policyFile: string;
  /** The nats-server config to write (default nats.conf); the credentials file goes beside it. */
  out?: string;
  prefix: string;
  host?: string;
  port?: number;
  /** JetStream store directory (default: `jetstream` beside the config). */
  storeDir?: string;
  /** bcrypt cost of the hashes (default {@link BCRYPT_COST}; 4 to 31). */
  bcryptCost?: number;
}

export interface CredentialsFile {
  server: string;
  prefix: string;
  /**
   * Per user: the password and a ready-made NATS URL carrying it, and the inbox prefix its replies use
   * (memledger's clients derive it from the user name; other NATS clients must be given it, e.g.
   * `nats --inbox-prefix`).
   */
  users: Record<string, { user: string; password: string; inboxPrefix: string; url: string }>;
}

export interface AuthConfigWritten {
  config: string;
  credentials: string;
  server: string;
  storeDir: string;
  /** Who can log in; no secrets (those are in the credentials file only). */
  users: { name: string; user: string; inboxPrefix: string; publish: string[] }[];
  /** What the operator should act on (a credentials file found readable by others); empty when nothing. */
  warnings: string[];
}

/**
 * Writes a private file whatever was there before: the text goes to a new file created with mode 0600
 * in the same directory, which then replaces the old one (rename is atomic). Writing over an existing
 * file in place would keep its mode (say 0644) and expose the new secrets until a chmod; a symlink in
 * its place is replaced, not followed.
 */
export async function writePrivateFile(path: string, text: string): Promise<void> {
  const temporary = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`);
  try {
    await writeFile(temporary, text, { mode: 0o600, flag: "wx" });
    await chmod(temporary, 0o600);
    await rename(temporary, path);
  } catch (err) {
    await rm(temporary, { force: true });
    throw err;
  }
}

/** `<dir>/<name>.credentials.json` beside `<dir>/<name>.conf`. */
export const credentialsPathFor = (config: string): string =>
  join(dirname(config), `${basename(config, extname(config))}.credentials.json`);

async function existingPasswords(file: string): Promise<Map<string, string>> {
  try {
    const parsed = JSON.parse(await readFile(file, "utf8")) as Partial<CredentialsFile>;
    return new Map(Object.entries(parsed.users ?? {}).map(([name, c]) => [name, c.password]));
  } catch {
    return new Map();
  }
}

const newPassword = () => randomBytes(24).toString("base64url");

/**
 * Writes the nats-server config (bcrypt hashes) and, beside it, a credentials file (mode 0600, also when
 * it existed with a wider mode) with each user's password, inbox prefix and a ready-made NATS URL. Passwords already in that file are kept, so regenerating after
 * a policy change does not lock anyone out. Returns paths and user names only, never a secret.
 */
export async function writeAuthConfig(options: AuthConfigOptions): Promise<AuthConfigWritten> {
  const policy = await loadPolicy(options.policyFile);
  const config = resolve(options.out ?? "nats.conf");
  const credentials = credentialsPathFor(config);
  const host = options.host ?? "127.0.0.1";
  const port = options.port ?? 4222;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid(`bad port ${port}`);
  const storeDir = resolve(options.storeDir ?? join(dirname(config), "jetstream"));
  const known = await existingPasswords(credentials);
  const warnings: string[] = [];
  const before = await stat(credentials).catch(() => null);
  if (before && (before.mode & 0o077) !== 0) {
    // Its passwords are kept (regenerating must not lock anyone out), but others may have read them.
    warnings.push(
      `${credentials} was readable by others (mode 0${(before.mode & 0o777).toString(8)}); it is 0600 now, but the passwords in it may have leaked: delete it and run this again to issue new ones`,
    );
  }
  const users = brokerUsers(policy, options.prefix, (name) => known.get(name) ?? newPassword());
  const server = `nats://${host.includes(":") ? `[${host}]` : host}:${port}`;

  await mkdir(dirname(config), { recursive: true });
  const creds: CredentialsFile = {
    server,
    prefix: options.prefix,
    users: Object.fromEntries(
      users.map((u) => [
        u.name,
        { user: u.user, password: u.password, inboxPrefix: u.inboxPrefix, url: server.replace("//", `//${encodeURIComponent(u.user)}:${encodeURIComponent(u.password)}@`) },
      ]),
    ),
  };
  const cost = options.bcryptCost ?? BCRYPT_COST;
  if (!Number.isInteger(cost) || cost < 4 || cost > 31) throw invalid(`bad bcrypt cost ${cost}: a whole number from 4 to 31`);
  const conf = renderNatsConf(await hashPasswords(users, cost), { host, port, storeDir, source: options.policyFile, prefix: options.prefix });
  await writePrivateFile(credentials, `${JSON.stringify(creds, null, 2)}\n`);
  await writePrivateFile(config, conf);
  return {
    config,
    credentials,
    server,
    storeDir,
    users: users.map((u) => ({ name: u.name, user: u.user, inboxPrefix: u.inboxPrefix, publish: u.permissions.publish.allow })),
    warnings,
  };
}
