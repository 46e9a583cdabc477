// fedge console: plain JavaScript, no build step, no third-party code.
// Everything goes through the admin HTTP API with the credential kept in
// sessionStorage; every value from the API is written with textContent.
"use strict";

const TOKEN_KEY = "fedge.admin.token";
const ROLES = { viewer: 1, operator: 2, admin: 3 };
const PAGES = ["fleet", "runs", "new", "models", "audit"];

const state = { who: null, timer: null, status: null, runs: [], models: null, auditFirst: 0, auditLast: 0, xaxis: "round" };

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
}

function show(id, text) {
  const e = $(id);
  e.textContent = text || "";
  e.hidden = !text;
}

class APIError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// api calls the admin API; a 401 signs the tab out.
async function api(method, path, body, token) {
  const headers = { Authorization: "Bearer " + (token || sessionStorage.getItem(TOKEN_KEY) || "") };
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new APIError(0, "cannot reach the coordinator: " + e.message);
  }
  const text = await resp.text();
  let doc = null;
  try { doc = text ? JSON.parse(text) : null; } catch (e) { doc = null; }
  if (!resp.ok) {
    const msg = doc && doc.error ? doc.error : (text.trim() || resp.statusText);
    if (resp.status === 401 && !token) signOut("Your session's credential was refused (" + msg + "). Sign in again.");
    throw new APIError(resp.status, msg);
  }
  return doc;
}

function can(role) { return state.who && ROLES[state.who.role] >= ROLES[role]; }

function fmtTime(ms) { return ms ? new Date(ms).toLocaleString() : "-"; }
function fmtAgo(ms, now) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round(((now || Date.now()) - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}
function fmtNum(x, d) { return x == null || Number.isNaN(x) ? "-" : Number(x).toFixed(d); }
function fmtBytes(b) {
  if (!b) return "-";
  const u = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return b.toFixed(i ? 1 : 0) + " " + u[i];
}

function fill(tableId, rows, empty) {
  const tb = $(tableId).tBodies[0];
  tb.replaceChildren();
  if (!rows.length) {
    const n = $(tableId).tHead.rows[0].cells.length;
    tb.append(el("tr", {}, el("td", { colspan: String(n), class: "empty" }, empty)));
    return;
  }
  for (const r of rows) tb.append(r instanceof Node ? r : el("tr", {}, ...r.map((c) => c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))));
}

// ---- session ----

function signOut(msg) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.who = null;
  route(msg);
}

async function login(ev) {
  ev.preventDefault();
  const tok = $("login-token").value.trim();
  show("login-error", "");
  if (!tok) { show("login-error", "Enter an admin token."); return; }
  try {
    const who = await api("GET", "/v1/whoami", undefined, tok);
    sessionStorage.setItem(TOKEN_KEY, tok);
    state.who = who;
    $("login-token").value = "";
    location.hash = "#runs";
    route();
  } catch (e) {
    show("login-error", e.status === 401 ? "Sign-in failed: the coordinator refused this token (" + e.message + ")." : "Sign-in failed: " + e.message);
  }
}

// ---- routing ----

