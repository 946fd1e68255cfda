import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { serve, type ServerType } from "@hono/node-server";
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import type { NatsConnection } from "@nats-io/transport-node";
import { ORG_APP, naming } from "../../events/subjects.js";
import { invalid, MemledgerError, unavailable } from "../../schemas/errors.js";
import type { Actor } from "../../schemas/primitives.js";
import { EventStore } from "../event-store.js";
import { connectNats } from "../nats.js";
import { CSS, LIVE_JS } from "./assets.js";
import { accessGuard, checkBind, newFormToken } from "./auth.js";
import { uiContext } from "./context.js";
import { UiLedger } from "./ledger.js";
import { memoryRoutes } from "./routes/memory.js";
import { queueRoutes } from "./routes/queue.js";
import { runsRoutes } from "./routes/runs.js";
import { timelineRoutes } from "./routes/timeline.js";
import { LiveFeed, type LiveEvent } from "./sse.js";
import { errorPage } from "./views/layout.js";

/**
 * `memledger ui`: the review page. A hono app on @hono/node-server, server-rendered HTML with htmx
 * (served from node_modules) and server-sent events fed from the log. It acts as one human: every action
 * is a command verb sent as that actor, so the broker and the policy decide, exactly as for the CLI.
 */

export interface UiOptions {
  /** Default 127.0.0.1; any other address needs `token`. */
  host?: string;
  /** Default 7420; 0 picks a free port. */
  port?: number;
  token?: string | undefined;
  /** The human the page acts as (`human:<id>`). */
  actor: Actor;
  /** The app shown first. */
  app: string;
  prefix: string;
  /** The NATS URL the page sends commands with (the human's credentials under `memledger auth config`). */
  nats: string;
  /**
   * A NATS URL for what no verb serves (exposure, curator flags, transcripts, live updates): a user that may
   * read the streams, e.g. the `auditor` of `memledger auth config`. Default: the same connection.
   */
  readNats?: string | undefined;
  log?: (line: string) => void;
}

export interface UiServer {
  url: string;
  port: number;
  host: string;
  close(): Promise<void>;
}

const require = createRequire(import.meta.url);
/** Security headers on every response: scripts and styles from this page only, no framing, no referrer. */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/** How long the read connection has to show it can read the streams before the page refuses to start. */
const READER_CHECK_MS = 8_000;

/**
 * The connection for direct reads must be able to read the streams (list them, at least). Under `memledger
 * auth config` a human's user may only send commands: its JetStream requests are refused by the broker and
 * never answered, so say what to do instead of hanging.
 */
async function readerFor(nc: NatsConnection, prefix: string, separate: boolean): Promise<EventStore> {
  let timer: NodeJS.Timeout | undefined;
  const check = (async () => {
    const store = await EventStore.open(nc, naming(prefix));
    for await (const _ of store.jsm.streams.names()) break;
    return store;
  })();
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("no answer")), READER_CHECK_MS);
  });
  try {
    return await Promise.race([check, timeout]);
  } catch (err) {
    const why = (err as Error).message;
    throw unavailable(
      `the review page cannot read the streams through ${separate ? "--read-nats" : "its NATS connection"} (${why}): under memledger auth config a human's user may only send commands; give --read-nats (or MEMLEDGER_UI_READ_NATS) with a user that may read them, such as the auditor`,
    );
  } finally {
    clearTimeout(timer);
  }
}

