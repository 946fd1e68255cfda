import { Hono } from "hono";
import { ORG_APP } from "../../../events/subjects.js";
import { checkPost } from "../auth.js";
import type { UiContext } from "../context.js";
import { QUEUE_MAX, QUEUE_PAGE, describeError, parseItem, type ActionResult, type QueueItem } from "../ledger.js";
import type { Context } from "hono";
import { queuePage, queueSection } from "../views/queue.js";

export type QueueRead = { items: QueueItem[]; total: number; limit: number } | { error: string };

const read = (ui: UiContext, app: string, limit: number): Promise<QueueRead> =>
  ui.ledger.queue(app, limit).then(
    (q) => ({ ...q, limit }),
    (err: unknown) => ({ error: describeError(err).message }),
  );

/** `?limit=N` (or the form's `limit`): how many proposals a section shows, oldest first. */
const limitOf = (c: Context, value?: unknown): number => {
  const n = Number(typeof value === "string" ? value : c.req.query("limit"));
  return Number.isInteger(n) && n >= 1 ? Math.min(n, QUEUE_MAX) : QUEUE_PAGE;
};

const list = (value: unknown): string[] => (Array.isArray(value) ? value : value === undefined ? [] : [value]).filter((v): v is string => typeof v === "string");

/** The queue screen: pending proposals of an app and of the org; approve or reject one or several. */
export function queueRoutes(ui: UiContext): Hono {
  const routes = new Hono();

  routes.get("/queue", async (c) => {
    const app = ui.appOf(c);
    const limit = limitOf(c);
    const [appItems, orgItems] = await Promise.all([read(ui, app, limit), read(ui, ORG_APP, limit)]);
    return ui.page(c, "queue", app, "Review queue", queuePage(app, appItems, orgItems, ui.csrf));
  });

  routes.get("/queue/section", async (c) => {
    const app = ui.appOf(c);
    return c.html(queueSection(app, await read(ui, app, limitOf(c)), ui.csrf));
  });

  routes.post("/queue/decide", async (c) => {
    const refused = await checkPost(c, ui.csrf);
    if (refused) return c.text(`memledger ui: ${refused}`, 403);
    const body = await c.req.parseBody({ all: true });
    const app = ui.appOf(c, body.app);
    const action = body.action;
    const reasonField = list(body.reason).find((r) => r.trim() !== "");
    let results: ActionResult[];
    if (action !== "approve" && action !== "reject") {
      results = [{ ok: false, label: "decide", code: "invalid", message: "choose Approve or Reject" }];
    } else {
      const raw = list(body.item);
      if (raw.length === 0) results = [{ ok: false, label: action, code: "invalid", message: "no proposal selected: tick at least one" }];
      else {
        const items = [];
        results = [];
        for (const value of raw) {
          try {
            items.push(parseItem(value));
          } catch (err) {
            results.push({ ok: false, label: action, ...describeError(err) });
          }
        }
        results.push(...(await ui.ledger.decide(app, items, action, reasonField)));
      }
    }
    const section = queueSection(app, await read(ui, app, limitOf(c, body.limit)), ui.csrf, results);
    return ui.respond(c, "queue", app, "Review queue", section);
  });

  return routes;
}
