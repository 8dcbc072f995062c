// weir's web front end: a hash-routed single page on the /api/v1 API. Every chart is a view a
// visualization plugin returned; installed visualizations appear in the navigation by themselves.
import { renderView } from "./views.js";
import { ovsPage } from "./ovs.js";
import { policyPage } from "./policy.js";
import { timelinePage } from "./timeline.js";
import { summaryPage } from "./summary.js";
import { api, bytes, esc, num, tooltip } from "./util.js";

const main = document.getElementById("main");

// ---- routing: the page and its state live in the URL (bookmarkable) -------------------------

function route() {
  const h = location.hash.replace(/^#\/?/, "") || "overview";
  const [path, query] = h.split("?");
  return { parts: path.split("/"), q: new URLSearchParams(query || "") };
}

export function go(page, q) {
  const s = new URLSearchParams(q).toString();
  location.hash = "#/" + page + (s ? "?" + s : "");
}

const RANGES = [["-5m", "last 5 min"], ["-15m", "last 15 min"], ["-1h", "last hour"], ["-6h", "last 6 h"], ["-24h", "last 24 h"], ["-7d", "last 7 d"], ["custom", "custom"]];

/// Filter bar + time range, shared by the flows and view pages. `onApply(q)` gets new params.
function filterBar(q, fields, onApply) {
  const from = q.get("from") || "-15m";
  const custom = !RANGES.some(([v]) => v === from);
  const el = document.createElement("div");
  el.innerHTML = `
    <div class="bar">
      <input id="filter" list="fields" placeholder="filter, e.g. SrcAddr=198.18.0.0/15 and DstPort=443" value="${esc(q.get("filter") || "")}" autocomplete="off" spellcheck="false">
      <datalist id="fields"></datalist>
      <select id="range">${RANGES.map(([v, l]) => `<option value="${v}" ${(v === from || (custom && v === "custom")) ? "selected" : ""}>${l}</option>`).join("")}</select>
      <span id="custom" style="display:${custom ? "inline" : "none"}">
        <input id="from" size="22" value="${esc(custom ? from : "")}" placeholder="from: 2026-01-31T12:00:00Z">
        <input id="to" size="22" value="${esc(q.get("to") || "")}" placeholder="to (default now)">
      </span>
      <button class="primary" id="apply">Apply</button>
    </div>
    <div class="bar quick">
      <span class="muted">quick:</span>
      <button data-f="proto=tcp">TCP</button><button data-f="proto=udp">UDP</button>
      <button data-f="Port=53">DNS</button><button data-f="Port=443 or Port=80">Web</button>
      <button data-f="">clear</button>
    </div>
    <div class="error" id="filter-error"></div>`;
  const input = el.querySelector("#filter");
  // Completion of field names: the datalist offers the filter with its last word completed.
  input.addEventListener("input", () => {
    const v = input.value;
    const m = v.match(/([A-Za-z]*)$/);
    const word = m ? m[1] : "";
    const head = v.slice(0, v.length - word.length);
    el.querySelector("#fields").innerHTML = word
      ? fields.filter((f) => f.toLowerCase().startsWith(word.toLowerCase())).slice(0, 20).map((f) => `<option value="${esc(head + f)}">`).join("")
      : "";
  });
  const range = el.querySelector("#range");
  range.addEventListener("change", () => {
    el.querySelector("#custom").style.display = range.value === "custom" ? "inline" : "none";
  });
  const apply = () => {
    const n = new URLSearchParams(q);
    n.set("filter", input.value);
    if (range.value === "custom") {
      n.set("from", el.querySelector("#from").value || "-1h");
      const to = el.querySelector("#to").value;
      to ? n.set("to", to) : n.delete("to");
    } else {
      n.set("from", range.value);
      n.delete("to");
    }
    n.delete("offset");
    onApply(n);
  };
  el.querySelector("#apply").onclick = apply;
  input.addEventListener("keydown", (e) => { if (e.key === "Enter") apply(); });
  el.querySelectorAll(".quick button").forEach((b) => {
    b.onclick = () => { input.value = b.dataset.f; apply(); };
  });
  return el;
}

/// The agent wants an access token: ask for it (kept for this browser tab only).
function loginForm(message) {
  main.innerHTML = `<h2>Sign in</h2><p class="muted">${esc(message)}</p>
    <form id="login" class="bar"><input id="token" type="password" size="40" placeholder="access token" autocomplete="current-password">
    <button class="primary">Sign in</button></form>`;
  document.getElementById("login").onsubmit = (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("weir-token", document.getElementById("token").value.trim());
    refreshViewsNav().then(render);
  };
}

function showError(e) {
  if (e.status === 401) return loginForm(e.message);
  const box = document.getElementById("filter-error");
  if (!box) { main.insertAdjacentHTML("beforeend", `<div class="error">${esc(e.message)}</div>`); return; }
  // A filter error with a position gets a caret under the offending character.
  const f = document.getElementById("filter");
  if (e.parameter === "filter" && e.position != null && f) {
    box.textContent = `${f.value}\n${" ".repeat(e.position)}^ ${e.message}`;
  } else {
    box.textContent = e.message;
  }
}

let fieldsCache = null;
async function fieldNames() {
  if (!fieldsCache) {
    const v = await api("/api/v1/fields");
    fieldsCache = (v.fields || []).map((f) => f.name);
  }
  return fieldsCache;
}

// ---- flows -----------------------------------------------------------------------------------

const COLUMNS = [
  ["TimeFlowEndMs", "time"], ["SrcAddr", "src"], ["SrcPort", "sport"], ["DstAddr", "dst"], ["DstPort", "dport"],
  ["Proto", "proto"], ["Interface", "interface"], ["IfDirection", "dir"], ["Bytes", "bytes"], ["Packets", "packets"], ["Flags", "flags"],
];
let liveAbort = null;

// Labels and formats of the optional columns (drops, RTT, DNS, who, dedup, cgroup); a column
// is shown when a flow on the page has a value for it.
const EXTRA = {
  PktDropPackets: ["drops"], PktDropBytes: ["drop bytes"],
  PktDropLatestDropCause: ["drop cause", (v) => String(v).replace(/^SKB_DROP_REASON_/, "")],
  TimeFlowRttNs: ["rtt", (v) => (v / 1e6).toFixed(3) + " ms"],
  DnsName: ["dns name"], DnsQType: ["qtype"], DnsFlagsResponseCode: ["rcode"],
  DnsLatencyUs: ["dns latency", (v) => (v / 1e3).toFixed(3) + " ms"],
  SrcK8S_Name: ["src name"], SrcK8S_Namespace: ["src namespace"], SrcK8S_OwnerName: ["src workload"],
  DstK8S_Name: ["dst name"], DstK8S_Namespace: ["dst namespace"], DstK8S_OwnerName: ["dst workload"],
  Interfaces: ["seen on"], Cgroup: ["cgroup"], ContainerId: ["container", (v) => String(v).slice(0, 12)],
};
const HIDDEN = /^(TimeFlowStartMs|TimeReceived|Etype|SrcMac|DstMac|IcmpType|IcmpCode|Skbs|Sampling|NetNs|Addr|Port|Mac|DnsId|DnsFlags|IfDirections|K8S_.*|.*K8S_(OwnerType|Type|HostName|Zone|Labels))$/;

function extraLabel(k) {
  return EXTRA[k] ? EXTRA[k][0] : k;
}

function extraValue(k, v) {
  const fmt = EXTRA[k] && EXTRA[k][1];
  return fmt && v ? fmt(v) : v;
}

function flowRow(f, extra) {
  const cells = COLUMNS.map(([k]) => {
    let v = f[k];
    if (k === "TimeFlowEndMs") v = new Date(v).toISOString().replace("T", " ").slice(0, 23);
    if (k === "IfDirection") v = v === 0 ? "ingress" : "egress";
    if (k === "Proto") v = { 6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6" }[v] ?? v;
    const cls = typeof f[k] === "number" && k !== "TimeFlowEndMs" ? "num" : "";
    return `<td class="${cls}">${esc(v ?? "")}</td>`;
  }).join("");
  const extras = extra.map((k) => `<td class="${typeof f[k] === "number" ? "num" : ""}">${esc(f[k] ? extraValue(k, f[k]) : "")}</td>`).join("");
  return `<tr class="flow">${cells}${extras}</tr>`;
}

async function flowsPage(q) {
  const fields = await fieldNames();
  main.innerHTML = `<h2>Flows</h2>`;
  main.appendChild(filterBar(q, fields, (n) => go("flows", n)));
  const sort = q.get("sort") || "-TimeFlowEndMs";
  const limit = Number(q.get("limit") || 50);
  const offset = Number(q.get("offset") || 0);
  main.insertAdjacentHTML("beforeend", `
    <div class="bar"><label><input type="checkbox" id="live" ${q.get("live") === "1" ? "checked" : ""}> live</label>
    <span id="count" class="muted"></span>
    <button id="prev">&lt; prev</button><button id="next">next &gt;</button></div>
    <table id="flows"><thead></thead><tbody></tbody></table><pre class="detail" id="detail" hidden></pre>`);
  // Optional fields (drops, RTT, DNS, enrichment, ...) get a column when a flow has them.
  const candidates = fields.filter((f) => !COLUMNS.some(([k]) => k === f) && !HIDDEN.test(f));
  const extra = [];
  const header = () => {
    const head = [...COLUMNS.map(([k, l]) => [k, l]), ...extra.map((k) => [k, extraLabel(k)])];
    main.querySelector("#flows thead").innerHTML = "<tr>" + head.map(([k, l]) => {
      const mark = sort === k ? " ▲" : sort === "-" + k ? " ▼" : "";
      return `<th data-k="${k}" title="${esc(k)}">${esc(l)}${mark}</th>`;
    }).join("") + "</tr>";
    main.querySelectorAll("th").forEach((th) => {
      th.onclick = () => {
        const k = th.dataset.k;
        const n = new URLSearchParams(q);
        n.set("sort", sort === "-" + k ? k : "-" + k);
        go("flows", n);
      };
    });
  };
  header();
  const body = main.querySelector("#flows tbody");
  const rows = [];
  const detail = main.querySelector("#detail");
  body.onclick = (e) => {
    const tr = e.target.closest("tr");
    if (!tr) return;
    const i = [...body.children].indexOf(tr);
    detail.hidden = false;
    detail.textContent = JSON.stringify(rows[i], null, 2);
    // From a captured conversation to the datapath flows that carried it (when OVS is there).
    const f = rows[i];
    const link = document.createElement("a");
    link.id = "ovs-path-link";
    link.textContent = "datapath path in OVS →";
    link.href = "#/ovs?" + new URLSearchParams({ tab: "path", SrcAddr: f.SrcAddr, DstAddr: f.DstAddr, Proto: f.Proto, SrcPort: f.SrcPort, DstPort: f.DstPort, Interface: f.Interface }).toString();
    detail.prepend(link, document.createElement("br"));
  };
  const params = { filter: q.get("filter") || "", from: q.get("from") || "-15m", sort, limit, offset };
  if (q.get("to")) params.to = q.get("to");
  try {
    const v = await api("/api/v1/flows", params);
    rows.push(...v.flows);
    extra.push(...candidates.filter((k) => v.flows.some((f) => f[k])));
    header();
    body.innerHTML = v.flows.map((f) => flowRow(f, extra)).join("");
    main.querySelector("#count").textContent = `${num(offset + 1)}–${num(offset + v.flows.length)} of ${num(v.total)}`;
    main.querySelector("#prev").disabled = offset === 0;
    main.querySelector("#next").disabled = offset + limit >= v.total;
  } catch (e) {
    showError(e);
  }
  const page = (d) => { const n = new URLSearchParams(q); n.set("offset", Math.max(0, offset + d)); go("flows", n); };
  main.querySelector("#prev").onclick = () => page(-limit);
  main.querySelector("#next").onclick = () => page(limit);
  main.querySelector("#live").onchange = (e) => { const n = new URLSearchParams(q); e.target.checked ? n.set("live", "1") : n.delete("live"); go("flows", n); };
  if (q.get("live") === "1") follow(q.get("filter") || "", body, rows, extra);
}

/// Live mode: tails /api/v1/flows/follow (NDJSON) and puts new flows on top.
async function follow(filter, body, rows, extra) {
  liveAbort = new AbortController();
  try {
    const r = await fetch("/api/v1/flows/follow?filter=" + encodeURIComponent(filter), { signal: liveAbort.signal });
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line) continue;
        const f = JSON.parse(line);
        rows.unshift(f);
        body.insertAdjacentHTML("afterbegin", flowRow(f, extra));
        while (body.children.length > 500) { body.lastElementChild.remove(); rows.pop(); }
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") showError(e);
  }
}

// ---- views drawn by visualization plugins ------------------------------------------------------

let visualizations = [];

async function refreshViewsNav() {
  try {
    const v = await api("/api/v1/plugins");
    visualizations = v.plugins
      .filter((p) => p.installed.manifest.kind === "visualization" && p.loaded && p.loaded.state.state === "enabled")
      .map((p) => p.installed.manifest);
  } catch {
    visualizations = [];
  }
  document.getElementById("views-nav").innerHTML = visualizations
    .map((m) => `<a href="#/view/${encodeURIComponent(m.name)}" data-page="view/${esc(m.name)}" title="${esc(m.description)}">${esc(m.name)}</a>`)
    .join("");
}

const DEFAULT_GROUPS = { sankey: "SrcAddr,DstPort,DstAddr" };

async function viewPage(name, q) {
  const fields = await fieldNames();
  const m = visualizations.find((v) => v.name === name);
  main.innerHTML = `<h2>${esc(name)} <span class="muted">${esc(m ? m.description : "")}</span></h2>`;
  main.appendChild(filterBar(q, fields, (n) => go("view/" + name, n)));
  // Each plugin has its own default grouping; only what the user chose is sent.
  const groupBy = q.get("group_by") || DEFAULT_GROUPS[name] || "";
  const metric = q.get("metric") || "bytes";
  main.insertAdjacentHTML("beforeend", `
    <div class="bar"><label>group by <input id="group_by" size="34" value="${esc(groupBy)}" placeholder="plugin default"></label>
    <label>size by <select id="metric">${["bytes", "packets", "flows"].map((x) => `<option ${x === metric ? "selected" : ""}>${x}</option>`).join("")}</select></label>
    <label>top <input id="top" size="5" value="${esc(q.get("top") || "")}" placeholder="default"></label>
    <span id="layout-choice"></span></div>
    <div id="view" class="chart"></div>`);
  const update = () => {
    const n = new URLSearchParams(q);
    const g = main.querySelector("#group_by").value.trim();
    g ? n.set("group_by", g) : n.delete("group_by");
    n.set("metric", main.querySelector("#metric").value);
    const top = main.querySelector("#top").value;
    top ? n.set("top", top) : n.delete("top");
    go("view/" + name, n);
  };
  main.querySelector("#metric").onchange = update;
  main.querySelector("#group_by").addEventListener("keydown", (e) => { if (e.key === "Enter") update(); });
  main.querySelector("#top").addEventListener("keydown", (e) => { if (e.key === "Enter") update(); });
  const now = Date.now();
  const body = { filter: q.get("filter") || "", params: { metric } };
  if (groupBy) body.params.group_by = groupBy;
  if (q.get("top")) body.params.top = q.get("top");
  try {
    const range = await resolveRange(q.get("from") || "-15m", q.get("to"), now);
    Object.assign(body, range);
    const v = await api(`/api/v1/plugins/${encodeURIComponent(name)}/run`, null, body);
    const fieldsOf = (groupBy || "SrcAddr,DstAddr").split(",").map((s) => s.trim());
    renderView(document.getElementById("view"), v.result.view, {
      fields: fieldsOf,
      layout: q.get("layout"),
      onLayout: (l) => { const n = new URLSearchParams(q); n.set("layout", l); go("view/" + name, n); },
      // Clicking a node or link shows its flows.
      onSelect: (filter) => {
        const base = q.get("filter");
        const n = new URLSearchParams({ filter: base ? `(${base}) and ${filter}` : filter, from: q.get("from") || "-15m" });
        if (q.get("to")) n.set("to", q.get("to"));
        go("flows", n);
      },
    });
  } catch (e) {
    showError(e);
  }
}

/// A time range as Unix ms, parsed the way the API parses it (relative like -15m, or absolute).
async function resolveRange(from, to, now) {
  const rel = (t) => {
    const m = /^-?(\d+)(ms|s|m|h|d|w)$/.exec(t);
    if (!m) return null;
    const unit = { ms: 1, s: 1e3, m: 6e4, h: 36e5, d: 864e5, w: 6048e5 }[m[2]];
    return now - Number(m[1]) * unit;
  };
  const abs = (t) => {
    if (!t || t === "now") return now;
    const r = rel(t);
    if (r != null) return r;
    if (/^\d+$/.test(t)) return t.length >= 12 ? Number(t) : Number(t) * 1000;
    const d = Date.parse(t);
    if (Number.isNaN(d)) throw Object.assign(new Error(`cannot read time '${t}'`), { parameter: "from" });
    return d;
  };
  return { from_ms: abs(from), to_ms: abs(to) };
}

// ---- overview --------------------------------------------------------------------------------

async function overviewPage(q) {
  const fields = await fieldNames();
  main.innerHTML = `<h2>Overview</h2>`;
  main.appendChild(filterBar(q, fields, (n) => go("overview", n)));
  main.insertAdjacentHTML("beforeend", `<div class="cards" id="cards"></div>
    <div class="grid"><div class="chart" id="ts-bytes"></div><div class="chart" id="ts-packets"></div>
    <div class="chart" id="ts-flows"></div><div class="chart" id="talkers"></div><div class="chart" id="ports"></div></div>`);
  const base = { filter: q.get("filter") || "", from: q.get("from") || "-15m" };
  if (q.get("to")) base.to = q.get("to");
  try {
    const [talkers, ports] = await Promise.all([
      api("/api/v1/flows/aggregate", { ...base, group_by: "SrcAddr,DstAddr", metric: "bytes", top: 10 }),
      api("/api/v1/flows/aggregate", { ...base, group_by: "DstPort", metric: "bytes", top: 10 }),
    ]);
    const t = talkers.total;
    document.getElementById("cards").innerHTML = [["bytes", bytes(t.bytes)], ["packets", num(t.packets)], ["flows", num(t.flows)]]
      .map(([k, v]) => `<div class="card"><div class="muted">${k}</div><div class="v" id="total-${k}">${v}</div></div>`).join("");
    const table = (el, title, cols, groups) => {
      document.getElementById(el).innerHTML = `<h3>${title}</h3><table><tr>${cols.map((c) => `<th>${c}</th>`).join("")}<th class="num">bytes</th></tr>` +
        groups.map((g) => `<tr>${cols.map((c) => `<td>${esc(g.key[c])}</td>`).join("")}<td class="num">${bytes(g.bytes)}</td></tr>`).join("") + "</table>";
    };
    table("talkers", "Top talkers", ["SrcAddr", "DstAddr"], talkers.groups);
    table("ports", "Top destination ports", ["DstPort"], ports.groups);
    const range = await resolveRange(base.from, base.to, Date.now());
    const span = Math.max(1, range.to_ms - range.from_ms);
    const step = Math.max(1000, Math.ceil(span / 60 / 1000) * 1000);
    // Alert state changes in the range mark the charts (no alerting: no marks).
    const history = await api("/api/v1/alerts/history", { limit: 500 }).catch(() => ({ history: [] }));
    const marks = (history.history || [])
      .filter((a) => a.state !== "pending")
      .map((a) => {
        const t = a.state === "resolved" ? a.resolved_ms : a.fired_ms;
        return { time_ms: t, color: a.state === "resolved" ? "#16a34a" : "#dc2626", label: `${a.name} ${a.state} ${new Date(t).toISOString()}` };
      })
      .filter((m) => m.time_ms >= range.from_ms && m.time_ms <= range.to_ms);
    for (const metric of ["bytes", "packets", "flows"]) {
      const ts = await api("/api/v1/flows/timeseries", { ...base, metric, step: step + "ms", top: 1 });
      renderView(document.getElementById("ts-" + metric), {
        type: "timeseries",
        unit: metric,
        series: (ts.series || []).map((s) => ({ name: metric, points: s.points.map((p) => [p[0], p[1]]) })),
        range: [range.from_ms, range.to_ms],
        marks,
      }, {});
    }
  } catch (e) {
    showError(e);
  }
}

// ---- alerts ----------------------------------------------------------------------------------

function alertRows(list, withState) {
  return list.map((a) => {
    const t = a.state === "resolved" ? a.resolved_ms : a.state === "firing" ? a.fired_ms : a.since_ms;
    const labels = Object.entries(a.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
    return `<tr class="alert ${esc(a.state)}">${withState ? `<td>${esc(a.state)}</td>` : ""}<td>${esc(new Date(t).toISOString().replace("T", " ").slice(0, 19))}</td>
      <td>${esc(a.severity)}</td><td>${esc(a.name)}</td><td>${esc(a.rule)}</td><td>${esc(labels)}</td>
      <td>${esc(a.summary)}${a.silenced ? ' <span class="muted">(silenced)</span>' : ""}</td></tr>`;
  }).join("");
}

async function alertsPage() {
  main.innerHTML = `<h2>Alerts</h2>
    <div class="bar"><button id="evaluate">Evaluate rules now</button><span id="queued" class="muted"></span></div>
    <div class="error" id="filter-error"></div>
    <div class="error" id="rule-errors"></div>
    <h3>Firing</h3><table id="firing"><tr><th>since</th><th>severity</th><th>alert</th><th>rule</th><th>labels</th><th>summary</th></tr></table>
    <h3>Pending</h3><table id="pending"><tr><th>since</th><th>severity</th><th>alert</th><th>rule</th><th>labels</th><th>summary</th></tr></table>
    <h3>Silences</h3>
    <div class="bar"><input id="matchers" size="40" placeholder="label=value, alertname=..., rule=..."><input id="duration" size="6" value="1h"><input id="comment" size="24" placeholder="comment"><button id="silence">Silence</button></div>
    <table id="silences"><tr><th>id</th><th>matchers</th><th>until</th><th>comment</th><th></th></tr></table>
    <h3>History</h3><table id="history"><tr><th>state</th><th>at</th><th>severity</th><th>alert</th><th>rule</th><th>labels</th><th>summary</th></tr></table>`;
  const refresh = async () => {
    const [v, h] = await Promise.all([api("/api/v1/alerts"), api("/api/v1/alerts/history", { limit: 200 })]);
    const head = (id) => main.querySelector(`#${id} tr`).outerHTML;
    main.querySelector("#firing").innerHTML = head("firing") + alertRows(v.active.filter((a) => a.state === "firing"), false);
    main.querySelector("#pending").innerHTML = head("pending") + alertRows(v.active.filter((a) => a.state === "pending"), false);
    main.querySelector("#history").innerHTML = head("history") + alertRows(h.history, true);
    main.querySelector("#silences").innerHTML = head("silences") + v.silences.map((s) => `<tr><td>${s.id}</td>
      <td>${esc(Object.entries(s.matchers).map(([k, x]) => `${k}=${x}`).join(", "))}</td>
      <td>${esc(new Date(s.ends_ms).toISOString())}</td><td>${esc(s.comment)}</td>
      <td><button data-unsilence="${s.id}">remove</button></td></tr>`).join("");
    main.querySelector("#queued").textContent = `${v.queued_notifications} notification(s) waiting for delivery`
      + (v.given_up_notifications ? `, ${v.given_up_notifications} given up` : "");
    main.querySelector("#rule-errors").innerHTML = Object.entries(v.rule_errors || {})
      .map(([rule, e]) => `<div>rule ${esc(rule)} failing: ${esc(e)}</div>`).join("");
    main.querySelectorAll("[data-unsilence]").forEach((b) => {
      b.onclick = async () => { await api(`/api/v1/alerts/silences/${b.dataset.unsilence}`, null, null, "DELETE"); await refresh(); };
    });
  };
  main.querySelector("#evaluate").onclick = async () => {
    try { await api("/api/v1/alerts/evaluate", null, {}); await refresh(); } catch (e) { showError(e); }
  };
  main.querySelector("#silence").onclick = async () => {
    const matchers = {};
    for (const part of main.querySelector("#matchers").value.split(",").map((x) => x.trim()).filter(Boolean)) {
      const i = part.indexOf("=");
      if (i > 0) matchers[part.slice(0, i).trim()] = part.slice(i + 1).trim();
    }
    try {
      await api("/api/v1/alerts/silences", null, { matchers, duration: main.querySelector("#duration").value, comment: main.querySelector("#comment").value });
      await refresh();
    } catch (e) { showError(e); }
  };
  try { await refresh(); } catch (e) { showError(e); }
}

// ---- plugins ---------------------------------------------------------------------------------

/** What the grant prompt asks for each scoped capability. */
const SCOPE_PROMPTS = {
  "outbound-http": "Hosts NAME may reach (host:port or host:*)",
  "k8s-objects": "Kubernetes kinds NAME may read (NetworkPolicy, Namespace, ... or *; never Secret)",
  probe: "Where NAME may probe from and to (from:NETNS, from:host, from:*, to:CIDR, to:*)",
  sink: "Destinations NAME may send to (names given with weir agent --sink NAME=URL, or *)",
  "capture-control": "Bounds for NAME's capture changes (rules=N, action=reject|accept|sample, cidr=NET, sampling=MIN-MAX)",
};

/** A capability list with each scoped one's scope: "outbound-http (prom:9090), config". */
function withScopes(caps, scopes) {
  return caps.map((c) => (scopes && scopes[c] ? `${c} (${scopes[c].join(", ") || "nothing"})` : c)).join(", ") || "-";
}

/** Like a phone's permission list: each capability asked, granted or not, with a button to change it. */
function grantButtons(p) {
  const m = p.installed.manifest;
  const asked = [...new Set([...m.capabilities, ...p.installed.granted])];
  return asked.map((c) => p.installed.granted.includes(c)
    ? `<button class="grant" data-a="revoke" data-cap="${esc(c)}" title="revoke ${esc(c)}">${esc(c)} ✕</button>`
    : `<button class="grant" data-a="grant" data-cap="${esc(c)}" title="grant ${esc(c)}">+ ${esc(c)}</button>`).join(" ");
}

async function pluginsPage() {
  main.innerHTML = `<h2>Plugins</h2>
    <div class="bar"><input type="file" id="file" accept=".wasm"><button id="upload">Install file</button>
    <input id="source" size="40" placeholder="oci://registry/repo:tag or bundled:sankey"><button id="install">Install</button></div>
    <div class="error" id="filter-error"></div><div id="list"></div>`;
  const refresh = async () => {
    const v = await api("/api/v1/plugins");
    const rows = v.plugins.map((p) => {
      const m = p.installed.manifest;
      const state = !p.installed.enabled ? "disabled" : p.loaded ? (p.loaded.state.state === "enabled" ? "enabled" : "failing") : "error";
      const errors = [...(p.loaded ? p.loaded.recent_errors : []), ...(p.load_error ? [p.load_error] : [])];
      return `<tr data-name="${esc(m.name)}"><td>${esc(m.name)}</td><td>${esc(m.version)}</td><td>${esc(m.kind)}</td>
        <td class="state-${state}">${state}</td><td>${esc(withScopes(m.capabilities, m.scopes))}</td><td>${esc(withScopes(p.installed.granted, p.installed.scopes))}<br>${grantButtons(p)}</td>
        <td>${m.limits.memory_mb} MiB, ${m.limits.timeout_ms} ms</td><td>${p.loaded ? num(p.loaded.calls) + " / " + num(p.loaded.failures) : "-"}</td>
        <td class="muted">${esc(errors.slice(-1)[0] || "")}</td>
        <td><button data-a="${p.installed.enabled ? "disable" : "enable"}">${p.installed.enabled ? "disable" : "enable"}</button> <button data-a="remove">remove</button></td></tr>`;
    }).join("");
    document.getElementById("list").innerHTML = `<table><tr><th>name</th><th>version</th><th>kind</th><th>state</th><th>requested</th><th>granted</th><th>limits</th><th>calls / failures</th><th>last error</th><th></th></tr>${rows}</table>
      <p class="muted">bundled with this binary: ${esc((v.bundled || []).join(", "))}</p>`;
    document.querySelectorAll("#list button").forEach((b) => {
      b.onclick = async () => {
        const name = b.closest("tr").dataset.name;
        try {
          if (b.dataset.a === "remove") await api(`/api/v1/plugins/${encodeURIComponent(name)}`, null, null, "DELETE");
          else if (b.dataset.a === "revoke") await api(`/api/v1/plugins/${encodeURIComponent(name)}/grants`, null, { revoke: b.dataset.cap });
          else if (b.dataset.a === "grant") {
            const body = { grant: b.dataset.cap };
            const ask = SCOPE_PROMPTS[b.dataset.cap];
            if (ask) {
              const asked = (v.plugins.find((x) => x.installed.manifest.name === name).installed.manifest.scopes || {})[b.dataset.cap] || [];
              const answer = window.prompt(`${ask.replace("NAME", name)}, comma-separated`, asked.join(", "));
              if (answer === null) return;
              body.scope = answer.split(",").map((x) => x.trim()).filter((x) => x);
            }
            await api(`/api/v1/plugins/${encodeURIComponent(name)}/grants`, null, body);
          } else await api(`/api/v1/plugins/${encodeURIComponent(name)}/${b.dataset.a}`, null, {});
          await refresh();
          await refreshViewsNav();
        } catch (e) { showError(e); }
      };
    });
  };
  const done = async (p) => {
    try { await p; document.getElementById("filter-error").textContent = ""; await refresh(); await refreshViewsNav(); } catch (e) { showError(e); }
  };
  document.getElementById("upload").onclick = () => {
    const f = document.getElementById("file").files[0];
    if (!f) return showError(new Error("choose a .wasm file first"));
    done(f.arrayBuffer().then((buf) => api("/api/v1/plugins", null, new Uint8Array(buf))));
  };
  document.getElementById("install").onclick = () => {
    const s = document.getElementById("source").value.trim();
    done(api("/api/v1/plugins", { source: s }, new Uint8Array()));
  };
  await refresh();
}

// ---- status ----------------------------------------------------------------------------------

async function statusPage() {
  main.innerHTML = `<h2>Status</h2><div id="features"></div><div id="status"></div>`;
  const v = await api("/api/v1/status");
  const cap = v.capture;
  if (cap) {
    // Capture features first: which kernel hooks are on, and why one is off.
    document.getElementById("features").innerHTML = `<h3>capture features</h3><table id="feature-table">${
      (cap.features || []).map((f) => `<tr class="${f.enabled ? "on" : "off"}"><td>${f.enabled ? "on" : "off"}</td><td>${esc(f.name)}</td><td>${esc(f.detail)}</td></tr>`).join("")
    }</table><h3>filter rules</h3><p class="muted">${(cap.filters || []).length ? "" : "none: every packet is captured (weir filter set ...)"}</p><table>${
      (cap.filters || []).map((r, i) => `<tr><td>${i + 1}</td><td>${esc(JSON.stringify(r))}</td></tr>`).join("")
    }</table>`;
  }
  const section = (title, obj) => `<h3>${esc(title)}</h3><table>${Object.entries(obj || {}).map(([k, x]) =>
    `<tr><td>${esc(k)}</td><td>${esc(typeof x === "object" ? JSON.stringify(x) : x)}</td></tr>`).join("")}</table>`;
  document.getElementById("status").innerHTML = Object.entries(v)
    .map(([k, x]) => (x && typeof x === "object" && !Array.isArray(x) ? section(k, x) : section(k, { [k]: x })))
    .join("");
}

// ---- shell -----------------------------------------------------------------------------------

async function render() {
  if (liveAbort) { liveAbort.abort(); liveAbort = null; }
  tooltip.hide();
  const { parts, q } = route();
  const page = parts[0];
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === parts.join("/")));
  try {
    if (page === "flows") await flowsPage(q);
    else if (page === "view") await viewPage(decodeURIComponent(parts[1] || ""), q);
    else if (page === "plugins") await pluginsPage();
    else if (page === "alerts") await alertsPage();
    else if (page === "status") await statusPage();
    else if (page === "ovs") await ovsPage(main, q, go);
    else if (page === "policies") await policyPage(main, q, go);
    else if (page === "timeline") await timelinePage(main, q, go);
    else if (page === "summary") await summaryPage(main, q, go);
    else await overviewPage(q);
  } catch (e) {
    showError(e);
  }
  document.body.dataset.ready = location.hash || "#/overview";
}

// A replayed incident (`weir incident open`) says so on every page.
async function replayBanner() {
  try {
    const v = await api("/api/v1/status");
    if (!v || !v.replay) return;
    const b = document.createElement("div");
    b.id = "replay-banner";
    b.className = "banner";
    b.textContent = `Replay of ${v.replay.incident}: read-only, the clock stopped at ${new Date(v.replay.clock_ms).toISOString()}`;
    document.querySelector("header").after(b);
  } catch { /* the login form or the page's own error says what is wrong */ }
}

window.addEventListener("hashchange", render);
replayBanner();
refreshViewsNav().then(render);