export async function startUi(options: UiOptions): Promise<UiServer> {
  const host = options.host ?? "127.0.0.1";
  checkBind(host, options.token);
  if (options.actor.kind !== "human") throw invalid(`the review page acts as a human: give --as human:<id>, not ${options.actor.kind}:${options.actor.id}`);
  const log = options.log ?? (() => undefined);
  const htmx = await readFile(require.resolve("htmx.org/dist/htmx.min.js"), "utf8");

  const nc = await connectNats({ servers: options.nats, name: `memledger-ui-${options.actor.id}`, reconnect: true });
  let readNc: NatsConnection = nc;
  try {
    if (options.readNats !== undefined && options.readNats !== options.nats) readNc = await connectNats({ servers: options.readNats, name: "memledger-ui-reader", reconnect: true });
  } catch (err) {
    await nc.close().catch(() => undefined);
    throw err;
  }
  let store: EventStore;
  try {
    store = await readerFor(readNc, options.prefix, options.readNats !== undefined);
  } catch (err) {
    if (readNc !== nc) await readNc.close().catch(() => undefined);
    await nc.close().catch(() => undefined);
    throw err;
  }
  const ledger = new UiLedger(nc, store, options.actor, options.prefix);
  const live = new LiveFeed(store, (err, where) => log(`${where}: ${(err as Error).message}`));
  const ui = uiContext(ledger, live, newFormToken(), options.app);

  let port = options.port ?? 7420;
  const app = new Hono();
  app.use("*", accessGuard({ token: options.token, port: () => port }));
  app.use("*", async (c, next) => {
    await next();
    c.header("Content-Security-Policy", CSP);
    c.header("X-Content-Type-Options", "nosniff");
    c.header("Referrer-Policy", "no-referrer");
    c.header("Cache-Control", "no-store");
  });
  app.get("/", (c) => c.redirect(`/queue?app=${encodeURIComponent(options.app)}`, 303));
  app.get("/assets/htmx.min.js", (c) => c.body(htmx, 200, { "Content-Type": "text/javascript; charset=utf-8" }));
  app.get("/assets/live.js", (c) => c.body(LIVE_JS, 200, { "Content-Type": "text/javascript; charset=utf-8" }));
  app.get("/assets/app.css", (c) => c.body(CSS, 200, { "Content-Type": "text/css; charset=utf-8" }));
  app.route("/", queueRoutes(ui));
  app.route("/", memoryRoutes(ui));
  app.route("/", timelineRoutes(ui));
  app.route("/", runsRoutes(ui));

  // Live updates: the app's and the org's stream, each event as its sequence and type only.
  app.get("/events", (c) => {
    const watched = ui.appOf(c);
    return streamSSE(c, async (stream) => {
      const queue: LiveEvent[] = [];
      let wake: (() => void) | undefined;
      const push = (e: LiveEvent) => {
        queue.push(e);
        wake?.();
      };
      const unsubscribe = await Promise.all([live.subscribe(watched, push), live.subscribe(ORG_APP, push)]);
      stream.onAbort(() => {
        for (const u of unsubscribe) u();
        wake?.();
      });
      await stream.writeSSE({ event: "ready", data: JSON.stringify({ app: watched }) });
      while (!stream.aborted) {
        while (queue.length > 0) {
          const e = queue.shift()!;
          await stream.writeSSE({ event: "ledger", id: `${e.app}:${e.seq}`, data: JSON.stringify(e) });
        }
        // A comment every 15 s keeps proxies from closing an idle stream; the timer goes with the stream.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 15_000);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
        if (queue.length === 0 && !stream.aborted) await stream.write(": keep-alive\n\n");
      }
      for (const u of unsubscribe) u();
    });
  });

  app.onError((err, c) => {
    if (err instanceof MemledgerError) {
      c.status(err.code === "invalid" ? 400 : err.code === "forbidden" ? 403 : err.code === "not_found" ? 404 : 503);
      return c.html(errorPage(`${err.code}: ${err.message}`));
    }
    log(`error: ${c.req.method} ${c.req.path}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    return c.html(errorPage("internal error; the ui's log has the details"), 500);
  });

  const server: ServerType = await new Promise((resolve, reject) => {
    const s = serve({ fetch: app.fetch, hostname: host, port }, () => resolve(s));
    s.once("error", reject);
  });
  port = (server.address() as AddressInfo).port;
  const shown = host.includes(":") ? `[${host}]` : host;
  return {
    url: `http://${shown}:${port}`,
    port,
    host,
    async close() {
      live.close();
      // Open event streams would hold close() forever.
      (server as { closeAllConnections?: () => void }).closeAllConnections?.();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await ledger.close();
      if (readNc !== nc) await readNc.close().catch(() => undefined);
      await nc.close().catch(() => undefined);
    },
  };
}
