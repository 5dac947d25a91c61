"""The dashboard's page: one self-contained HTML document (no CDN, no font or script
from elsewhere: it works offline), holding no data. It takes the token from the URL's
fragment (``/#token=...``, never sent to the server, removed from the address bar) or
asks for it, keeps it for the browser tab (``sessionStorage``), then polls
``/api/v1/status`` of every account every two seconds and reloads the rest of the
account shown whenever its newest bar, its events or its controls change.

The equity chart is inline SVG drawn here (a few dozen lines instead of a charting
library the page would have to carry). Kill and pause ask for confirmation, then POST.
Marks for tests and scripts: ``body[data-bars]`` (the shown account's journaled bars),
``body[data-state]``, ``#message``.
"""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>AsterAI watch</title><link rel="icon" href="data:,">
<style>
:root{--bg:#0f1419;--card:#182028;--fg:#dde3ea;--mute:#8b98a5;--good:#3fb950;--bad:#f85149;
--warn:#d29922;--line:#2b3640}
*{box-sizing:border-box}body{margin:0;font:14px/1.4 system-ui,sans-serif;background:var(--bg);
color:var(--fg)}header{display:flex;gap:12px;align-items:center;padding:10px 16px;
border-bottom:1px solid var(--line)}h1{font-size:16px;margin:0}h2{font-size:14px;margin:0 0 8px;
color:var(--mute);font-weight:600}main{padding:12px 16px;display:grid;gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:10px 12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px}
.kv b{display:block;font-size:18px}.kv span{color:var(--mute);font-size:12px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
td,th{padding:3px 6px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
td:first-child,th:first-child{text-align:left}td.wrap{white-space:normal;text-align:left}th:last-child{text-align:left}th{color:var(--mute);font-weight:600}
.pos{color:var(--good)}.neg{color:var(--bad)}.tag{display:inline-block;padding:1px 7px;
border-radius:9px;font-size:12px;margin-right:4px;border:1px solid var(--line)}
.on{background:var(--bad);color:#fff;border-color:var(--bad)}.ok{background:#1f3d2b}
button{background:#2b3640;color:var(--fg);border:1px solid var(--line);border-radius:5px;
padding:5px 12px;cursor:pointer}button.danger{background:#6e1b1b;border-color:var(--bad)}
#accounts button.sel{outline:2px solid #58a6ff}#message{color:var(--warn)}
svg{width:100%;height:260px;display:block}.legend span{margin-right:12px;font-size:12px}
.scroll{max-height:320px;overflow:auto}input{background:#0b0f13;color:var(--fg);
border:1px solid var(--line);padding:5px;border-radius:5px;width:340px}
</style></head>
<body data-bars="" data-state="">
<header><h1>AsterAI watch</h1><div id="accounts"></div><span id="message"></span></header>
<main>
<form class="card" id="login" hidden><h2>Token</h2>
 <input type="text" autocomplete="username" value="asterai" hidden>
 <input id="token" type="password" autocomplete="current-password"
  placeholder="the dashboard's bearer token"> <button id="use">Use</button></form>
<div class="card"><h2 id="title">Account</h2><div class="grid" id="summary"></div></div>
<div class="card"><h2>Controls</h2><div id="controls"></div>
 <p><button id="pause">Pause entries for today</button>
 <button id="kill" class="danger">Kill switch</button></p></div>
<div class="card"><h2>Equity</h2><div class="legend" id="legend"></div>
 <svg id="chart" viewBox="0 0 1000 260" preserveAspectRatio="none"></svg></div>
<div class="card"><h2>Open positions</h2><table id="positions"><thead><tr><th>symbol</th>
 <th>side</th><th>qty</th><th>entry</th><th>stop</th><th>target</th><th>last</th>
 <th>unrealised</th><th>since</th></tr></thead><tbody></tbody></table></div>
<div class="card"><h2>Trades</h2><div class="scroll"><table id="trades"><thead><tr>
 <th>symbol</th><th>side</th><th>entry</th><th>exit</th><th>qty</th><th>fees</th><th>pnl</th>
 <th>reason</th><th>closed</th></tr></thead><tbody></tbody></table></div></div>
<div class="card"><h2>Rejected orders</h2><div class="scroll"><table id="rejections"><thead>
 <tr><th>time</th><th>symbol</th><th>side</th><th>by</th><th>reason</th></tr></thead><tbody>
 </tbody></table></div></div>
<div class="card"><h2>Events</h2><div class="scroll"><table id="events"><tbody></tbody>
 </table></div></div>
</main>
<script>
"use strict";
const COLORS = ["#58a6ff","#d29922","#a371f7","#3fb950","#f778ba","#8b98a5"];
let token = sessionStorage.getItem("asterai-token") || "";
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("token")) { token = hash.get("token"); sessionStorage.setItem("asterai-token", token);
  history.replaceState(null, "", location.pathname); }
let shown = null, seen = "", statuses = {};
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
const when = (s) => s ? String(s).replace("T", " ").slice(0, 16) : "-";
const num = (x, d = 4) => x === null || x === undefined ? "-" : Number(x).toFixed(d);
const signed = (x, d = 4) => x === null || x === undefined ? "-" :
  `<span class="${x >= 0 ? "pos" : "neg"}">${x >= 0 ? "+" : ""}${Number(x).toFixed(d)}</span>`;
function say(text) { $("message").textContent = text; }
async function api(path, body) {
  const opts = {headers: {"Authorization": "Bearer " + token}};
  if (body !== undefined) { opts.method = "POST"; opts.body = JSON.stringify(body);
    opts.headers["Content-Type"] = "application/json"; }
  const r = await fetch("/api/v1/" + path, opts);
  const data = await r.json().catch(() => ({}));
  if (r.status === 401) { $("login").hidden = false; throw new Error("a valid token is needed"); }
  if (!r.ok) throw new Error(data.detail || ("HTTP " + r.status));
  return data;
}
function q(path) { return path + (path.includes("?") ? "&" : "?") + "account=" + encodeURIComponent(shown); }
function summary(s) {
  const k = (label, value) => `<div class="kv"><span>${label}</span><b>${value}</b></div>`;
  const age = s.last_bar_age_s === null || s.last_bar_age_s === undefined ? "" :
    ` (${Math.round(s.last_bar_age_s)} s ago)`;
  let html = k("state", esc(s.state)) + k("equity", num(s.equity)) +
    (s.kind === "live" ? k("shadow equity", num(s.shadow_equity)) : "") +
    k("today", signed(s.today_pnl)) + k("unrealised", signed(s.unrealised_pnl)) +
    k("realised", signed(s.realised_pnl)) + k("fees", num(s.fees)) + k("trades", s.trades ?? 0) +
    k("open positions", s.open_positions ?? 0) + k("bars", `<span id="bars">${s.bars}</span>`) +
    k("last bar", esc(when(s.last_bar)) + age) + k("next bar due", esc(when(s.next_bar_due))) +
    k("errors", (s.errors ?? 0) + (s.last_error ? " — " + esc(s.last_error) : ""));
  if (s.feed) for (const [name, v] of Object.entries(s.feed)) html += k(esc(name), esc(v));
  $("summary").innerHTML = html;
  $("title").textContent = `${s.account} (${s.kind}, ${s.root})`;
  const c = s.controls, tag = (on, label) => `<span class="tag ${on ? "on" : "ok"}">${label}</span>`;
  $("controls").innerHTML = tag(c.killed || c.kill_asked, c.killed ? "killed" :
      c.kill_asked ? "kill asked" : "kill switch off") +
    tag(c.paused || c.pause_asked, c.paused ? "paused today" : c.pause_asked ? "pause asked" :
      "entries open") + tag(c.breaker, c.breaker ? "breaker tripped" : "breaker ok") +
    tag(s.stale, s.stale ? "STALE DATA" : "data fresh") +
    (c.reduce_only ? tag(true, "reduce-only: " + esc(c.reduce_only)) : "") +
    (s.reconciliation ? `<p>reconciliation: ${esc(s.reconciliation)}</p>` : "") +
    (s.ramp ? `<p id="ramp">scale-up: ${esc(s.ramp)}</p>` : "");
  document.body.dataset.bars = s.bars; document.body.dataset.state = s.state;
}
function chart(eq) {
  const names = Object.keys(eq.curves).filter((n) => eq.curves[n].length);
  const pts = names.flatMap((n) => eq.curves[n]);
  if (!pts.length) { $("chart").innerHTML = ""; $("legend").textContent = "no bar yet"; return; }
  const x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
  let y0 = Math.min(...pts.map((p) => p[1])), y1 = Math.max(...pts.map((p) => p[1]));
  if (eq.capital !== null) { y0 = Math.min(y0, eq.capital); y1 = Math.max(y1, eq.capital); }
  const pad = (y1 - y0) * 0.05 || 1; y0 -= pad; y1 += pad;
  const X = (x) => x1 === x0 ? 500 : (x - x0) / (x1 - x0) * 1000, Y = (y) => 260 - (y - y0) / (y1 - y0) * 260;
  let svg = eq.capital === null ? "" : `<line x1="0" x2="1000" y1="${Y(eq.capital)}" y2="${Y(eq.capital)}" stroke="#2b3640" stroke-dasharray="6 4"/>`;
  names.map((n, i) => [n, i]).reverse().forEach(([n, i]) => { svg += `<polyline class="curve" data-name="${esc(n)}" fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="${i ? 1.2 : 2}" vector-effect="non-scaling-stroke" points="${eq.curves[n].map((p) => X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1)).join(" ")}"/>`; });
  $("chart").innerHTML = svg;
  $("legend").innerHTML = names.map((n, i) => `<span style="color:${COLORS[i % COLORS.length]}">&#9632; ${esc(n)} ${num(eq.curves[n].at(-1)[1])}</span>`).join("") +
    `<span>${when(new Date(x0).toISOString())} .. ${when(new Date(x1).toISOString())} UTC, ${num(y0 + pad, 2)} .. ${num(y1 - pad, 2)} USDT</span>`;
}
function rows(id, list, cells) {  // the last cell wraps (a reason, an event's detail)
  $(id).querySelector("tbody").innerHTML = list.map((r) => "<tr>" + cells(r).map((c, i, all) =>
    `<td${i === all.length - 1 ? ' class="wrap"' : ""}>${c}</td>`).join("") + "</tr>").join("");
}
async function details() {
  const [pos, trades, eq, rej, ev] = await Promise.all([api(q("positions")), api(q("trades?limit=200")),
    api(q("equity")), api(q("rejections?limit=100")), api(q("events?limit=100"))]);
  chart(eq);
  rows("positions", pos, (p) => [`<span data-symbol="${esc(p.symbol)}">${esc(p.symbol)}</span>`, p.side, num(p.quantity, 6), num(p.entry_price, 6),
    num(p.stop, 6), num(p.target, 6), num(p.last_close, 6), signed(p.unrealised_pnl), esc(when(p.entry_time))]);
  rows("trades", trades, (t) => [esc(t.symbol), t.side, num(t.entry_price, 6), num(t.exit_price, 6),
    num(t.quantity, 6), num(t.fees), signed(t.pnl), esc(t.exit_reason || ""), esc(when(t.exit_time))]);
  rows("rejections", rej, (r) => [esc(when(r.time)), esc(r.symbol), esc(r.side), r.by, esc(r.reason)]);
  rows("events", ev.slice().reverse(), (e) => [esc(when(e.at)), esc(e.kind), esc(e.detail)]);
}
let busy = false;  // a tick still waiting on the API: the next one is skipped
async function tick() {
  if (!token) { $("login").hidden = false; say("enter the token"); return; }
  if (busy) return;
  busy = true;
  try {
    const accounts = await api("accounts");
    if (!accounts.length) { say("no account under the data roots yet"); return; }
    if (!accounts.some((a) => a.id === shown)) shown = accounts[0].id;
    for (const a of accounts) statuses[a.id] = await api("status?account=" + encodeURIComponent(a.id));
    $("accounts").innerHTML = accounts.map((a) => { const s = statuses[a.id];
      return `<button data-id="${esc(a.id)}" class="${a.id === shown ? "sel" : ""}">${esc(a.id)} ${num(s.equity, 2)} ${esc(s.state)}</button>`; }).join(" ");
    const s = statuses[shown];
    summary(s);
    const now = [shown, s.bars, s.live_last_bar, JSON.stringify(s.controls), s.errors].join("|");
    if (now !== seen) { await details(); seen = now; }
    $("login").hidden = true; say("");
  } catch (err) { say(String(err.message || err)); }
  finally { busy = false; }
}
async function ask(what, text) {
  if (!confirm(text)) return;
  try { const r = await api(what, {account: shown, confirm: true}); say(r.message); seen = ""; tick(); }
  catch (err) { say(what + " refused: " + (err.message || err)); }
}
$("accounts").addEventListener("click", (e) => { const b = e.target.closest("button");
  if (b) { shown = b.dataset.id; seen = ""; tick(); } });
$("kill").addEventListener("click", () => ask("kill", `Kill switch for ${shown}: close every position and stop trading for good?`));
$("pause").addEventListener("click", () => ask("pause", `Pause new entries of ${shown} until the next UTC day?`));
$("login").addEventListener("submit", (e) => { e.preventDefault(); token = $("token").value.trim();
  sessionStorage.setItem("asterai-token", token); seen = ""; tick(); });
tick(); setInterval(tick, 2000);
</script></body></html>
"""
