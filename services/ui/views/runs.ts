import { html } from "hono/html";
import type { ProposedChange, TranscriptSpan } from "../../../schemas/events.js";
import type { ActionResult, ProposalView, RunView } from "../ledger.js";
import { actorText, appQuery, csrfField, resultsView, time, type Html } from "./layout.js";

/**
 * Consolidation runs: each run's proposals grouped by phase, with the evidence they rest on (sessions,
 * transcript excerpts at the cited lines, counts, prevalence, scores), and the decisions on them. Accept
 * or reject one, several or all; revert a whole run. The forms exist only when the service answers the
 * consolidation verbs (`actions`); otherwise the page shows the runs read from the log.
 */

export type Excerpts = Map<string, { lines: { n: number; text: string }[] } | { error: string }>;
export const spanKey = (s: TranscriptSpan): string => `${s.digest}:${s.lines[0]}-${s.lines[1]}`;

export interface RunActions {
  accept: boolean;
  reject: boolean;
  revert: boolean;
}

const ref = (app: string, m: { memoryId: string; version: number }): Html =>
  html`<a href="/memory/${encodeURIComponent(app)}/${encodeURIComponent(m.memoryId)}">${m.memoryId}</a> v${m.version}`;

function changeView(app: string, change: ProposedChange): Html {
  switch (change.action) {
    case "supersede":
      return html`Supersede ${ref(app, change.memory)}`;
    case "merge":
      return html`Merge ${change.sources.map((s, i) => html`${i > 0 ? ", " : ""}${ref(app, s)}`)} into a new memory in ${change.scope}: “${change.content.title}”`;
    case "revise":
      return html`Revise ${ref(app, change.memory)} to “${change.content.title}”`;
    case "create":
      return html`Create a memory in ${change.scope}: “${change.content.title}”`;
    case "promote":
      return html`Promote candidate ${ref(app, change.candidate)} to ${change.scope} as “${change.content.title}”`;
    case "flag":
      return html`Flag for a human: ${change.memories.map((m, i) => html`${i > 0 ? ", " : ""}${ref(app, m)}`)}`;
  }
}

const contentOf = (change: ProposedChange) => ("content" in change ? change.content : null);

function proposalCard(app: string, runId: string, p: ProposalView, excerpts: Excerpts, csrf: string, actions: RunActions, sectionId: string): Html {
  const dom = `p-${p.proposalId}`;
  const content = contentOf(p.change);
  const ev = p.evidence;
  const open = p.status === "pending";
  return html`<li><article class="card proposal status-${p.status}" aria-labelledby="${dom}-h" data-proposal="${p.proposalId}">
  ${open && (actions.accept || actions.reject)
    ? html`<div class="select"><input type="checkbox" id="${dom}-sel" name="proposal" value="${p.proposalId}" form="${sectionId}-bulk"><label for="${dom}-sel">Select <span class="visually-hidden">${p.proposalId}</span></label></div>`
    : ""}
  <h4 id="${dom}-h">${changeView(app, p.change)} <span class="badge status-${p.status}">${p.status}</span></h4>
  <p>${p.reason}</p>
  ${p.decidedBy ? html`<p class="decision">${p.status} by ${actorText(p.decidedBy)}${p.decisionReason ? html`: ${p.decisionReason}` : ""}</p>` : ""}
  ${content ? html`<details><summary>Proposed content</summary><pre class="body">${content.title}\n\n${content.body}</pre></details>` : ""}
  <div class="evidence">
    <p><strong>Evidence:</strong> ${ev.summary}</p>
    <dl class="meta">
      <div><dt>Sessions</dt><dd>${ev.sessions.length === 0 ? "—" : ev.sessions.join(", ")}</dd></div>
      <div><dt>Prevalence</dt><dd>${ev.prevalence === null ? "—" : `${Math.round(ev.prevalence * 100)}% of analysed sessions`}</dd></div>
      ${Object.entries(ev.counts).map(([k, v]) => html`<div><dt>${k}</dt><dd>${v}</dd></div>`)}
      ${Object.entries(ev.scores).map(([k, v]) => html`<div><dt>${k}</dt><dd>${Number.isInteger(v) ? v : v.toFixed(3)}</dd></div>`)}
      ${ev.memories.length > 0 ? html`<div><dt>Memories cited</dt><dd>${ev.memories.map((m, i) => html`${i > 0 ? ", " : ""}${ref(app, m)}`)}</dd></div>` : ""}
    </dl>
    ${ev.transcripts.map((span) => {
      const excerpt = excerpts.get(spanKey(span));
      return html`<figure class="excerpt">
  <figcaption>Session ${span.sessionId}, lines ${span.lines[0]}–${span.lines[1]}</figcaption>
  ${!excerpt
    ? html`<p class="empty">Not loaded (only the first excerpts of each proposal are shown).</p>`
    : "error" in excerpt
      ? html`<p class="refusal">Cannot show the transcript: ${excerpt.error}</p>`
      : html`<pre class="transcript">${excerpt.lines.map((l) => html`<span class="ln">${String(l.n).padStart(5)}</span> ${l.text}\n`)}</pre>`}
</figure>`;
    })}
  </div>
  ${open && (actions.accept || actions.reject)
    ? html`<form class="decide" method="post" action="/runs/decide" hx-post="/runs/decide" hx-target="#${sectionId}" hx-swap="outerHTML">
    ${csrfField(csrf)}
    <input type="hidden" name="app" value="${app}">
    <input type="hidden" name="run" value="${runId}">
    <input type="hidden" name="proposal" value="${p.proposalId}">
    ${actions.accept ? html`<button type="submit" name="action" value="accept">Accept</button>` : ""}
    <label for="${dom}-reason">Reason</label>
    <input id="${dom}-reason" name="reason" type="text" maxlength="500" autocomplete="off">
    ${actions.reject ? html`<button type="submit" name="action" value="reject">Reject</button>` : ""}
  </form>`
    : ""}
</article></li>`;
}