async function route(loginMsg) {
  clearInterval(state.timer);
  state.timer = null;
  show("banner", "");
  for (const p of ["login", ...PAGES]) $("page-" + p).hidden = true;
  const signedIn = !!sessionStorage.getItem(TOKEN_KEY);
  $("nav").hidden = $("who").hidden = $("signout").hidden = !signedIn;
  if (!signedIn) {
    $("page-login").hidden = false;
    show("login-error", loginMsg || "");
    $("login-token").focus();
    return;
  }
  if (!state.who) {
    try { state.who = await api("GET", "/v1/whoami"); } catch (e) { if (e.status !== 401) show("banner", e.message); return; }
  }
  $("who").textContent = state.who.name + " (" + state.who.role + ")";
  let page = location.hash.replace(/^#/, "");
  if (!PAGES.includes(page)) page = "runs";
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  $("page-" + page).hidden = false;
  document.title = "fedge console: " + $("page-" + page).querySelector("h1").textContent;
  const loaders = { fleet: loadFleet, runs: loadRuns, new: loadNew, models: loadModels, audit: () => loadAudit("latest") };
  const refresh = { fleet: 5000, runs: 1000, models: 5000 };
  await guarded(loaders[page]);
  if (refresh[page]) state.timer = setInterval(() => guarded(loaders[page]), refresh[page]);
}

async function guarded(fn) {
  try {
    await fn();
  } catch (e) {
    if (e.status !== 401) show("banner", "The coordinator answered: " + e.message);
  }
}

// ---- fleet ----

async function loadFleet() {
  const devs = await api("GET", "/v1/devices");
  const now = Date.now();
  const online = devs.filter((d) => d.online).length;
  const pending = devs.filter((d) => d.state === "pending").length;
  $("fleet-summary").replaceChildren(
    card("Devices", devs.length), card("Online", online), card("Offline", devs.length - online), card("Pending approval", pending));
  const tags = new Map();
  for (const d of devs) {
    const keys = Object.entries(d.tags || {});
    if (!keys.length) keys.push(["(no tags)", ""]);
    for (const [k, v] of keys) {
      const name = v === "" && k === "(no tags)" ? k : k + "=" + v;
      const t = tags.get(name) || { on: 0, off: 0 };
      if (d.online) t.on++; else t.off++;
      tags.set(name, t);
    }
  }
  fill("fleet-tags", [...tags.entries()].sort().map(([k, t]) => [k, t.on, t.off]), "No devices.");
  fill("fleet-devices", devs.map((d) => [
    d.device_id, d.state,
    el("td", {}, el("span", { class: d.online ? "dot on" : "dot off", "aria-hidden": "true" }), d.online ? "online" : "offline"),
    el("td", { title: fmtTime(d.last_seen_unix_ms) }, fmtAgo(d.last_seen_unix_ms, now)),
    d.arch || "-", fmtBytes(d.memory_bytes), d.sample_count || "-",
    Object.entries(d.tags || {}).map(([k, v]) => k + "=" + v).join(", ") || "-",
  ]), "No devices registered. Add one with: coordinator devices add ID");
}

function card(label, value, sub) {
  return el("div", { class: "card" }, el("span", { class: "label" }, label), el("span", { class: "value" }, value), sub ? el("span", { class: "sub" }, sub) : "");
}

// ---- runs ----

function lossOf(h) {
  if (h.has_server_eval) return h.server_loss;
  if (h.eval_samples > 0) return h.eval_loss;
  return h.train_loss;
}

async function loadRuns() {
  const [st, runs] = await Promise.all([api("GET", "/v1/rounds/status"), api("GET", "/v1/rounds")]);
  state.status = st;
  const run = st.run;
  const cards = [];
  if (run) {
    cards.push(card("Run " + run.run_id, run.state, run.model + ", " + run.strategy));
    cards.push(card("Rounds committed", run.rounds_committed + (run.rounds ? " / " + run.rounds : ""),
      run.target_accuracy ? "target accuracy " + run.target_accuracy : ""));
    cards.push(card("Accuracy", run.has_accuracy ? fmtNum(run.last_accuracy, 4) : "-", "model version " + st.model_version));
    if (run.dp) cards.push(card("Privacy spent", "ε " + fmtNum(run.dp.epsilon, 2), "δ " + run.dp.delta));
    if (run.secure) cards.push(card("Secure aggregation", "SecAgg+", "threshold " + run.secure.threshold));
  } else {
    cards.push(card("Run", "none", "start one on the New run page"));
  }
  const r = st.round;
  if (r) {
    cards.push(card("Round " + r.round_id, r.phase,
      r.deadline_unix_ms ? "deadline in " + Math.max(0, Math.round((r.deadline_unix_ms - st.now_unix_ms) / 1000)) + " s" : ""));
    cards.push(card("Selected", r.selected));
    cards.push(card("Reported", r.accepted));
    cards.push(card("Dropped", r.dropped));
  }
  cards.push(card("Devices online", st.devices_online));
  $("run-current").replaceChildren(...cards);
  $("stop-form").hidden = !(run && run.state === "running" && can("operator"));
  const rej = Object.entries(st.rejections || {}).filter(([, v]) => v > 0);
  $("run-rejections").replaceChildren(rej.length
    ? el("ul", { class: "tags" }, ...rej.sort().map(([k, v]) => el("li", {}, k + ": " + v)))
    : el("p", { class: "note" }, "None."));
  const hist = st.history || [];
  fill("run-history", hist.slice().reverse().map((h) => [
    h.round_id + (h.failed ? " (failed)" : ""), h.model_version || "-", h.selected, h.accepted, h.dropped, h.late,
    Object.entries(h.rejections || {}).map(([k, v]) => k + " " + v).join(", ") || "0",
    fmtNum(h.accuracy, 4), fmtNum(lossOf(h), 4), fmtNum(h.duration_ms / 1000, 1) + " s",
  ]), "No finished round yet.");
  drawCharts();
  state.runs = runs;
  fill("runs-list", runs.slice().reverse().map((x) => [
    x.run_id, x.state, x.model, x.strategy, x.rounds_committed + (x.rounds ? " / " + x.rounds : ""),
    x.has_accuracy ? fmtNum(x.last_accuracy, 4) : "-", fmtTime(x.started_unix_ms), x.reason || "",
  ]), "No runs yet.");
}

function drawCharts() {
  const st = state.status;
  const hist = st ? (st.history || []).filter((h) => !h.failed) : [];
  let t = 0;
  const pts = hist.map((h) => { t += h.duration_ms / 1000; return { round: h.round_id, time: t, acc: h.accuracy, loss: lossOf(h) }; });
  const xlabel = state.xaxis === "time" ? "seconds of rounds" : "round";
  lineChart($("chart-accuracy"), pts.map((p) => [p[state.xaxis], p.acc]), { xlabel, ylabel: "accuracy", yMin: 0, yMax: 1, color: "#1f6feb" });
  lineChart($("chart-loss"), pts.map((p) => [p[state.xaxis], p.loss]), { xlabel, ylabel: "loss", yMin: 0, color: "#c2410c" });
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text != null) e.textContent = text;
  return e;
}

