// The Summary page, pktvisor-like: a summarizer's sketches (the bundled edge-summary: Apache
// DataSketches over every flow, sampled out of storage or not) as top-N tables, cardinalities,
// spread (scan) tables and quantiles per window. The summarizer, the top-N dimension and
// metric, the quantile metric and group, and the window are in the URL.
import { renderView } from "./views.js";
import { api, esc, num } from "./util.js";

const DIMENSIONS = ["talkers", "conversations", "ports", "workloads", "dns"];
const METRICS = ["bytes", "packets", "flows"];
const QUANTILES = ["rtt_us", "dns_latency_us", "flow_bytes", "duration_ms"];

const iso = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");

export async function summaryPage(main, q, go) {
  const nav = (changes) => {
    const n = new URLSearchParams(q);
    for (const [k, v] of Object.entries(changes)) (v ? n.set(k, v) : n.delete(k));
    go("summary", n);
  };
  main.innerHTML = `<h2>Summary</h2><div class="error" id="sum-error"></div><div id="sum-body"></div>
    <section><h3>Storage sampling</h3><div id="sum-sampling"></div></section>`;
  const err = main.querySelector("#sum-error");
  await samplingSection(main.querySelector("#sum-sampling"));
  const list = await api("/api/v1/plugins");
  const names = (list.plugins || [])
    .filter((p) => p.installed.manifest.kind === "summarizer" && p.installed.enabled)
    .map((p) => p.installed.manifest.name);
  if (!names.length) {
    main.querySelector("#sum-body").innerHTML = `<p class="muted">No summarizer is installed. The bundled one keeps
      top-N, cardinality and quantile sketches over every flow:
      <code>weir plugin install bundled:edge-summary</code>.</p>`;
    return;
  }
  const name = names.includes(q.get("plugin")) ? q.get("plugin") : names[0];
  const dim = DIMENSIONS.includes(q.get("dim")) ? q.get("dim") : "talkers";
  const metric = METRICS.includes(q.get("metric")) ? q.get("metric") : "bytes";
  const qm = QUANTILES.includes(q.get("q")) ? q.get("q") : "flow_bytes";
  const group = q.get("group") || "";
  const win = q.get("window") || "";
  const run = (query, window) =>
    api(`/api/v1/plugins/${encodeURIComponent(name)}/run`, null, window ? { query, window_start_ms: Number(window) } : { query });

  let first;
  try {
    first = await run("overview", win);
  } catch (e) {
    err.textContent = e.message;
    return;
  }
  const r = first.result;
  const windows = (r.window_list || []).filter((w) => w.bytes > 0);
  const body = main.querySelector("#sum-body");
  body.innerHTML = `
    <div class="bar">
      <label>summarizer <select id="sum-plugin">${names.map((n) => `<option ${n === name ? "selected" : ""}>${esc(n)}</option>`).join("")}</select></label>
      <label>window <select id="sum-window">
        <option value="">all kept (${windows.length} × ${r.window_secs || 0} s, merged)</option>
        ${windows.map((w) => `<option value="${w.start_ms}" ${String(w.start_ms) === win ? "selected" : ""}>${iso(w.start_ms)}</option>`).join("")}
      </select></label>
      <span class="muted">snapshot ${num(r.snapshot_bytes)} bytes (Apache DataSketches images:
        <a href="/api/v1/plugins/${encodeURIComponent(name)}/snapshot" id="sum-download">download</a>)</span>
    </div>
    <div class="cards">
      <section><h3>Overview</h3><div id="sum-overview"></div></section>
      <section><h3>Distinct</h3><div id="sum-distinct"></div></section>
    </div>
    <section><h3>Top
      <select id="sum-dim">${DIMENSIONS.map((d) => `<option ${d === dim ? "selected" : ""}>${d}</option>`).join("")}</select>
      by <select id="sum-metric">${METRICS.map((m) => `<option ${m === metric ? "selected" : ""}>${m}</option>`).join("")}</select></h3>
      <div id="sum-top"></div></section>
    <div class="cards">
      <section><h3>Sources by distinct peers</h3><div id="sum-peers"></div></section>
      <section><h3>Destinations by distinct ports</h3><div id="sum-ports"></div></section>
    </div>
    <section><h3>Quantiles of
      <select id="sum-q">${QUANTILES.map((m) => `<option ${m === qm ? "selected" : ""}>${m}</option>`).join("")}</select>
      <select id="sum-group"><option value="">all flows</option></select></h3>
      <div id="sum-quantiles"></div>
      <h3>Per window</h3><div id="sum-windows"></div><div id="sum-window-table"></div></section>`;
  body.querySelector("#sum-plugin").onchange = (e) => nav({ plugin: e.target.value, window: "" });
  body.querySelector("#sum-window").onchange = (e) => nav({ window: e.target.value });
  body.querySelector("#sum-dim").onchange = (e) => nav({ dim: e.target.value });
  body.querySelector("#sum-metric").onchange = (e) => nav({ metric: e.target.value });
  body.querySelector("#sum-q").onchange = (e) => nav({ q: e.target.value, group: "" });
  body.querySelector("#sum-group").onchange = (e) => nav({ group: e.target.value });
  renderView(body.querySelector("#sum-overview"), r.view, {});
  const show = async (sel, query) => {
    try {
      const v = await run(query, win);
      renderView(body.querySelector(sel), v.result.view, {});
    } catch (e) {
      body.querySelector(sel).innerHTML = `<div class="error">${esc(e.message)}</div>`;
    }
  };
  const groups = await run("groups", win).then((v) => v.result.view.rows || []).catch(() => []);
  const names2 = [...new Set(groups.filter((g) => g[1] === qm).map((g) => g[0]))];
  body.querySelector("#sum-group").innerHTML = `<option value="">all flows</option>` +
    names2.map((g) => `<option ${g === group ? "selected" : ""}>${esc(g)}</option>`).join("");
  // One after another: a plugin answers a few calls at a time (more are refused with 429).
  for (const [sel, query] of [
    ["#sum-distinct", "distinct"],
    ["#sum-top", `top ${dim} ${metric} 20`],
    ["#sum-peers", "spread peers 10"],
    ["#sum-ports", "spread ports 10"],
    ["#sum-quantiles", `quantiles ${qm}${group && names2.includes(group) ? " " + group : ""}`],
  ]) await show(sel, query);
  // The quantiles over the kept windows, one series per quantile.
  const series = { p50: [], p90: [], p99: [] };
  const perWindow = [];
  for (const w of windows) {
    const row = [iso(w.start_ms), "", "", ""];
    try {
      const v = await run(`quantiles ${qm}${group && names2.includes(group) ? " " + group : ""}`, String(w.start_ms));
      for (const r of v.result.view.rows || []) {
        const at = ["p50", "p90", "p99"].indexOf(r[0]);
        if (at >= 0 && r[1] !== "") {
          series[r[0]].push([w.start_ms, Number(r[1])]);
          row[at + 1] = r[1];
        }
      }
    } catch { /* a window without that group: its cells stay empty */ }
    perWindow.push(row);
  }
  renderView(body.querySelector("#sum-window-table"), {
    type: "table",
    columns: ["Window from", "p50", "p90", "p99"],
    rows: perWindow,
  }, {});
  const el = body.querySelector("#sum-windows");
  el.dataset.windows = String(windows.length);
  if (windows.length) {
    renderView(el, {
      type: "timeseries",
      unit: qm,
      series: Object.entries(series).map(([k, points]) => ({ labels: [["quantile", k]], points })),
    }, {});
  } else {
    el.textContent = "no window yet";
  }
}

