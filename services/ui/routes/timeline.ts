import { Hono, type Context } from "hono";
import type { UiContext } from "../context.js";
import { describeError, type TimelineFilter } from "../ledger.js";
import { errorPage } from "../views/layout.js";
import { claimsSection, timelinePage, timelineSection } from "../views/timeline.js";

const filterOf = (c: Context): TimelineFilter => {
  const text = (name: string) => {
    const v = c.req.query(name)?.trim();
    return v ? v.slice(0, 200) : undefined;
  };
  return { actor: text("actor"), session: text("session"), type: text("type") };
};

/** The audit timeline of an app (filtered by actor, session and type), and the claims and locks held now. */
export function timelineRoutes(ui: UiContext): Hono {
  const routes = new Hono();
  routes.get("/timeline", async (c) => {
    const app = ui.appOf(c);
    const filter = filterOf(c);
    try {
      return ui.page(c, "timeline", app, `Timeline of ${app}`, timelinePage(app, await ui.ledger.timeline(app, filter), filter));
    } catch (err) {
      return ui.page(c, "timeline", app, `Timeline of ${app}`, errorPage(describeError(err).message));
    }
  });
  routes.get("/timeline/section", async (c) => {
    const app = ui.appOf(c);
    const filter = filterOf(c);
    return c.html(timelineSection(app, await ui.ledger.timeline(app, filter), filter));
  });
  routes.get("/claims", async (c) => {
    const app = ui.appOf(c);
    return ui.page(c, "claims", app, `Claims and locks in ${app}`, claimsSection(app, await ui.ledger.claims(app)));
  });
  routes.get("/claims/section", async (c) => {
    const app = ui.appOf(c);
    return c.html(claimsSection(app, await ui.ledger.claims(app)));
  });
  return routes;
}