function niceTicks(lo, hi, n) {
  if (hi <= lo) hi = lo + 1;
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((x) => x >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(10));
  return out;
}

// lineChart draws [x, y] points as an inline SVG line chart with axes.
function lineChart(svg, pts, o) {
  const W = 480, H = 240, L = 62, R = 14, T = 12, B = 40;
  svg.replaceChildren();
  pts = pts.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
  svg.setAttribute("data-points", String(pts.length));
  if (!pts.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "muted" }, "No finished round yet"));
    return;
  }
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  const pad = (y1 - y0) * 0.15 || Math.abs(y1) * 0.05 || 0.1;
  y0 = Math.max(o.yMin != null ? o.yMin : -Infinity, y0 - pad);
  y1 = Math.min(o.yMax != null ? o.yMax : Infinity, y1 + pad);
  if (y1 <= y0) y1 = y0 + 0.1;
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  const X = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const Y = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  for (const v of niceTicks(y0, y1, 4)) {
    svg.append(s("line", { x1: L, x2: W - R, y1: Y(v), y2: Y(v), class: "grid" }));
    svg.append(s("text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end", class: "tick" }, String(+v.toPrecision(4))));
  }
  for (const v of niceTicks(x0, x1, 6)) {
    if (o.xlabel === "round" && v !== Math.round(v)) continue;
    svg.append(s("text", { x: X(v), y: H - B + 16, "text-anchor": "middle", class: "tick" }, String(v)));
  }
  svg.append(s("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  svg.append(s("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  svg.append(s("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", class: "label" }, o.xlabel));
  svg.append(s("text", { x: 11, y: (T + H - B) / 2, "text-anchor": "middle", class: "label", transform: `rotate(-90 11 ${(T + H - B) / 2})` }, o.ylabel));
  svg.append(s("polyline", { points: pts.map((p) => X(p[0]) + "," + Y(p[1])).join(" "), fill: "none", stroke: o.color, "stroke-width": 2 }));
  for (const p of pts) {
    const c = s("circle", { cx: X(p[0]), cy: Y(p[1]), r: 3.5, fill: o.color, class: "pt" });
    c.append(s("title", {}, `${o.xlabel} ${fmtNum(p[0], o.xlabel === "round" ? 0 : 1)}: ${o.ylabel} ${fmtNum(p[1], 4)}`));
    svg.append(c);
  }
  svg.setAttribute("aria-label", `${o.ylabel} over ${pts.length} rounds, last ${fmtNum(pts[pts.length - 1][1], 4)}`);
}

