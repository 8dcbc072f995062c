// The Timeline page: flow volume and every lane (alerts, Kubernetes events, spans, logs,
// plugins' timeline entries, annotations, other records) on one time axis. Lanes can be hidden,
// the range zoomed (drag across the chart, or the buttons) and panned; clicking an item shows
// it with a link to the flows behind it (and its trace). Everything is in the URL.
import { api, bytes, esc, num } from "./util.js";

const W = 1100, LEFT = 150, VOL_H = 90, LANE_H = 34;
const COLORS = { info: "#4c78a8", warning: "#f2a93b", critical: "#d62728" };
const RANGES = [["-15m", "15 min"], ["-1h", "1 h"], ["-6h", "6 h"], ["-24h", "24 h"], ["-7d", "7 d"]];

const iso = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
// Milliseconds kept: a spike's edges are bucket edges, which a relative range puts mid-second.
const isoMs = (ms) => new Date(ms).toISOString();

export async function timelinePage(main, q, go) {
  const hidden = new Set((q.get("hide") || "").split(",").filter(Boolean));
  const nav = (changes) => {
    const n = new URLSearchParams(q);
    for (const [k, v] of Object.entries(changes)) (v ? n.set(k, v) : n.delete(k));
    go("timeline", n);
  };
  main.innerHTML = `
    <h2>Timeline</h2>
    <div class="bar">
      <input id="tl-filter" size="60" placeholder="flows counted, e.g. K8S_Namespace=&quot;shop&quot;" value="${esc(q.get("filter") || "")}" spellcheck="false">
      ${RANGES.map(([v, l]) => `<button data-range="${v}" class="${q.get("from") === v ? "primary" : ""}">${l}</button>`).join("")}
      <button id="tl-in" title="zoom in">+</button><button id="tl-out" title="zoom out">&minus;</button>
      <button id="tl-left" title="earlier">&larr;</button><button id="tl-right" title="later">&rarr;</button>
      <button class="primary" id="tl-apply">Apply</button>
      <button id="tl-export" title="download this window as an incident file (weir incident open FILE replays it)">Export incident</button>
    </div>
    <div class="bar" id="tl-lanes"></div>
    <div class="error" id="tl-error"></div>
    <div id="tl-chart"></div>
    <div id="tl-detail"></div>`;
  const params = { from: q.get("from") || "-1h", filter: q.get("filter") || "" };
  if (q.get("to")) params.to = q.get("to");
  if (q.get("step")) params.step = q.get("step");
  let t;
  try {
    t = await api("/api/v1/timeline", params);
  } catch (e) {
    main.querySelector("#tl-error").textContent = e.message + (e.parameter ? ` (parameter ${e.parameter})` : "");
    return;
  }
  const span = Math.max(1, t.to_ms - t.from_ms);
  // A new range drops a step given in the URL (it was for the old range's width).
  const setRange = (from, to) => nav({ from: iso(Math.round(from)), to: iso(Math.round(to)), sel: "", step: "" });
  main.querySelector("#tl-apply").onclick = () => nav({ filter: main.querySelector("#tl-filter").value });
  main.querySelector("#tl-filter").addEventListener("keydown", (e) => { if (e.key === "Enter") main.querySelector("#tl-apply").click(); });
  main.querySelectorAll("[data-range]").forEach((b) => { b.onclick = () => nav({ from: b.dataset.range, to: "", sel: "", step: "" }); });
  main.querySelector("#tl-in").onclick = () => setRange(t.from_ms + span / 4, t.to_ms - span / 4);
  main.querySelector("#tl-out").onclick = () => setRange(t.from_ms - span / 2, Math.min(Date.now(), t.to_ms + span / 2));
  main.querySelector("#tl-left").onclick = () => setRange(t.from_ms - span / 2, t.to_ms - span / 2);
  main.querySelector("#tl-right").onclick = () => setRange(t.from_ms + span / 2, t.to_ms + span / 2);
  main.querySelector("#tl-export").onclick = () => exportIncident(main, t, q.get("filter") || "");

  main.querySelector("#tl-lanes").innerHTML = `<span class="muted">lanes:</span> ` + t.lanes.map((l) =>
    `<label><input type="checkbox" data-lane="${esc(l.id)}" ${hidden.has(l.id) ? "" : "checked"}> ${esc(l.title)} <span class="muted">(${num(l.total)})</span></label>`).join(" ");
  main.querySelectorAll("[data-lane]").forEach((c) => {
    c.onchange = () => {
      c.checked ? hidden.delete(c.dataset.lane) : hidden.add(c.dataset.lane);
      nav({ hide: [...hidden].join(",") });
    };
  });

  const lanes = t.lanes.filter((l) => !hidden.has(l.id));
  const x = (ms) => LEFT + ((ms - t.from_ms) / span) * (W - LEFT - 10);
  const bw = (W - LEFT - 10) / t.buckets;
  const maxBytes = Math.max(1, ...t.volume.bytes);
  const H = VOL_H + 20 + lanes.length * LANE_H + 20;
  let svg = `<svg id="tl-svg" width="${W}" height="${H}" style="font:11px sans-serif;user-select:none">`;
  // Volume: bytes per bucket, drops marked red.
  svg += `<text x="4" y="14">flows: bytes</text><text x="4" y="28" class="muted">max ${esc(bytes(maxBytes))}</text>`;
  t.volume.bytes.forEach((b, i) => {
    const h = (b / maxBytes) * (VOL_H - 10);
    svg += `<rect class="tl-vol" x="${LEFT + i * bw}" y="${VOL_H - h}" width="${Math.max(1, bw - 1)}" height="${h}" fill="#9ecae1"><title>${esc(iso(t.from_ms + i * t.step_ms))}: ${esc(bytes(b))}, ${num(t.volume.packets[i])} packets, ${num(t.volume.drop_packets[i])} dropped</title></rect>`;
    if (t.volume.drop_packets[i] > 0) svg += `<rect class="tl-drop" x="${LEFT + i * bw}" y="${VOL_H}" width="${Math.max(1, bw - 1)}" height="4" fill="${COLORS.critical}"/>`;
  });
  lanes.forEach((l, li) => {
    const y = VOL_H + 20 + li * LANE_H;
    svg += `<g class="tl-lane" data-lane="${esc(l.id)}"><line x1="0" x2="${W}" y1="${y}" y2="${y}" stroke="#eee"/>`;
    svg += `<text x="4" y="${y + 20}">${esc(l.title)}${l.truncated ? " *" : ""}</text>`;
    l.items.forEach((it, ii) => {
      const cx = x(it.time_ms), color = COLORS[it.severity] || COLORS.info;
      const tip = `<title>${esc(iso(it.time_ms))} ${esc(it.severity)}: ${esc(it.text)}</title>`;
      if (it.end_ms && x(it.end_ms) - cx > 3) {
        svg += `<rect class="tl-item" data-sel="${esc(l.id)}:${ii}" x="${cx}" y="${y + 8}" width="${Math.min(W, x(it.end_ms)) - cx}" height="16" fill="${color}" opacity="0.7" style="cursor:pointer">${tip}</rect>`;
      } else {
        svg += `<circle class="tl-item" data-sel="${esc(l.id)}:${ii}" cx="${cx}" cy="${y + 16}" r="5" fill="${color}" style="cursor:pointer">${tip}</circle>`;
      }
    });
    svg += `</g>`;
  });
  // Axis: five ticks.
  for (let k = 0; k <= 4; k++) {
    const ms = t.from_ms + (span * k) / 4;
    svg += `<text x="${Math.min(W - 110, x(ms))}" y="${H - 4}" class="muted">${esc(iso(ms).slice(5, 19).replace("T", " "))}</text>`;
  }
  svg += `<rect id="tl-brush" y="0" height="${H - 16}" fill="#4c78a8" opacity="0.15" width="0"/></svg>`;
  const chart = main.querySelector("#tl-chart");
  chart.innerHTML = svg;

  // Drag across the chart to zoom into that range.
  const el = chart.querySelector("#tl-svg"), brush = chart.querySelector("#tl-brush");
  let start = null;
  const px = (e) => e.clientX - el.getBoundingClientRect().left;
  el.addEventListener("mousedown", (e) => { if (px(e) > LEFT && !e.target.classList.contains("tl-item")) start = px(e); });
  el.addEventListener("mousemove", (e) => {
    if (start == null) return;
    brush.setAttribute("x", Math.min(start, px(e)));
    brush.setAttribute("width", Math.abs(px(e) - start));
  });
  el.addEventListener("mouseup", (e) => {
    if (start == null) return;
    const [a, b] = [start, px(e)].sort((m, n) => m - n);
    start = null;
    if (b - a < 5) { brush.setAttribute("width", 0); return; }
    const ms = (p) => t.from_ms + ((p - LEFT) / (W - LEFT - 10)) * span;
    setRange(ms(a), ms(b));
  });

  const detail = main.querySelector("#tl-detail");
  const show = (sel) => {
    const [lane, idx] = [sel.slice(0, sel.lastIndexOf(":")), Number(sel.slice(sel.lastIndexOf(":") + 1))];
    const l = t.lanes.find((x) => x.id === lane);
    const it = l && l.items[idx];
    if (!it) { detail.innerHTML = ""; return; }
    const around = { from: iso(it.time_ms - 5 * 60000), to: iso((it.end_ms || it.time_ms) + 5 * 60000) };
    // A spike or gap is the volume itself: its flows are the timeline's, during it, largest first.
    const volume = it.source === "weir" && (it.kind === "spike" || it.kind === "gap");
    const flows = volume
      ? `<a id="tl-flows" href="#/flows?${new URLSearchParams({ from: isoMs(it.time_ms), to: isoMs(it.end_ms || it.time_ms), filter: q.get("filter") || "", sort: "-Bytes" })}">the flows behind it</a>`
      : it.flow_filter
      ? `<a id="tl-flows" href="#/flows?${new URLSearchParams({ ...around, filter: it.flow_filter })}">the flows behind it</a>`
      : `<span class="muted">no flows named</span>`;
    detail.innerHTML = `<h3>${esc(l.title)}</h3><table id="tl-item">
      <tr><td>time</td><td>${esc(iso(it.time_ms))}${it.end_ms ? " to " + esc(iso(it.end_ms)) : ""}</td></tr>
      <tr><td>severity</td><td>${esc(it.severity)}</td></tr>
      <tr><td>what</td><td>${esc(it.text)}</td></tr>
      <tr><td>kind</td><td>${esc(it.kind)} from ${esc(it.source)}${it.seq ? ` (record ${it.seq})` : ""}</td></tr>
      ${it.flow_filter ? `<tr><td>flows</td><td><code>${esc(it.flow_filter)}</code></td></tr>` : ""}
      ${it.trace_id ? `<tr><td>trace</td><td><code id="tl-trace">${esc(it.trace_id)}</code></td></tr>` : ""}
    </table><p>${flows}</p><div id="tl-trace-spans"></div>`;
    if (it.trace_id) {
      api(`/api/v1/traces/${it.trace_id}`).then((tr) => {
        detail.querySelector("#tl-trace-spans").innerHTML = `<table>${tr.spans.map((s) =>
          `<tr><td>${esc(s.service)}</td><td>${esc(s.name)}</td><td>${esc(s.kind)}</td><td>${(s.duration_us / 1000).toFixed(1)} ms</td><td>${esc(s.flows.matched)}</td><td>${
            s.flows.conversations.map((c) => `${esc(c.client)} &rarr; ${esc(c.server)}: ${esc(bytes(c.bytes))}, rtt ${(c.rtt_ns / 1e6).toFixed(2)} ms${c.drop_packets ? `, ${num(c.drop_packets)} dropped` : ""}`).join("<br>")
          }</td></tr>`).join("")}</table>`;
      }).catch(() => {});
    }
  };
  chart.querySelectorAll(".tl-item").forEach((c) => { c.onclick = () => nav({ sel: c.dataset.sel }); });
  if (q.get("sel")) show(q.get("sel"));
}

// Downloads the shown window as an incident file (the token goes in a header, so not a plain link).
async function exportIncident(main, t, filter) {
  const err = main.querySelector("#tl-error");
  err.textContent = "";
  const button = main.querySelector("#tl-export");
  button.disabled = true;
  try {
    const headers = {};
    const token = sessionStorage.getItem("weir-token");
    if (token) headers.authorization = "Bearer " + token;
    const qs = new URLSearchParams({ from: t.from_ms, to: t.to_ms, filter });
    const r = await fetch("/api/v1/incident?" + qs, { headers });
    if (!r.ok) {
      const v = await r.json().catch(() => ({}));
      err.textContent = (v.error && v.error.message) || `${r.status} ${r.statusText}`;
      return;
    }
    const name = (r.headers.get("content-disposition") || "").match(/filename="([^"]+)"/);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await r.blob());
    a.download = name ? name[1] : "weir-incident.tar.gz";
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
  } finally {
    button.disabled = false;
  }
}
