/**
 * The page's own stylesheet and its one small script, kept here so `tsc` ships them in dist/ (htmx itself
 * is served from node_modules). Plain CSS: readable on a laptop screen, a visible focus ring, colours that
 * keep their meaning with the +/- and words beside them.
 */

export const CSS = `
:root { --fg: #1b1f24; --muted: #57606a; --bg: #ffffff; --panel: #f6f8fa; --line: #d0d7de; --accent: #0a58ca;
  --ok: #116329; --bad: #a40e26; --add: #dafbe1; --del: #ffebe9; --focus: #ffbf47; color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg);
  display: grid; grid-template-columns: minmax(0, 1fr) 18rem; grid-template-areas: "top top" "main live"; }
.top { grid-area: top; display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: center; padding: .5rem 1.25rem;
  border-bottom: 1px solid var(--line); background: var(--panel); }
.top p { margin: 0; }
.brand a { font-weight: 700; color: var(--fg); text-decoration: none; }
nav ul { display: flex; gap: 1rem; list-style: none; margin: 0; padding: 0; }
nav a[aria-current="page"] { font-weight: 700; text-decoration: underline; text-underline-offset: .3em; }
main { grid-area: main; padding: 1rem 1.25rem 3rem; min-width: 0; }
.live { grid-area: live; padding: 1rem; border-left: 1px solid var(--line); font-size: 13px; }
.live h2 { font-size: 14px; }
.live-feed { padding-left: 1.2rem; max-height: 70vh; overflow: auto; }
.live-status[data-state="live"] { color: var(--ok); }
.live-status[data-state="off"] { color: var(--muted); }
h1 { font-size: 1.5rem; margin: .25rem 0 .75rem; }
h2 { font-size: 1.2rem; margin: 1.5rem 0 .5rem; }
h3 { font-size: 1.05rem; margin: .25rem 0; }
a { color: var(--accent); }
a:focus-visible, button:focus-visible, input:focus-visible, select:focus-visible, summary:focus-visible, main:focus-visible,
[tabindex]:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; box-shadow: 0 0 0 5px #1b1f24; }
.skip { position: absolute; left: -999px; top: .5rem; background: var(--bg); padding: .5rem; z-index: 10; }
.skip:focus { left: .5rem; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
button { font: inherit; padding: .3rem .8rem; border: 1px solid var(--line); border-radius: 6px; background: var(--panel); cursor: pointer; }
button[value="approve"], button[value="accept"], button[value="accept-all"] { background: #1f883d; color: #fff; border-color: #1a7f37; }
button[value="reject"], button[value="reject-all"], button[value="revert"] { background: #fff; color: var(--bad); border-color: var(--bad); }
input[type="text"], input:not([type]), select { font: inherit; padding: .25rem .4rem; border: 1px solid var(--muted); border-radius: 4px; }
label { margin: 0 .25rem 0 .5rem; }
fieldset { border: 1px solid var(--line); border-radius: 6px; display: flex; flex-wrap: wrap; gap: .4rem; align-items: center; }
.cards { list-style: none; padding: 0; margin: 0; display: grid; gap: .9rem; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: .75rem 1rem; background: var(--bg); position: relative; }
.card .select { float: right; }
.badge { display: inline-block; font-size: 12px; padding: 0 .45rem; border-radius: 999px; border: 1px solid var(--line); background: var(--panel); }
.badge.fragile { border-color: var(--bad); color: var(--bad); }
.meta { display: flex; flex-wrap: wrap; gap: .25rem 1.5rem; margin: .5rem 0; }
.meta div { display: flex; gap: .4rem; }
.meta dt { color: var(--muted); }
.meta dd { margin: 0; overflow-wrap: anywhere; }
.flags { border-left: 4px solid #bf8700; padding: .25rem .75rem; background: #fff8c5; }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: .5rem .75rem; overflow: auto;
  font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, monospace; max-height: 24rem; }
pre.body { white-space: pre-wrap; overflow-wrap: anywhere; }
.diff .add { background: var(--add); display: inline-block; min-width: 100%; }
.diff .del { background: var(--del); display: inline-block; min-width: 100%; }
.diff .hunk, .diff .file { color: var(--muted); }
.transcript .ln { color: var(--muted); user-select: none; }
.decide, .revert { display: flex; flex-wrap: wrap; gap: .4rem; align-items: center; margin-top: .5rem; }
.results { border: 1px solid var(--ok); border-left-width: 5px; border-radius: 6px; padding: .25rem .9rem; margin: .5rem 0; }
.results.has-refusals { border-color: var(--bad); }
.results .refused, .refusal { color: var(--bad); }
.results .ok { color: var(--ok); }
.empty { color: var(--muted); }
.lead { color: var(--muted); margin-top: 0; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; overflow-wrap: anywhere; }
th { background: var(--panel); white-space: nowrap; }
.filters { display: flex; flex-wrap: wrap; gap: .75rem; align-items: end; }
.filters div { display: flex; flex-direction: column; }
.filters label { margin: 0; }
.phase { border-top: 1px dashed var(--line); margin-top: 1rem; }
.excerpt { margin: .5rem 0; }
.excerpt figcaption { font-size: 13px; color: var(--muted); }
.status-applied, .status-accepted, .status-completed, .status-approved, .status-active { border-color: var(--ok); color: var(--ok); }
.status-rejected, .status-reverted { border-color: var(--bad); color: var(--bad); }
@media (max-width: 1100px) { body { grid-template-columns: 1fr; grid-template-areas: "top" "main" "live"; } .live { border-left: 0; border-top: 1px solid var(--line); } }
`;

