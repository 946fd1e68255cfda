import type { Context } from "hono";
import { AppName } from "../../schemas/primitives.js";
import { invalid } from "../../schemas/errors.js";
import type { UiLedger } from "./ledger.js";
import type { LiveFeed } from "./sse.js";
import { layout, type Html, type Screen } from "./views/layout.js";

/** What every screen's routes share: the ledger as the page's human, the live feed, the form token. */
export interface UiContext {
  ledger: UiLedger;
  live: LiveFeed;
  /** The per-process form token every form carries (services/ui/auth.ts checkPost). */
  csrf: string;
  defaultApp: string;
  actorText: string;
  /** The app named by `?app=` (or the form's `app`), checked; the default otherwise. */
  appOf(c: Context, value?: string | File | (string | File)[]): string;
  /** A whole page around a screen's content. */
  page(c: Context, screen: Screen, app: string, title: string, content: Html): Promise<Response>;
  /** The section alone for htmx, or the whole page around it for a browser without script. */
  respond(c: Context, screen: Screen, app: string, title: string, section: Html): Promise<Response>;
}

export function uiContext(ledger: UiLedger, live: LiveFeed, csrf: string, defaultApp: string): UiContext {
  const actorText = `${ledger.actor.kind}:${ledger.actor.id}`;
  const ctx: UiContext = {
    ledger,
    live,
    csrf,
    defaultApp,
    actorText,
    appOf(c, value) {
      const raw = typeof value === "string" ? value : (c.req.query("app") ?? defaultApp);
      const parsed = AppName.safeParse(raw);
      if (!parsed.success) throw invalid(`bad app name ${JSON.stringify(raw.slice(0, 80))}: ${parsed.error.issues[0]?.message}`);
      return parsed.data;
    },
    async page(c, screen, app, title, content) {
      const apps = await ledger.apps().catch(() => [defaultApp]);
      return c.html(layout({ app, apps, actor: actorText, csrf, screen }, title, content));
    },
    async respond(c, screen, app, title, section) {
      if (c.req.header("hx-request") === "true") return c.html(section);
      return ctx.page(c, screen, app, title, section);
    },
  };
  return ctx;
}
