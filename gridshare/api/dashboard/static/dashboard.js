// gridshare dashboard: polls /dashboard/api/snapshot and draws it. Vanilla JS, no library.
// Units from the API: W, Wh, micro-euro per kWh, pu, unix s; shown as kW, kWh, EUR/kWh, UTC.
"use strict";

const params = new URLSearchParams(location.search);
const REFRESH_MS = Math.max(500, Number(params.get("refresh") || 5000));
const state = { feeder: null, snap: null, paused: false, timer: null, busy: false, updates: 0 };
const $ = (sel) => document.querySelector(sel);

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
const kw = (w, d = 1) => (w === null || w === undefined ? "–" : (w / 1000).toFixed(d));
const kwh = (wh, d = 2) => (wh === null || wh === undefined ? "–" : (wh / 1000).toFixed(d));
const eur = (micro) => (micro === null || micro === undefined ? "–" : (micro / 1e6).toFixed(3));
function hhmm(ts) { return ts === null || ts === undefined ? "–" : new Date(ts * 1000).toISOString().slice(11, 16); }
function stamp(ts) { return ts === null || ts === undefined ? "–" : new Date(ts * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC"; }
function short(h) { return h ? h.slice(0, 8) + "…" + h.slice(-6) : ""; }
function txLink(h) {
  return h ? `<a href="/dashboard/api/tx/${esc(h)}" aria-label="transaction ${esc(h)}" title="${esc(h)}"><code>${esc(short(h))}</code></a>` : "–";
}
function dl(el, rows) {
  el.querySelector("dl").innerHTML = rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join("");
}
function flag(ok, text) { return `<span class="${ok === true ? "state-ok" : ok === false ? "state-bad" : "state-warn"}">${esc(text)}</span>`; }

async function getJSON(url, headers) {
  const r = await fetch(url, { headers: headers || {}, cache: "no-store" });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = body && body.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${r.status}`;
    throw new Error(e);
  }
  return body;
}

// ---------------------------------------------------------------- voltage classes
function vClass(v) {
  if (v === null || v === undefined) return ["v-none", "not metered"];
  if (v < 0.95) return ["v-low", "LOW"];
  if (v < 0.97) return ["v-nearlow", "near low"];
  if (v <= 1.03) return ["v-ok", "ok"];
  if (v <= 1.05) return ["v-nearhigh", "near high"];
  return ["v-high", "HIGH"];
}
const V_FILL = { "v-low": "#cf222e", "v-high": "#cf222e", "v-nearlow": "#b35900", "v-nearhigh": "#b35900", "v-ok": "#1a7f37", "v-none": "#8c959f" };

// ---------------------------------------------------------------- loading (from the audit)
function loadingOf() { const a = state.snap && state.snap.audit_checks; return a && a.loading ? a.loading : null; }
// Branches to mark: those above their limit in the window, and the most loaded line and
// transformer of the latest interval with computed minutes (the audit reports no other branch).
function branchLoading() {
  const L = loadingOf(), out = {};
  if (!L) return out;
  const rows = L.rows.filter((r) => r.n_minutes_computed > 0);
  const r = rows[rows.length - 1];
  if (r) {
    if (r.max_line_id !== null) out[`line:${r.max_line_id}`] = { pct: r.max_line_loading_pct, interval: r.interval, over: false };
    if (r.max_trafo_id !== null) out[`trafo:${r.max_trafo_id}`] = { pct: r.max_trafo_loading_pct, interval: r.interval, over: false };
  }
  for (const v of L.violations) out[`${v.branch}:${v.branch_id}`] = { pct: v.loading_pct, interval: v.interval, over: true };
  return out;
}
function loadingText() {
  const a = state.snap.audit_checks;
  if (!a) return "Branch loading: being computed by the audit…";
  if (a.error) return `Branch loading: the audit failed (${a.error}).`;
  const L = a.loading;
  if (!L) return "Branch loading: not available (the audit has no feeder model).";
  const rows = L.rows.filter((r) => r.n_minutes_computed > 0);
  let t = `Branch loading (audit: load flow of the metered data, limits line ${L.limits_pct.line} %, transformer ${L.limits_pct.trafo} %): `;
  t += rows.length ? `${rows.length} of ${L.rows.length} intervals computed, ${L.n_violations} branch-intervals above the limit; the most loaded line and transformer of the latest computed interval are labelled.` : "no interval computed yet (missing readings)";
  if (L.unmetered_buses.length) t += ` Unmetered load buses: ${L.unmetered_buses.join(", ")}.`;
  return t + (a.current ? "" : " (updating)");
}

// ---------------------------------------------------------------- feeder
function drawFeeder() {
  const f = state.feeder;
  if (!f) return;
  const svg = $("#feeder-svg");
  const W = 1000, H = Math.max(260, 24 * (f.n_leaves || 10) + 40), mx = 30, my = 20;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const pos = {};
  for (const b of f.buses) pos[b.id] = [mx + b.x * (W - mx - 130), my + b.y * (H - 2 * my)];
  const volts = (state.snap && state.snap.buses) || {};
  let out = `<title id="feeder-title">Feeder ${esc(f.name)}: ${f.buses.length} buses, ${f.branches.length} branches</title>`;
  let nLow = 0, nHigh = 0, nMetered = 0;
  for (const b of f.buses) {
    const v = volts[String(b.id)];
    if (v) { nMetered++; if (v.v_pu < 0.95) nLow++; if (v.v_pu > 1.05) nHigh++; }
  }
  out += `<desc id="feeder-desc">${nMetered} of ${f.buses.length} buses metered; ${nLow} below 0.95 pu, ${nHigh} above 1.05 pu. The table below lists every bus.</desc>`;
  const load = branchLoading();
  for (const br of f.branches) {
    const [x1, y1] = pos[br.from], [x2, y2] = pos[br.to];
    const l = load[`${br.kind}:${br.id}`];
    const cls = l ? (l.over ? " overload" : " maxload") : "";
    const lt = l ? `; ${l.over ? "ABOVE its limit" : "most loaded"}: ${l.pct.toFixed(0)} % in interval ${l.interval}` : "";
    out += `<line class="${esc(br.kind)}${cls}" data-branch="${esc(br.kind)}:${br.id}" x1="${x1}" y1="${y1}" x2="${x2}" y2="${y2}"><title>${esc(br.kind)} ${esc(br.name)}: bus ${br.from} – bus ${br.to}${esc(lt)}</title></line>`;
    if (l) out += `<text class="loadlabel" x="${(x1 + x2) / 2 - 12}" y="${(y1 + y2) / 2 + 16}">${l.over ? "OVER " : ""}${l.pct.toFixed(0)} %</text>`;
  }
  for (const b of f.buses) {
    const [x, y] = pos[b.id];
    const v = volts[String(b.id)];
    const [cls, word] = vClass(v ? v.v_pu : null);
    const label = v ? `${v.v_pu.toFixed(3)}` : "";
    if (b.flex.length) out += `<rect class="flex" x="${x - 10}" y="${y - 10}" width="20" height="20" rx="3"></rect>`;
    out += `<g class="bus" data-bus="${b.id}" data-state="${esc(word)}"><circle cx="${x}" cy="${y}" r="6" fill="${V_FILL[cls]}"></circle>` +
      `<title>bus ${b.id} ${esc(b.name)}: ${v ? v.v_pu.toFixed(4) + " pu, " + word : "not metered"}${b.flex.length ? "; flexibility " + esc(b.flex.join(", ")) : ""}</title>` +
      `<text x="${x + 9}" y="${y - 4}">${esc(b.name)}${b.flex.length ? " [" + esc(b.flex.join(",")) + "]" : ""}${label ? " " + label : ""}</text></g>`;
  }
  svg.innerHTML = out;
  $("#loading-note").textContent = loadingText();
  $("#bus-table tbody").innerHTML = f.buses.map((b) => {
    const v = volts[String(b.id)];
    const [, word] = vClass(v ? v.v_pu : null);
    return `<tr data-bus="${b.id}"><td>${b.id}</td><td>${esc(b.name)}</td><td class="num">${v ? v.v_pu.toFixed(4) : "–"}</td>` +
      `<td>${esc(word)}</td><td>${v ? stamp(v.at_unix_s) : "–"}</td><td>${esc(b.flex.join(", "))}</td></tr>`;
  }).join("");
}

// ---------------------------------------------------------------- flexibilities
function flexChart(fl, win) {
  const W = 480, H = 170, L = 44, R = 8, T = 8, B = 22;
  const t0 = win.from_interval * win.interval_s, t1 = (win.to_interval + 1) * win.interval_s;
  let lo = Math.min(0, fl.p_min_rated_w), hi = Math.max(0, fl.p_max_rated_w);
  for (const b of fl.bands) { lo = Math.min(lo, b.p_min_w); hi = Math.max(hi, b.p_max_w); }
  for (const [, p] of fl.readings) { lo = Math.min(lo, p); hi = Math.max(hi, p); }
  if (hi === lo) hi = lo + 1000;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (p) => T + ((hi - p) / (hi - lo)) * (H - T - B);
  let s = `<line class="axis" x1="${L}" y1="${T}" x2="${L}" y2="${H - B}"></line><line class="zero" x1="${L}" x2="${W - R}" y1="${y(0)}" y2="${y(0)}"></line>`;
  s += `<text x="2" y="${y(hi) + 4}">${kw(hi)} kW</text><text x="2" y="${y(lo)}">${kw(lo)} kW</text>`;
  s += `<text x="${L}" y="${H - 6}">${hhmm(t0)}</text><text x="${W - R - 30}" y="${H - 6}">${hhmm(t1)}</text>`;
  for (const b of fl.bands) {
    const xa = x(b.interval * win.interval_s), xb = x((b.interval + 1) * win.interval_s);
    const cls = b.interval > win.current_interval ? "next" : "bandrect";
    s += `<rect class="${cls}" x="${xa}" width="${Math.max(1, xb - xa)}" y="${y(b.p_max_w)}" height="${Math.max(1, y(b.p_min_w) - y(b.p_max_w))}"></rect>`;
  }
  const band = {};
  for (const b of fl.bands) band[b.interval] = b;
  let path = "", viol = "";
  for (const [t, p] of fl.readings) {
    path += `${path ? "L" : "M"}${x(t).toFixed(1)},${y(p).toFixed(1)}`;
    const b = band[Math.floor(t / win.interval_s)];
    if (b && (p < b.p_min_w || p > b.p_max_w)) viol += `<circle class="violdot" cx="${x(t)}" cy="${y(p)}" r="3"></circle>`;
  }
  s += `<path class="meteredline" d="${path}"></path>` + viol;
  return s;
}

function drawFlex() {
  const snap = state.snap, win = snap.window;
  const viol = {};
  for (const r of snap.compliance.rows) if (r.n_violations) viol[r.device_id] = (viol[r.device_id] || 0) + r.n_violations;
  $("#flex-list").innerHTML = snap.flexibilities.map((fl) => {
    const cur = fl.bands.find((b) => b.interval === win.current_interval);
    const next = fl.bands.find((b) => b.interval === win.current_interval + 1);
    // the latest reading is judged against the band of its own interval
    const own = fl.latest_at_unix_s === null ? null : fl.bands.find((b) => b.interval === Math.floor(fl.latest_at_unix_s / win.interval_s));
    const inside = own && fl.latest_p_w !== null ? fl.latest_p_w >= own.p_min_w && fl.latest_p_w <= own.p_max_w : null;
    const nv = viol[fl.device_id] || 0;
    const text = `${fl.name}: band now ${cur ? kw(cur.p_min_w) + " to " + kw(cur.p_max_w) + " kW" : "none"}, ` +
      `next interval ${next ? kw(next.p_min_w) + " to " + kw(next.p_max_w) + " kW" : "not written yet"}, ` +
      `latest metered ${kw(fl.latest_p_w)} kW${inside === null ? "" : inside ? " (inside its interval's band)" : " (OUTSIDE its interval's band)"}; ` +
      `${nv} readings outside their bands in the window.`;
    return `<article class="flex" data-device="${fl.device_id}" data-name="${esc(fl.name)}" aria-labelledby="flex-${fl.device_id}-h">` +
      `<h3 id="flex-${fl.device_id}-h">${esc(fl.name)} <span class="muted">(${esc(fl.kind.replace("_", " "))}, device ${fl.device_id}, bus ${fl.bus})</span></h3>` +
      `<dl><dt>Band now</dt><dd class="band-now">${cur ? kw(cur.p_min_w) + " … " + kw(cur.p_max_w) + " kW" : "none"}</dd>` +
      `<dt>Next interval</dt><dd class="band-next">${next ? kw(next.p_min_w) + " … " + kw(next.p_max_w) + " kW" : "not written yet"}</dd>` +
      `<dt>Metered</dt><dd class="metered-now">${kw(fl.latest_p_w)} kW at ${hhmm(fl.latest_at_unix_s)} ${inside === null ? "" : inside ? flag(true, "inside") : flag(false, "OUTSIDE")}</dd>` +
      `<dt>Violations</dt><dd>${nv ? flag(false, nv + " readings outside") : flag(true, "none")}</dd></dl>` +
      `<svg viewBox="0 0 480 170" role="img" aria-label="${esc(text)}">${flexChart(fl, win)}</svg></article>`;
  }).join("");
}

// ---------------------------------------------------------------- tables
function drawCompliance() {
  const c = state.snap.compliance, names = {};
  for (const f of state.snap.flexibilities) names[f.device_id] = f.name;
  let summary = `${c.compliant ? flag(true, "Compliant") : flag(false, "NOT compliant")}: ${c.n_readings_checked} readings checked against their bands, ` +
    `${c.n_violations} outside, ${c.n_readings_without_band} without a band, e.g. customers and the transformer (intervals ${c.from_interval}–${c.to_interval}).`;
  const a = state.snap.audit_checks;
  if (a && a.stale) {
    const vs = Object.values(a.stale), n = vs.filter((v) => v.stale).length;
    summary += ` Band inputs re-checked: ${n ? flag(false, n + " stale") : flag(true, "none stale")} of ${vs.length}${a.current ? "" : " (updating)"}.`;
  }
  $("#compliance-summary").innerHTML = summary;
  const rows = [...c.rows].sort((a, b) => b.interval - a.interval || a.device_id - b.device_id);
  $("#compliance-table tbody").innerHTML = rows.map((r) => `<tr class="${r.compliant ? "" : "bad"}" data-device="${r.device_id}" data-interval="${r.interval}">` +
    `<td>${r.interval} <span class="muted">${hhmm(r.interval * state.snap.window.interval_s)}</span></td><td>${esc(names[r.device_id] || r.device_id)}</td>` +
    `<td class="num">${kw(r.band_p_min_w)} … ${kw(r.band_p_max_w)}</td>` +
    `<td class="num">${r.n_readings ? `${kw(r.metered_p_min_w)} / ${kw(r.metered_p_mean_w)} / ${kw(r.metered_p_max_w)}` : "no readings yet"}</td>` +
    `<td class="num">${r.n_readings}</td><td>${!r.n_readings ? "–" : r.compliant ? flag(true, "inside") : flag(false, `${r.n_violations} outside (worst ${kw(r.worst_excess_w, 2)} kW)`)}</td>` +
    `<td>${staleCell(r.interval)}</td><td>${txLink(r.band_tx_hash)}</td><td>${(r.readings_tx_hashes || []).map(txLink).join(" ") || "–"}</td></tr>`).join("");
  const ex = c.extras || {};
  const keys = Object.keys(ex).filter((k) => ex[k] !== null && ex[k] !== undefined);
  $("#loading-extras").innerHTML = keys.length ? `<details><summary>More from the audit (${esc(keys.join(", "))})</summary><pre>${esc(JSON.stringify(ex, null, 1))}</pre></details>` : "";
}

function staleCell(interval) {
  const a = state.snap.audit_checks, v = a && a.stale ? a.stale[String(interval)] : undefined;
  if (v === undefined) return flag(null, "checking");
  if (v.stale === null) return `<span class="muted" title="${esc(v.reason)}">not checked</span>`;
  return v.stale ? `<span title="${esc(v.reason)}">${flag(false, "STALE")}</span>` : flag(true, "match");
}

function loadCell(interval) {
  const L = loadingOf();
  const r = L ? L.rows.find((x) => x.interval === interval) : null;
  if (!r) return "–";
  if (!r.n_minutes_computed) return '<span class="muted">missing readings</span>';
  const over = L.violations.some((v) => v.interval === interval);
  const t = `${r.max_line_loading_pct === null ? "–" : r.max_line_loading_pct.toFixed(0)} / ${r.max_trafo_loading_pct === null ? "–" : r.max_trafo_loading_pct.toFixed(0)}`;
  return over ? flag(false, t + " OVER") : t;
}

function replayCell(r) {
  if (!r.settled) return "–";
  if (r.replay_equal === null || r.replay_equal === undefined) return flag(null, "checking");
  return r.replay_equal ? flag(true, "equal") : `${flag(false, "DIFFERENT")} <span class="muted">${esc((r.replay_differences || []).join("; "))}</span>`;
}

function drawIntervals() {
  const win = state.snap.window;
  $("#intervals-table tbody").innerHTML = state.snap.intervals.map((r) => `<tr data-interval="${r.interval}" data-settled="${r.settled}">` +
    `<td>${r.interval}${r.interval === win.current_interval ? " (now)" : r.interval > win.current_interval ? " (next)" : ""}</td><td>${stamp(r.start_unix_s)}</td>` +
    `<td>${r.settled ? flag(true, "settled") : flag(null, "open")}</td>` +
    `<td class="num">${eur(r.clearing_price_micro_eur_per_kwh)}</td><td class="num">${kwh(r.traded_wh)}</td><td class="num">${kwh(r.local_wh)}</td>` +
    `<td class="num">${r.settled ? kw(r.battery_power_w, 2) : "–"}</td><td class="num">${r.soc_after_pct ?? "–"}${r.soc_after_pct === undefined || r.soc_after_pct === null ? "" : " %"}</td>` +
    `<td class="num">${r.orders_on_chain}</td><td>${r.deviations_settled ? "settled" : "–"}</td><td class="num">${loadCell(r.interval)}</td><td>${replayCell(r)}</td><td>${txLink(r.settlement_tx)}</td></tr>`).join("");
}

function drawHealth() {
  const h = state.snap.health, c = h.chain, o = h.oracle, r = h.relay;
  const age = c.head_age_s;
  dl($("#health-chain"), [
    ["State", flag(c.state === "ok", c.state)], ["Chain id", esc(c.chain_id)], ["Head block", esc(c.head_block)],
    ["Head time", esc(stamp(c.head_timestamp_unix_s))],
    ["Head age", age >= 0 ? `${age.toFixed(1)} s ${age > 30 ? flag(false, "(no new block for 30 s)") : ""}` : `chain clock ${(-age).toFixed(0)} s ahead of this machine`],
  ]);
  const st = o.store;
  const rows = [["Last band interval", o.last_band_interval === null ? flag(false, "none") : `${o.last_band_interval} (${hhmm(o.last_band_interval * state.snap.window.interval_s)})`],
    ["Lag", o.lag_intervals === null ? "–" : o.lag_intervals < 0 ? flag(true, `bands ${-o.lag_intervals} interval(s) ahead`) : o.lag_intervals === 0 ? flag(true, "bands of the current interval written") : flag(o.lag_intervals > 1 ? false : null, `${o.lag_intervals} interval(s) behind`)],
    ["Band written", o.band_written_before_start_s === null ? "–" : o.band_written_before_start_s >= 0 ? `${o.band_written_before_start_s} s before its interval started` : `${-o.band_written_before_start_s} s after its interval started`],
    ["Band tx", txLink(o.band_tx_hash)]];
  if (st && !st.error) {
    rows.push(["Median latency", st.median_latency_s === null ? "–" : `${st.median_latency_s.toFixed(2)} s`],
      ["Readings accepted", esc(st.readings)], ["Rejected readings", st.rejected ? flag(false, st.rejected + " " + JSON.stringify(st.rejected_by_rule)) : flag(true, "0")],
      ["Late readings", esc(st.late)]);
  } else {
    rows.push(["Oracle store", st && st.error ? flag(false, st.error) : '<span class="muted">not available (set GRIDSHARE_ORACLE_DB)</span>']);
  }
  dl($("#health-oracle"), rows);
  dl($("#health-relay"), [
    ["State", r.state ? flag(r.state === "running", r.state) : '<span class="muted">no relay heard of</span>'],
    ["Orders waiting", r.orders_waiting ? flag(null, r.orders_waiting) : flag(true, "0")],
    ["Oldest waiting", r.oldest_waiting_age_s === null ? "–" : `${r.oldest_waiting_age_s} s`],
    ["Heartbeat", r.heartbeat_age_s === null ? "–" : `${r.heartbeat_age_s} s ago`],
    ["Problems", r.problems.length ? flag(false, r.problems.join("; ")) : flag(true, "none")],
  ]);
}

function drawAll() {
  const s = state.snap;
  $("#feeder-name").textContent = s.deployment.feeder;
  $("#deployment-line").textContent = `chain ${s.deployment.chain_id} · market ${s.deployment.market} · interval ${s.window.interval_s / 60} min · now interval ${s.window.current_interval} (${stamp(s.window.current_interval * s.window.interval_s)})`;
  drawHealth(); drawFeeder(); drawFlex(); drawCompliance(); drawIntervals();
}

// ---------------------------------------------------------------- polling
async function refresh() {
  if (state.busy) return;
  state.busy = true;
  try {
    if (!state.feeder) state.feeder = await getJSON("/dashboard/api/feeder");
    state.snap = await getJSON(`/dashboard/api/snapshot?hours=${$("#hours").value}`);
    drawAll();
    state.updates++;
    if (state.updates === 1) document.body.dataset.firstUpdateMs = String(Math.round(performance.now()));
    document.body.dataset.updates = String(state.updates);
    document.body.dataset.head = String(state.snap.health.chain.head_block);
    $("#status").textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC (block ${state.snap.health.chain.head_block}, ${state.snap.server_ms} ms)`;
  } catch (e) {
    $("#status").innerHTML = `<span class="error">update failed: ${esc(e.message)}</span>`;
  } finally {
    state.busy = false;
  }
}
function schedule() {
  clearInterval(state.timer);
  if (!state.paused) state.timer = setInterval(refresh, REFRESH_MS);
}

// ---------------------------------------------------------------- member view
async function showMember(member, expires, signature) {
  const view = $("#member-view");
  const headers = { "X-Gridshare-Member": member, "X-Gridshare-Expires": String(expires), "X-Gridshare-Signature": signature };
  view.textContent = "loading your data…";
  try {
    const [orders, st] = await Promise.all([
      getJSON(`/v1/members/${member}/orders?limit=200`, headers),
      getJSON(`/v1/members/${member}/statement`, headers)]);
    const stRows = [["Bought locally", kwh(st.bought_local_wh) + " kWh"], ["Sold locally", kwh(st.sold_local_wh) + " kWh"],
      ["From the battery", kwh(st.from_battery_wh) + " kWh"], ["To the battery", kwh(st.to_battery_wh) + " kWh"],
      ["From the grid", kwh(st.from_grid_wh) + " kWh"], ["To the grid", kwh(st.to_grid_wh) + " kWh"],
      ["Net", (st.net_nano_eur / 1e9).toFixed(4) + " EUR"], ["On-chain balance", (st.onchain_balance_nano_eur / 1e9).toFixed(4) + " EUR"]];
    view.innerHTML = `<h3 id="member-who" data-member="${esc(orders.member)}">Member ${esc(orders.member)}</h3>` +
      `<p class="muted">Signed view, valid until ${esc(stamp(Number(expires)))}.</p>` +
      `<dl id="member-statement">${stRows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("")}</dl>` +
      `<div class="tablewrap"><table id="member-orders"><caption>Your orders (${orders.orders.length}, newest first)</caption>` +
      `<thead><tr><th scope="col">Interval</th><th scope="col">Side</th><th scope="col">Energy (kWh)</th><th scope="col">Limit (EUR/kWh)</th>` +
      `<th scope="col">Status</th><th scope="col">Prosumer</th><th scope="col">Tx</th></tr></thead><tbody>` +
      orders.orders.map((o) => `<tr data-prosumer="${esc(o.prosumer)}"><td>${o.interval}</td><td>${esc(o.side)}</td><td class="num">${kwh(o.energy_wh, 3)}</td>` +
        `<td class="num">${eur(o.price_micro_eur_per_kwh)}</td><td>${esc(o.status)}${o.error ? " – " + esc(o.error) : ""}</td><td><code>${esc(short(o.prosumer))}</code></td><td>${txLink(o.tx_hash)}</td></tr>`).join("") +
      `</tbody></table></div>`;
  } catch (e) {
    view.innerHTML = `<p class="error" role="alert">Could not read your data: ${esc(e.message)}</p>`;
  }
}

async function walletSign() {
  const note = $("#wallet-note");
  if (!window.ethereum) { note.textContent = "No browser wallet found (window.ethereum): paste a signature instead."; return; }
  try {
    note.textContent = "asking your wallet…";
    const accounts = await window.ethereum.request({ method: "eth_requestAccounts" });
    const member = accounts[0];
    const schema = await getJSON("/v1/auth/schema");
    const expires = Math.floor(Date.now() / 1000) + Math.min(600, schema.max_lifetime_s - 30);
    const typed = { types: schema.types, domain: schema.domain, primaryType: schema.primary_type, message: { member, expires } };
    const signature = await window.ethereum.request({ method: "eth_signTypedData_v4", params: [member, JSON.stringify(typed)] });
    note.textContent = `signed by ${member}`;
    await showMember(member, expires, signature);
  } catch (e) {
    note.innerHTML = `<span class="error">wallet: ${esc(e.message || e)}</span>`;
  }
}

function init() {
  $("#hours").addEventListener("change", refresh);
  $("#pause").addEventListener("click", (ev) => {
    state.paused = !state.paused;
    ev.target.setAttribute("aria-pressed", String(state.paused));
    ev.target.textContent = state.paused ? "Resume updates" : "Pause updates";
    schedule();
  });
  $("#wallet-sign").addEventListener("click", walletSign);
  if (!window.ethereum) $("#wallet-note").textContent = "No browser wallet detected.";
  $("#paste-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    showMember($("#paste-member").value.trim(), $("#paste-expires").value.trim(), $("#paste-signature").value.trim());
  });
  refresh();
  schedule();
}
document.addEventListener("DOMContentLoaded", init);
