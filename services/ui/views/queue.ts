import { html } from "hono/html";
import { ORG_APP } from "../../../events/subjects.js";
import { QUEUE_MAX, QUEUE_PAGE } from "../ledger.js";
import type { ActionResult, QueueItem } from "../ledger.js";
import type { QueueRead } from "../routes/queue.js";
import { actorText, appQuery, csrfField, diffView, resultsView, time, type Html } from "./layout.js";

/**
 * The queue: every pending proposal of one app (or of the org), with its diff against the active version,
 * who proposed it from which session, branch and worktree, its scope, and the curator's flags. Approve or
 * reject one at a time (each card's own form) or several (tick them, then the section's bulk form).
 */

const sectionId = (app: string) => (app === ORG_APP ? "queue-org" : "queue-app");

export function queueSection(app: string, read: QueueRead, csrf: string, results?: ActionResult[]): Html {
  const id = sectionId(app);
  const heading = app === ORG_APP ? "Pending in the org" : `Pending in ${app}`;
  const bulk = `${id}-bulk`;
  const limitQuery = "limit" in read && read.limit !== QUEUE_PAGE ? `&limit=${read.limit}` : "";
  const live = `/queue/section${appQuery(app)}${limitQuery}`;
  if ("error" in read) {
    return html`<section id="${id}" class="queue" data-live="${live}" aria-labelledby="${id}-h"><h2 id="${id}-h">${heading}</h2>${resultsView(results)}<p class="refusal" role="alert">Cannot read the queue: ${read.error}</p></section>`;
  }
  const { items, total, limit } = read;
  const more = total > items.length
    ? html`<p class="more">Showing the oldest ${items.length} of ${total}. <a href="/queue/section${appQuery(app)}&amp;limit=${Math.min(limit * 4, QUEUE_MAX)}" hx-get="/queue/section${appQuery(app)}&amp;limit=${Math.min(limit * 4, QUEUE_MAX)}" hx-target="#${id}" hx-swap="outerHTML">Show more</a></p>`
    : "";
  return html`<section id="${id}" class="queue" data-live="${live}" aria-labelledby="${id}-h">
<h2 id="${id}-h">${heading} <span class="count">(${total})</span></h2>
${resultsView(results)}
${more}
${items.length === 0
  ? html`<p class="empty">Nothing waits for review.</p>`
  : html`<form id="${bulk}" class="bulk" method="post" action="/queue/decide" hx-post="/queue/decide" hx-target="#${id}" hx-swap="outerHTML">
  ${csrfField(csrf)}
  <input type="hidden" name="app" value="${app}">
  <input type="hidden" name="limit" value="${limit}">
  <fieldset>
    <legend>Selected proposals (tick them below)</legend>
    <button type="submit" name="action" value="approve">Approve selected</button>
    <label for="${bulk}-reason">Reason to reject</label>
    <input id="${bulk}-reason" name="reason" type="text" maxlength="500" autocomplete="off">
    <button type="submit" name="action" value="reject">Reject selected</button>
  </fieldset>
</form>
<ol class="cards">
  ${items.map((item) => card(item, csrf, id, bulk, limit))}
</ol>`}
</section>`;
}

function card(item: QueueItem, csrf: string, sectionIdValue: string, bulk: string, limit: number): Html {
  const key = `${item.memoryId}@${item.pending.version}`;
  const dom = `${sectionIdValue}-${item.memoryId}-${item.pending.version}`;
  const p = item.pending;
  return html`<li>
<article class="card" aria-labelledby="${dom}-title" data-item="${key}">
  <div class="select">
    <input type="checkbox" id="${dom}-sel" name="item" value="${key}" form="${bulk}">
    <label for="${dom}-sel">Select <span class="visually-hidden">${p.title}</span></label>
  </div>
  <h3 id="${dom}-title"><a href="/memory/${encodeURIComponent(item.app)}/${encodeURIComponent(item.memoryId)}">${p.title}</a></h3>
  <p class="tags"><span class="badge">v${p.version}</span> <span class="badge scope">${item.scope}</span> <span class="badge kind${p.kind === "fragile" ? " fragile" : ""}">${p.kind}</span> <span class="badge">importance ${p.importance}</span>${p.tags.map((t) => html` <span class="badge tag">#${t}</span>`)}</p>
  <dl class="meta">
    <div><dt>Proposed by</dt><dd>${actorText(p.proposedBy)}</dd></div>
    <div><dt>When</dt><dd>${time(p.proposedAt)}</dd></div>
    <div><dt>Session</dt><dd>${p.proposedInSession ?? "—"}</dd></div>
    <div><dt>Branch</dt><dd>${item.branch ?? "—"}</dd></div>
    ${item.worktree ? html`<div><dt>Worktree</dt><dd>${item.worktree}</dd></div>` : ""}
    ${item.transcriptRef ? html`<div><dt>Transcript</dt><dd>${item.transcriptRef}</dd></div>` : ""}
    ${p.paths.length > 0 ? html`<div><dt>Paths</dt><dd>${p.paths.join(", ")}</dd></div>` : ""}
    <div><dt>Active version</dt><dd>${item.active ? `v${item.active.version}` : "none (a new memory)"}</dd></div>
    ${item.provenance ? html`<div><dt>Promoted from</dt><dd>${item.provenance.source.app} ${item.provenance.source.memoryId} v${item.provenance.source.version} by ${actorText(item.provenance.source.actor)}</dd></div>` : ""}
  </dl>
  ${item.flags.length > 0
    ? html`<div class="flags"><p><strong>Curator flags</strong></p><ul>${item.flags.map((f) => html`<li><code>${f.code}</code>: ${f.message}</li>`)}</ul></div>`
    : ""}
  <details open>
    <summary>Diff against ${item.active ? `active v${item.active.version}` : "nothing (new memory)"}</summary>
    ${diffView(item.diff, `diff of ${p.title}`)}
  </details>
  <details>
    <summary>Body as written</summary>
    <pre class="body">${p.body}</pre>
  </details>
  <form class="decide" method="post" action="/queue/decide" hx-post="/queue/decide" hx-target="#${sectionIdValue}" hx-swap="outerHTML">
    ${csrfField(csrf)}
    <input type="hidden" name="app" value="${item.app}">
    <input type="hidden" name="item" value="${key}">
    <input type="hidden" name="limit" value="${limit}">
    <button type="submit" name="action" value="approve">Approve</button>
    <label for="${dom}-reason">Reason to reject</label>
    <input id="${dom}-reason" name="reason" type="text" maxlength="500" autocomplete="off">
    <button type="submit" name="action" value="reject">Reject</button>
  </form>
</article>
</li>`;
}

export function queuePage(app: string, appItems: QueueRead, orgItems: QueueRead, csrf: string): Html {
  return html`<p class="lead">Proposals waiting for a decision. Each action is sent as you, and the policy decides whether it stands.</p>
${queueSection(app, appItems, csrf)}
${queueSection(ORG_APP, orgItems, csrf)}`;
}