async function stopRun(ev) {
  ev.preventDefault();
  show("stop-error", "");
  try {
    const reason = $("stop-reason").value.trim();
    const run = await api("POST", "/v1/rounds/stop", { reason });
    show("banner", "");
    $("stop-reason").value = "";
    await loadRuns();
    show("stop-error", "");
    $("run-current").prepend(card("Stopped", "run " + run.run_id, run.reason || ""));
  } catch (e) {
    if (e.status !== 401) show("stop-error", "Stop failed: " + e.message);
  }
}

// ---- new run ----

async function loadNew() {
  const viewer = !can("operator");
  show("new-role", viewer ? `Your credential (${state.who.name}, role ${state.who.role}) cannot start runs: that needs the operator or admin role.` : "");
  $("run-submit").disabled = viewer;
  const sel = $("f-model");
  if (!sel.options.length) {
    const m = await api("GET", "/v1/models");
    for (const mod of m.modules || []) sel.append(el("option", { value: mod.name }, mod.name + " (" + mod.params + " parameters)"));
  }
}

// The form's only checks are that numbers are numbers (JSON cannot carry
// anything else); every rule about runs is the API's, shown verbatim.
function formRequest() {
  const f = $("run-form");
  const req = { model: f.model.value, strategy: f.strategy.value, codec: f.codec.value };
  const num = (name, key, scale, int) => {
    const raw = f[name].value.trim();
    if (raw === "") return;
    const v = Number(raw);
    if (!Number.isFinite(v) || (int && !Number.isInteger(v))) {
      const label = document.querySelector(`label[for="f-${name}"]`).textContent;
      throw new APIError(400, `${label}: "${raw}" is not ${int ? "a whole number" : "a number"}`);
    }
    req[key || name] = scale ? Math.round(v * scale) : v;
  };
  for (const n of ["rounds", "min_clients", "max_clients", "quorum", "epochs", "batch_size", "seed"]) num(n, null, 0, true);
  for (const n of ["target_accuracy", "fraction", "learning_rate", "topk_fraction", "dp_noise_multiplier", "dp_clip"]) num(n, null, 0, false);
  num("deadline_s", "deadline_ms", 1000, false);
  const tags = f.tags.value.trim();
  if (tags) {
    req.tags = {};
    for (const kv of tags.split(",")) {
      const [k, ...v] = kv.split("=");
      if (!k.trim() || !v.length) throw new APIError(400, `Device tags: "${kv.trim()}" is not key=value`);
      req.tags[k.trim()] = v.join("=").trim();
    }
  }
  for (const n of ["server_eval", "federated_eval", "secure", "reinit"]) if (f[n].checked) req[n] = true;
  return req;
}

async function startRun(ev) {
  ev.preventDefault();
  show("run-error", "");
  let req;
  try { req = formRequest(); } catch (e) { show("run-error", "Not started: " + e.message); return; }
  $("run-submit").disabled = true;
  try {
    await api("POST", "/v1/rounds", req);
    location.hash = "#runs";
  } catch (e) {
    if (e.status !== 401) show("run-error", "Not started: " + e.message);
  } finally {
    $("run-submit").disabled = !can("operator");
  }
}

// ---- models ----

