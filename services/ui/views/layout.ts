import { html } from "hono/html";
import type { ActionResult } from "../ledger.js";

/**
 * Server-rendered HTML through hono's `html` tagged template: every interpolated value is escaped
 * (agents write the bodies, titles and reasons shown here; a `<script>` in one renders as text), and only
 * other `html` fragments are inserted as markup. No string in these views is ever marked raw.
 */
export type Html = ReturnType<typeof html>;

export type Screen = "queue" | "runs" | "timeline" | "claims" | "memory";

export interface PageContext {
  app: string;
  apps: string[];
  actor: string;
  csrf: string;
  screen: Screen;
}

const SCREENS: { screen: Screen; label: string; path: string }[] = [
  { screen: "queue", label: "Queue", path: "/queue" },
  { screen: "runs", label: "Consolidation runs", path: "/runs" },
  { screen: "timeline", label: "Timeline", path: "/timeline" },
  { screen: "claims", label: "Claims and locks", path: "/claims" },
];

export const appQuery = (app: string): string => `?app=${encodeURIComponent(app)}`;

/** htmx settings: no eval, no script tags from responses, only requests to this page, no inline styles (CSP). */
const HTMX_CONFIG = JSON.stringify({ selfRequestsOnly: true, allowEval: false, allowScriptTags: false, includeIndicatorStyles: false, historyCacheSize: 0 });

export function layout(ctx: PageContext, title: string, content: Html): Html {
  const apps = ctx.apps.includes(ctx.app) ? ctx.apps : [ctx.app, ...ctx.apps];
  const current = SCREENS.find((s) => s.screen === ctx.screen)?.path ?? "/queue";
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content="${HTMX_CONFIG}">
<title>${title} · memledger review</title>
<link rel="stylesheet" href="/assets/app.css">
<script src="/assets/htmx.min.js" defer></script>
<script src="/assets/live.js" defer></script>
</head>
<body data-app="${ctx.app}">
<a class="skip" href="#main">Skip to content</a>
<header class="top">
  <p class="brand"><a href="/queue${appQuery(ctx.app)}">memledger review</a></p>
  <nav aria-label="Screens">
    <ul>
      ${SCREENS.map((s) => html`<li><a href="${s.path}${appQuery(ctx.app)}"${s.screen === ctx.screen ? html` aria-current="page"` : ""}>${s.label}</a></li>`)}
    </ul>
  </nav>
  <form class="app-picker" method="get" action="${current}">
    <label for="app-select">App</label>
    <select id="app-select" name="app">
      ${apps.map((a) => html`<option value="${a}"${a === ctx.app ? html` selected` : ""}>${a}</option>`)}
    </select>
    <button type="submit">Show</button>
  </form>
  <p class="who">Acting as <strong>${ctx.actor}</strong></p>
  <p id="live-status" class="live-status" data-state="off" role="status" aria-live="polite">Live updates: connecting</p>
</header>
<main id="main" tabindex="-1">
<h1>${title}</h1>
${content}
</main>
<aside class="live" aria-labelledby="live-heading">
  <h2 id="live-heading">Landed since this page opened</h2>
  <ol id="live-feed" class="live-feed"></ol>
</aside>
</body>
</html>`;
}

export const csrfField = (csrf: string): Html => html`<input type="hidden" name="_csrf" value="${csrf}">`;

/** What each action did: appended (with its sequence) or refused (with the service's reason, the policy's words). */
export function resultsView(results: ActionResult[] | undefined): Html {
  if (!results || results.length === 0) return html``;
  const refused = results.filter((r) => !r.ok).length;
  return html`<div class="results${refused > 0 ? " has-refusals" : ""}" tabindex="-1" data-focus role="${refused > 0 ? "alert" : "status"}">
  <p><strong>${results.length - refused} done, ${refused} refused.</strong></p>
  <ul>
    ${results.map((r) =>
      r.ok
        ? html`<li class="ok">${r.label}: ${r.detail}</li>`
        : html`<li class="refused">${r.label}: refused (${r.code}): <span class="refusal">${r.message}</span></li>`,
    )}
  </ul>
</div>`;
}

/** A unified diff with added and removed lines marked (and their +/- kept for those who do not see colour). */
export function diffView(patch: string, label: string): Html {
  const lines = patch.split("\n").filter((l) => !l.startsWith("Index:") && !/^=+$/.test(l));
  return html`<pre class="diff" aria-label="${label}">${lines.map((l) => {
    const cls = l.startsWith("+++") || l.startsWith("---") ? "file" : l.startsWith("+") ? "add" : l.startsWith("-") ? "del" : l.startsWith("@@") ? "hunk" : "ctx";
    return html`<span class="${cls}">${l}</span>\n`;
  })}</pre>`;
}

export const actorText = (a: { kind: string; id: string }): string => `${a.kind}:${a.id}`;

export const time = (iso: string | null | undefined): Html => (iso ? html`<time datetime="${iso}">${iso.replace("T", " ").replace(/\.\d+Z$/, "Z")}</time>` : html`—`);

export function errorPage(message: string): Html {
  return html`<div class="results has-refusals" role="alert"><p class="refusal">${message}</p></div>`;
}