/**
 * Live updates: an EventSource on /events; each event that lands re-reads the screen's live sections
 * (through the server, so the read policy applies), except one whose controls have the focus: it is
 * refreshed once the focus leaves it. Text only: nothing from the server becomes markup.
 */
export const LIVE_JS = `
(function () {
  "use strict";
  var app = document.body.getAttribute("data-app");
  var status = document.getElementById("live-status");
  var feed = document.getElementById("live-feed");
  function setStatus(state, text) { if (status) { status.setAttribute("data-state", state); status.textContent = text; } }
  // Someone working in a section (focus on one of its controls) keeps it until they leave: a refresh would
  // take their focus, and what they typed, away.
  function busy(section) {
    var el = document.activeElement;
    return !!(el && section.contains(el) && /^(INPUT|BUTTON|SELECT|TEXTAREA|A|SUMMARY)$/.test(el.tagName));
  }
  var timer = null;
  function refresh() {
    timer = null;
    var sections = document.querySelectorAll("[data-live]");
    for (var i = 0; i < sections.length; i++) {
      var section = sections[i];
      if (busy(section)) { section.setAttribute("data-stale", "true"); continue; }
      // The reviewer's own action on it is under way: its answer is the fresh section (a refresh now would
      // detach the element that answer is meant to replace).
      if (section.hasAttribute("data-acting")) continue;
      if (!window.htmx) continue;
      // What the reviewer's last action did stays on screen across the refresh.
      keepResults(section.id, section.querySelector(".results"),
        window.htmx.ajax("GET", section.getAttribute("data-live"), { target: section, swap: "outerHTML" }));
    }
  }
  function keepResults(id, kept, pending) {
    if (!kept || !id || !pending || !pending.then) return;
    pending.then(function () {
      var fresh = document.getElementById(id);
      var heading = fresh && fresh.querySelector("h2");
      if (heading && !fresh.querySelector(".results")) heading.insertAdjacentElement("afterend", kept);
    });
  }
  function sectionOf(e) {
    var elt = e.detail && e.detail.elt;
    if (!elt || !elt.closest || elt.hasAttribute("data-live")) return null;
    return elt.closest("[data-live]");
  }
  document.body.addEventListener("htmx:beforeRequest", function (e) {
    var section = sectionOf(e);
    if (section) section.setAttribute("data-acting", "true");
  });
  document.body.addEventListener("htmx:afterRequest", function (e) {
    var section = sectionOf(e);
    if (section) section.removeAttribute("data-acting");
  });
  document.addEventListener("focusout", function () {
    setTimeout(function () { if (document.querySelector("[data-stale]") && !timer) timer = setTimeout(refresh, 50); }, 0);
  });
  document.body.addEventListener("htmx:afterSwap", function (e) {
    var target = document.querySelector("[data-focus]");
    if (target && e.detail && e.detail.elt && e.detail.elt.isConnected !== false) { target.removeAttribute("data-focus"); target.focus(); }
  });
  if (!app || !window.EventSource) { setStatus("off", "Live updates: off"); return; }
  var source = new EventSource("/events?app=" + encodeURIComponent(app));
  source.addEventListener("ready", function () { setStatus("live", "Live updates: on"); });
  source.addEventListener("ledger", function (m) {
    var e;
    try { e = JSON.parse(m.data); } catch (_) { return; }
    if (feed) {
      var li = document.createElement("li");
      li.textContent = e.app + " #" + e.seq + " " + e.type;
      feed.insertBefore(li, feed.firstChild);
      while (feed.childNodes.length > 50) feed.removeChild(feed.lastChild);
    }
    if (!timer) timer = setTimeout(refresh, 250);
  });
  source.onerror = function () { setStatus("off", "Live updates: reconnecting"); };
})();
`;