async function loadModels() {
  const [m, st] = await Promise.all([api("GET", "/v1/models"), api("GET", "/v1/rounds/status")]);
  state.models = m;
  const byV = new Map((m.versions || []).map((v) => [v.version, v]));
  const lineage = (v) => {
    const chain = [];
    let x = v;
    for (; x && chain.length < 6; x = byV.get(x.parent_version)) chain.push("v" + x.version);
    if (x) chain.push("…");
    return chain.join(" ← ");
  };
  const versions = (m.versions || []).slice().sort((a, b) => b.version - a.version);
  fill("models-versions", versions.map((v) => {
    const serving = v.version === st.model_version;
    const act = el("td", { class: "action" });
    if (serving) act.append(el("span", { class: "badge" }, "serving"));
    else if (can("operator")) act.append(el("button", { type: "button", class: "small", "data-version": String(v.version), onclick: () => confirmRollback(act, v) }, "Roll back to v" + v.version));
    return [
      "v" + v.version, v.model, lineage(v), v.strategy === "rollback" ? "-" : (v.run_id ? v.run_id + " / " + v.round_id : "initial"),
      v.strategy || "-", v.participants || "-", v.train_accuracy ? fmtNum(v.train_accuracy, 4) : "-", fmtTime(v.created_unix_ms), act,
    ];
  }), "No versions yet: a run's first round creates one.");
  fill("models-modules", (m.modules || []).map((x) => [
    x.name + (x.builtin ? " (built in)" : ""), x.params, (x.input || []).join("×"), x.classes, x.bytes, (x.wasm_hash || "").slice(0, 16) + "…",
  ]), "No modules.");
}

function confirmRollback(cell, v) {
  clearInterval(state.timer);
  state.timer = null;
  cell.replaceChildren(
    el("span", {}, "Publish v" + v.version + "'s weights as a new version? "),
    el("button", { type: "button", class: "small danger", onclick: () => rollback(v.version) }, "Confirm rollback"),
    el("button", { type: "button", class: "small", onclick: () => route() }, "Cancel"));
}

async function rollback(version) {
  show("models-msg", "");
  show("models-error", "");
  try {
    const nv = await api("POST", "/v1/models/rollback", { version });
    show("models-msg", `Published v${nv.version} with the weights of v${version}; agents install it next.`);
  } catch (e) {
    if (e.status !== 401) show("models-error", "Rollback failed: " + e.message);
  }
  await guarded(loadModels);
  if (!state.timer) state.timer = setInterval(() => guarded(loadModels), 5000);
}

// ---- audit ----

async function loadAudit(dir) {
  const AUDIT_PAGE = Number($("audit-size").value) || 25;
  let entries;
  if (dir === "latest") {
    // The API pages forward from a sequence number; the latest page is the
    // tail of a forward scan.
    let after = 0, all = [];
    for (;;) {
      const page = await api("GET", `/v1/audit?after=${after}&limit=1000`);
      all = all.concat(page).slice(-AUDIT_PAGE);
      if (page.length < 1000) break;
      after = page[page.length - 1].seq;
    }
    entries = all;
  } else if (dir === "older") {
    const after = Math.max(0, state.auditFirst - 1 - AUDIT_PAGE);
    entries = (await api("GET", `/v1/audit?after=${after}&limit=${AUDIT_PAGE}`)).filter((e) => e.seq < state.auditFirst);
  } else {
    entries = await api("GET", `/v1/audit?after=${state.auditLast}&limit=${AUDIT_PAGE}`);
  }
  if (!entries.length && dir !== "latest") { $("audit-range").textContent = dir === "older" ? "No older entries." : "No newer entries."; return; }
  state.auditFirst = entries.length ? entries[0].seq : 0;
  state.auditLast = entries.length ? entries[entries.length - 1].seq : 0;
  $("audit-range").textContent = entries.length ? `Entries ${state.auditFirst} to ${state.auditLast}` : "";
  $("audit-older").disabled = state.auditFirst <= 1;
  fill("audit-table", entries.slice().reverse().map((e) => [e.seq, fmtTime(e.unix_ms), e.actor, e.action, e.target, e.detail]), "The audit log is empty.");
}

// ---- start ----

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("run-form").addEventListener("submit", startRun);
  $("stop-form").addEventListener("submit", stopRun);
  $("signout").addEventListener("click", () => signOut(""));
  $("audit-older").addEventListener("click", () => guarded(() => loadAudit("older")));
  $("audit-newer").addEventListener("click", () => guarded(() => loadAudit("newer")));
  $("audit-latest").addEventListener("click", () => guarded(() => loadAudit("latest")));
  $("audit-size").addEventListener("change", () => guarded(() => loadAudit("latest")));
  for (const r of document.querySelectorAll('input[name="xaxis"]')) r.addEventListener("change", () => { state.xaxis = r.value; drawCharts(); });
  window.addEventListener("hashchange", () => route());
  route();
});
