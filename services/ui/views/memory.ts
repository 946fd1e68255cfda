import { html } from "hono/html";
import type { MemoryPage } from "../ledger.js";
import { actorText, diffView, time, type Html } from "./layout.js";

/** One memory: its versions with diffs, every event with who did it and from where, who was shown it, its promotions. */
export function memoryPage(page: MemoryPage): Html {
  const { history } = page;
  const versions = [...history.versions].reverse();
  const diffs = new Map(page.diffs.map((d) => [d.version, d.patch]));
  return html`<dl class="meta summary">
  <div><dt>Memory</dt><dd><code>${page.memoryId}</code></dd></div>
  <div><dt>App</dt><dd>${page.app}</dd></div>
  <div><dt>Status</dt><dd>${history.status}</dd></div>
  <div><dt>Last sequence</dt><dd>${history.seq}</dd></div>
</dl>

<section aria-labelledby="versions-h">
<h2 id="versions-h">Versions</h2>
<ol class="cards versions" reversed>
${versions.map(
  (v) => html`<li><article class="card" aria-labelledby="v${v.version}-h">
  <h3 id="v${v.version}-h">v${v.version}: ${v.title} <span class="badge status-${v.status}">${v.status}</span></h3>
  <dl class="meta">
    <div><dt>Proposed by</dt><dd>${actorText(v.proposedBy)} at ${time(v.proposedAt)}${v.proposedInSession ? ` in session ${v.proposedInSession}` : ""}</dd></div>
    <div><dt>Decided by</dt><dd>${v.decidedBy ? html`${actorText(v.decidedBy)} at ${time(v.decidedAt)}` : "—"}</dd></div>
    ${v.rejectReason ? html`<div><dt>Reason</dt><dd>${v.rejectReason}</dd></div>` : ""}
  </dl>
  <details${v.version === history.versions.length ? html` open` : ""}><summary>Diff against ${v.version > 1 ? `v${v.version - 1}` : "nothing"}</summary>${diffView(diffs.get(v.version) ?? "", `diff of v${v.version}`)}</details>
  <details><summary>Body as written</summary><pre class="body">${v.body}</pre></details>
</article></li>`,
)}
</ol>
</section>

<section aria-labelledby="history-h">
<h2 id="history-h">Who did what</h2>
<div class="table-wrap"><table>
<caption class="visually-hidden">Every event of this memory, oldest first</caption>
<thead><tr><th scope="col">Seq</th><th scope="col">Time</th><th scope="col">Event</th><th scope="col">Actor</th><th scope="col">What</th><th scope="col">Reason</th><th scope="col">Session</th><th scope="col">Branch</th><th scope="col">Caused by</th></tr></thead>
<tbody>
${history.entries.map(
  (e) => html`<tr><td>${e.seq}</td><td>${time(e.time)}</td><td>${e.type}</td><td>${actorText(e.actor)}</td><td>${e.summary}</td><td>${e.reason ?? ""}</td><td>${e.sessionId ?? ""}</td><td>${e.git?.branch ?? ""}${e.git?.worktree ? ` (${e.git.worktree})` : ""}</td><td>${e.causationId ?? ""}</td></tr>`,
)}
</tbody></table></div>
</section>

<section aria-labelledby="exposure-h">
<h2 id="exposure-h">Exposure: sessions shown this memory</h2>
${"error" in page.exposure
  ? html`<p class="refusal" role="alert">Cannot read the receipts: ${page.exposure.error}</p>`
  : page.exposure.sessions.length === 0
    ? html`<p class="empty">No session was shown this memory by hydrate or search.</p>`
    : html`<div class="table-wrap"><table>
<thead><tr><th scope="col">Session</th><th scope="col">Agent</th><th scope="col">Asked by</th><th scope="col">Versions seen</th><th scope="col">First</th><th scope="col">Last</th><th scope="col">Times</th></tr></thead>
<tbody>${page.exposure.sessions.map(
  (s) => html`<tr><td>${s.sessionId}</td><td>${s.sessionAgent ?? "?"}</td><td>${s.actors.join(", ")}</td><td>${s.versions.map((v) => `v${v}`).join(", ")}</td><td>${time(s.first)}</td><td>${time(s.last)}</td><td>${s.receipts}</td></tr>`,
)}</tbody></table></div>`}
</section>

<section aria-labelledby="promotions-h">
<h2 id="promotions-h">Promotions to the org</h2>
${page.promotions.length === 0
  ? html`<p class="empty">Never promoted.</p>`
  : html`<ul>${page.promotions.map(
      (p) => html`<li>v${p.version} requested by ${actorText(p.requestedBy)} at ${time(p.requestedAt)}${p.reason ? ` (${p.reason})` : ""}: <strong>${p.status}</strong>${
        p.decision
          ? html`${p.decision.orgMemoryId ? html` as org memory <a href="/memory/org/${encodeURIComponent(p.decision.orgMemoryId)}">${p.decision.orgMemoryId}</a> v${p.decision.orgVersion ?? "?"}` : ""} (${p.decision.outcome}${p.decision.approved ? ", approved at once" : ""}) by ${actorText(p.decision.decidedBy)}${
              p.decision.reasons.length > 0 ? html`<ul>${p.decision.reasons.map((r) => html`<li><code>${r.code}</code>: ${r.message}</li>`)}</ul>` : ""
            }`
          : ""
      }</li>`,
    )}</ul>`}
</section>`;
}
