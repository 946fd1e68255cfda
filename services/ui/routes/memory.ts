import { Hono } from "hono";
import { Id } from "../../../schemas/primitives.js";
import type { UiContext } from "../context.js";
import { describeError } from "../ledger.js";
import { errorPage } from "../views/layout.js";
import { memoryPage } from "../views/memory.js";

/** One memory: versions and diffs, who did what, exposure, promotions (read as the page's human). */
export function memoryRoutes(ui: UiContext): Hono {
  const routes = new Hono();
  routes.get("/memory/:app/:id", async (c) => {
    const app = ui.appOf(c, c.req.param("app"));
    const id = Id.safeParse(c.req.param("id"));
    if (!id.success) return ui.page(c, "memory", app, "Memory", errorPage(`not a memory id: ${id.error.issues[0]?.message}`));
    try {
      const page = await ui.ledger.memory(app, id.data);
      const title = page.history.versions.at(-1)?.title ?? id.data;
      return ui.page(c, "memory", app, `Memory: ${title}`, memoryPage(page));
    } catch (err) {
      const { code, message } = describeError(err);
      c.status(code === "not_found" ? 404 : code === "forbidden" ? 403 : code === "invalid" ? 400 : code === "unavailable" ? 503 : 500);
      return ui.page(c, "memory", app, "Memory", errorPage(`${code}: ${message}`));
    }
  });
  return routes;
}