export function runSection(app: string, run: RunView, excerpts: Excerpts, csrf: string, actions: RunActions, results?: ActionResult[]): Html {
  const id = `run-${run.runId}`;
  const phases = [...new Set([...run.phases, ...run.proposals.map((p) => p.phase)])];
  const open = run.proposals.filter((p) => p.status === "pending").length;
  const applied = run.proposals.some((p) => p.status === "applied" || p.status === "accepted");
  return html`<section id="${id}" class="run" data-live="/runs/section?app=${encodeURIComponent(app)}&amp;run=${encodeURIComponent(run.runId)}" aria-labelledby="${id}-h">
<h2 id="${id}-h">Run <code>${run.runId}</code> <span class="badge status-${run.status}">${run.status}</span></h2>
<dl class="meta">
  <div><dt>Started</dt><dd>${time(run.startedAt)}</dd></div>
  <div><dt>Trigger</dt><dd>${run.trigger}</dd></div>
  <div><dt>Read the log as of</dt><dd>${run.asOfSeq ?? "—"}</dd></div>
  <div><dt>Proposals</dt><dd>${run.proposals.length} (${open} waiting)</dd></div>
  ${run.revertReason ? html`<div><dt>Reverted</dt><dd>${run.revertReason}</dd></div>` : ""}
</dl>
${resultsView(results)}
${(actions.accept || actions.reject) && open > 0
  ? html`<form id="${id}-bulk" class="bulk" method="post" action="/runs/decide" hx-post="/runs/decide" hx-target="#${id}" hx-swap="outerHTML">
  ${csrfField(csrf)}
  <input type="hidden" name="app" value="${app}">
  <input type="hidden" name="run" value="${run.runId}">
  <fieldset><legend>Selected proposals of this run, or all waiting</legend>
    ${actions.accept ? html`<button type="submit" name="action" value="accept">Accept selected</button> <button type="submit" name="action" value="accept-all">Accept all</button>` : ""}
    <label for="${id}-bulk-reason">Reason</label>
    <input id="${id}-bulk-reason" name="reason" type="text" maxlength="500" autocomplete="off">
    ${actions.reject ? html`<button type="submit" name="action" value="reject">Reject selected</button> <button type="submit" name="action" value="reject-all">Reject all</button>` : ""}
  </fieldset>
</form>`
  : ""}
${actions.revert && run.status !== "reverted" && applied
  ? html`<form class="revert" method="post" action="/runs/revert" hx-post="/runs/revert" hx-target="#${id}" hx-swap="outerHTML">
  ${csrfField(csrf)}
  <input type="hidden" name="app" value="${app}">
  <input type="hidden" name="run" value="${run.runId}">
  <label for="${id}-revert-reason">Reason to revert the run</label>
  <input id="${id}-revert-reason" name="reason" type="text" maxlength="500" autocomplete="off">
  <button type="submit" name="action" value="revert">Revert run</button>
</form>`
  : ""}
${phases.map((phase) => {
  const inPhase = run.proposals.filter((p) => p.phase === phase);
  const step = run.steps.find((s) => s.phase === phase);
  return html`<section class="phase" aria-labelledby="${id}-${phase}-h">
  <h3 id="${id}-${phase}-h">${phase} <span class="count">(${inPhase.length})</span></h3>
  ${step?.report ? html`<p class="report">${step.report}</p>` : ""}
  ${inPhase.length === 0 ? html`<p class="empty">No proposal.</p>` : html`<ol class="cards">${inPhase.map((p) => proposalCard(app, run.runId, p, excerpts, csrf, actions, id))}</ol>`}
</section>`;
})}
</section>`;
}

export function runsPage(app: string, runs: RunView[], excerpts: Excerpts, csrf: string, actions: RunActions): Html {
  return html`<p class="lead">What consolidation proposed, phase by phase, and on what evidence.${
    actions.accept ? "" : " This service does not answer the consolidation verbs yet: the runs are shown from the log, and decisions are taken with the CLI."
  }</p>
<p><a href="/runs${appQuery(app)}">Reload</a></p>
${runs.length === 0 ? html`<p class="empty">No consolidation run in ${app} yet.</p>` : runs.map((run) => runSection(app, run, excerpts, csrf, actions))}`;
}
