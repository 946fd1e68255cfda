import { Hono } from "hono";
import { REQUESTS } from "../../../schemas/commands.js";
import { Id } from "../../../schemas/primitives.js";
import { checkPost } from "../auth.js";
import type { UiContext } from "../context.js";
import { describeError, type ActionResult, type RunView } from "../ledger.js";
import { errorPage } from "../views/layout.js";
import { runSection, runsPage, spanKey, type Excerpts, type RunActions } from "../views/runs.js";

/** Excerpts shown per proposal: the first few cited spans (a proposal may cite up to 200). */
const EXCERPTS_PER_PROPOSAL = 3;

const VERBS = { accept: "dream_accept", reject: "dream_reject", revert: "dream_revert" } as const;
/** Which consolidation verbs this build's command service answers (schemas/commands.ts REQUESTS). */
const actions = (): RunActions => ({
  accept: Object.hasOwn(REQUESTS, VERBS.accept),
  reject: Object.hasOwn(REQUESTS, VERBS.reject),
  revert: Object.hasOwn(REQUESTS, VERBS.revert),
});

const list = (value: unknown): string[] => (Array.isArray(value) ? value : value === undefined ? [] : [value]).filter((v): v is string => typeof v === "string");

async function excerptsOf(ui: UiContext, runs: RunView[]): Promise<Excerpts> {
  const excerpts: Excerpts = new Map();
  const spans = runs.flatMap((r) => r.proposals.flatMap((p) => p.evidence.transcripts.slice(0, EXCERPTS_PER_PROPOSAL)));
  for (const span of spans) {
    const key = spanKey(span);
    if (!excerpts.has(key)) excerpts.set(key, await ui.ledger.excerpt(span));
  }
  return excerpts;
}

/** Consolidation runs: proposals by phase with their evidence; accept or reject items or all; revert a run. */
export function runsRoutes(ui: UiContext): Hono {
  const routes = new Hono();

  routes.get("/runs", async (c) => {
    const app = ui.appOf(c);
    try {
      const runs = await ui.ledger.runs(app);
      return ui.page(c, "runs", app, `Consolidation runs of ${app}`, runsPage(app, runs, await excerptsOf(ui, runs), ui.csrf, actions()));
    } catch (err) {
      return ui.page(c, "runs", app, `Consolidation runs of ${app}`, errorPage(describeError(err).message));
    }
  });

  const section = async (app: string, runId: string, results?: ActionResult[]) => {
    const run = (await ui.ledger.runs(app)).find((r) => r.runId === runId);
    if (!run) return errorPage(`no run ${runId} in ${app}`);
    return runSection(app, run, await excerptsOf(ui, [run]), ui.csrf, actions(), results);
  };

  routes.get("/runs/section", async (c) => {
    const app = ui.appOf(c);
    const run = Id.safeParse(c.req.query("run"));
    if (!run.success) return c.html(errorPage("not a run id"));
    return c.html(await section(app, run.data));
  });

  routes.post("/runs/decide", async (c) => {
    const refused = await checkPost(c, ui.csrf);
    if (refused) return c.text(`memledger ui: ${refused}`, 403);
    const body = await c.req.parseBody({ all: true });
    const app = ui.appOf(c, body.app);
    const runId = Id.safeParse(body.run);
    if (!runId.success) return c.html(errorPage("not a run id"), 400);
    const action = String(body.action ?? "");
    const reason = list(body.reason).find((r) => r.trim() !== "");
    const all = action.endsWith("-all");
    const verb = action.startsWith("accept") ? VERBS.accept : action.startsWith("reject") ? VERBS.reject : null;
    // An empty list asks the service for every undecided proposal of the run.
    const chosen = all ? [] : list(body.proposal);
    let results: ActionResult[];
    if (verb === null || !Object.hasOwn(REQUESTS, verb)) results = [{ ok: false, label: action || "decide", code: "invalid", message: "this service does not answer that consolidation verb" }];
    else if (!all && chosen.length === 0) results = [{ ok: false, label: action, code: "invalid", message: "no proposal selected: tick at least one" }];
    else results = await ui.ledger.review(app, verb, { runId: runId.data, proposalIds: chosen, ...(reason !== undefined ? { reason } : {}) }, verb === VERBS.accept ? "accept" : "reject");
    return ui.respond(c, "runs", app, `Consolidation runs of ${app}`, await section(app, runId.data, results));
  });

  routes.post("/runs/revert", async (c) => {
    const refused = await checkPost(c, ui.csrf);
    if (refused) return c.text(`memledger ui: ${refused}`, 403);
    const body = await c.req.parseBody({ all: true });
    const app = ui.appOf(c, body.app);
    const runId = Id.safeParse(body.run);
    if (!runId.success) return c.html(errorPage("not a run id"), 400);
    const reason = list(body.reason).find((r) => r.trim() !== "");
    const results: ActionResult[] = Object.hasOwn(REQUESTS, VERBS.revert)
      ? await ui.ledger.review(app, VERBS.revert, { runId: runId.data, ...(reason !== undefined ? { reason } : {}) }, "revert")
      : [{ ok: false, label: "revert", code: "invalid", message: "this service does not answer the revert verb" }];
    return ui.respond(c, "runs", app, `Consolidation runs of ${app}`, await section(app, runId.data, results));
  });

  return routes;
}