/// What storage sampling does now: the controllers' rules (and shadow rules), the counters per
/// class, and the last changes with their reasons (`storage_sampling` of /api/v1/status).
async function samplingSection(el) {
  const st = await api("/api/v1/status");
  const s = st.storage_sampling;
  if (!s || !(s.controllers || []).length) {
    el.innerHTML = `<p class="muted" id="sampling-off">Every flow is stored: no plugin controls storage sampling
      (<code>weir plugin install bundled:sampling-controller --config budget=N</code>; shadow=true to try it first).</p>`;
    return;
  }
  const table = (columns, rows) => `<table><tr>${columns.map((c) => `<th>${esc(c)}</th>`).join("")}</tr>${
    rows.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join("")}</tr>`).join("")}</table>`;
  el.innerHTML = `<p>${num(s.kept)} of ${num(s.offered)} flows offered were stored.</p>` +
    table(["Plugin", "Rules", "Shadow rules", "Changes", "Refused"], s.controllers.map((c) =>
      [c.plugin, c.rules.join("; ") || "none", c.shadow_rules.join("; ") || "none", c.changes, c.refused])) +
    `<h4>Classes</h4>` +
    table(["Class", "Shadow", "Offered", "Kept", "Bytes offered", "Bytes scaled back"], (s.classes || []).map((c) =>
      [c.class, c.shadow ? "yes" : "", num(c.offered_flows), num(c.kept_flows), num(c.offered_bytes), num(c.kept_scaled_bytes)])) +
    `<h4>Changes</h4><div id="sampling-changes">` +
    table(["Time", "By", "Rules", "Reason"], (s.changes || []).slice().reverse().map((c) =>
      [iso(c.time_ms), c.by + (c.shadow ? " (shadow)" : ""), c.rules.join("; ") || "none", c.reason])) + `</div>`;
}
