import { html } from "hono/html";
import type { LogEntry } from "../../client.js";
import type { LiveClaim, OpenTask } from "../../../projections/claims/reader.js";
import type { TimelineFilter } from "../ledger.js";
import { actorText, appQuery, time, type Html } from "./layout.js";

const TYPE_CHOICES = ["memory", "memory.proposed", "memory.approved", "memory.rejected", "memory.superseded", "memory.rolled_back", "memory.reinstated", "memory.promotion_requested", "session", "claim", "run", "proposal", "ledger.quarantined"];

const short = (s: string, max = 120) => (s.length > max ? `${s.slice(0, max - 1)}…` : s);

/** What an event did, in a few words (text only: the view escapes it). */
export function summaryOf(e: LogEntry): string {
  const d = e.data as Record<string, unknown>;
  switch (e.type) {
    case "memory.proposed":
      return `v${String(d.version)} proposed: ${short(String(d.title))}`;
    case "memory.approved":
      return `v${String(d.version)} approved`;
    case "memory.rejected":
      return `v${String(d.version)} rejected: ${short(String(d.reason))}`;
    case "memory.superseded":
      return `superseded${d.by ? ` by ${String(d.by)}` : ""}: ${short(String(d.reason))}`;
    case "memory.rolled_back":
      return `rolled back v${String(d.fromVersion)} → v${String(d.toVersion)}`;
    case "session.started":
      return `session of ${String(d.agentId)} started: ${short(String(d.task))}`;
    case "session.ended":
      return `session ended${d.summary ? `: ${short(String(d.summary))}` : ""}`;
    case "claim.claimed":
      return `${String(d.kind)} ${String(d.name)} claimed by ${String(d.holder)} until ${String(d.expiresAt)}`;
    case "claim.released":
      return `released by ${String(d.holder)}${d.done ? " (done)" : ""}`;
    case "proposal.made":
      return `${String(d.phase)}: ${short(String(d.reason))}`;
    default: {
      const text = JSON.stringify(d ?? {});
      return short(text === "{}" ? "" : text);
    }
  }
}

export function timelinePage(app: string, entries: LogEntry[], filter: TimelineFilter): Html {
  return html`<form class="filters" method="get" action="/timeline" role="search" aria-label="Filter the timeline">
  <input type="hidden" name="app" value="${app}">
  <div><label for="f-actor">Actor</label><input id="f-actor" name="actor" value="${filter.actor ?? ""}" placeholder="human:alice or coder-1" autocomplete="off"></div>
  <div><label for="f-session">Session</label><input id="f-session" name="session" value="${filter.session ?? ""}" autocomplete="off"></div>
  <div><label for="f-type">Type</label><input id="f-type" name="type" value="${filter.type ?? ""}" list="types" placeholder="memory, claim, memory.approved" autocomplete="off">
  <datalist id="types">${TYPE_CHOICES.map((t) => html`<option value="${t}"></option>`)}</datalist></div>
  <button type="submit">Filter</button>
  <a href="/timeline${appQuery(app)}">Clear</a>
</form>
${timelineSection(app, entries, filter)}`;
}

export function timelineSection(app: string, entries: LogEntry[], filter: TimelineFilter): Html {
  const query = new URLSearchParams({ app, ...(filter.actor ? { actor: filter.actor } : {}), ...(filter.session ? { session: filter.session } : {}), ...(filter.type ? { type: filter.type } : {}) });
  return html`<section id="timeline" data-live="/timeline/section?${query.toString()}" aria-labelledby="timeline-h">
<h2 id="timeline-h">Events, newest first <span class="count">(${entries.length})</span></h2>
${entries.length === 0
  ? html`<p class="empty">No event matches.</p>`
  : html`<div class="table-wrap"><table>
<thead><tr><th scope="col">Seq</th><th scope="col">Time</th><th scope="col">Type</th><th scope="col">Actor</th><th scope="col">Subject</th><th scope="col">What</th><th scope="col">Session</th><th scope="col">Scope</th></tr></thead>
<tbody>${entries.map(
  (e) => html`<tr><td>${e.seq}</td><td>${time(e.time)}</td><td>${e.type}</td><td>${actorText(e.actor)}</td><td>${
    e.type.startsWith("memory.") ? html`<a href="/memory/${encodeURIComponent(app)}/${encodeURIComponent(e.aggregateId)}">${e.aggregateId}</a>` : e.aggregateId
  }</td><td>${summaryOf(e)}</td><td>${e.sessionId ?? ""}</td><td>${e.scope}</td></tr>`,
)}</tbody></table></div>`}
</section>`;
}

export function claimsSection(app: string, data: { claims: LiveClaim[] | { error: string }; tasks: OpenTask[] | { error: string } }): Html {
  const { claims, tasks } = data;
  return html`<section id="claims" data-live="/claims/section${appQuery(app)}" aria-labelledby="claims-h">
<h2 id="claims-h">Held now</h2>
${"error" in claims
  ? html`<p class="refusal" role="alert">Cannot read the claims: ${claims.error}</p>`
  : claims.length === 0
    ? html`<p class="empty">Nobody holds a task or a lock.</p>`
    : html`<div class="table-wrap"><table>
<thead><tr><th scope="col">Kind</th><th scope="col">Name</th><th scope="col">Holder</th><th scope="col">Since</th><th scope="col">Expires</th><th scope="col">Took over from</th></tr></thead>
<tbody>${claims.map(
  (c) => html`<tr><td>${c.kind}</td><td>${c.name}</td><td>${c.holder}</td><td>${time(c.claimedAt)}</td><td>${time(c.expiresAt)}</td><td>${c.takeoverOf ? c.takeoverOf.holder : ""}</td></tr>`,
)}</tbody></table></div>`}
<h2 id="tasks-h">Open tasks</h2>
${"error" in tasks
  ? html`<p class="refusal" role="alert">Cannot read the tasks: ${tasks.error}</p>`
  : tasks.length === 0
    ? html`<p class="empty">No open task.</p>`
    : html`<div class="table-wrap"><table aria-labelledby="tasks-h">
<thead><tr><th scope="col">Priority</th><th scope="col">Task</th><th scope="col">Title</th><th scope="col">Holder</th><th scope="col">Until</th><th scope="col">Opened</th></tr></thead>
<tbody>${tasks.map(
  (t) => html`<tr><td>${t.priority}</td><td>${t.name}</td><td>${t.title ?? ""}</td><td>${t.holder ?? "—"}</td><td>${time(t.expiresAt)}</td><td>${time(t.openedAt)}</td></tr>`,
)}</tbody></table></div>`}
</section>`;
}
