// The OVS page: datapath tree, recirculation graph, OpenFlow tables and churn of a collection,
// the conversations a megaflow covered, and the datapath path of a captured conversation.
import cytoscape from "cytoscape";
import { api, bytes, esc, num, tooltip } from "./util.js";

const TABS = [["tree", "Datapath tree"], ["graph", "Datapath graph"], ["openflow", "OpenFlow"], ["churn", "Over time"], ["path", "Path of a conversation"]];
const isoTime = (ms) => { const d = new Date(ms); return isNaN(d) ? String(ms) : d.toISOString(); };
/// Trees with more nodes than this start collapsed below their roots.
const OPEN_LIMIT = 60;

export async function ovsPage(main, q, go) {
  const tab = q.get("tab") || "tree";
  const st = await api("/api/v1/ovs");
  const cols = (st.collections || []).slice().reverse();
  const coll = q.get("collection") || (cols[0] && cols[0].id) || "";
  main.innerHTML = `
    <h2>Open vSwitch</h2>
    <p class="muted" id="ovs-status">live collection: ${esc(st.status.state)}${st.status.error ? " — " + esc(st.status.error) : ""}; ${num(cols.length)} collections kept</p>
    <div class="bar">
      <select id="ovs-coll">${cols.map((c) => `<option value="${esc(c.id)}" ${c.id === coll ? "selected" : ""}>${esc(isoTime(c.time_ms))} · ${esc(c.origin)} · ${num(c.dp_lines)} flows</option>`).join("")}</select>
      <input id="ovs-filter" size="50" placeholder="filter: recirc_id=0x1 in_port=eth0 ct_state=0x21/0x21 addr=10.0.0.1 action=ct" value="${esc(q.get("filter") || "")}">
      <button class="primary" id="ovs-apply">Apply</button>
      <label class="muted">import a dump: <input type="file" id="ovs-upload"></label>
      <input id="ovs-upload-time" size="22" placeholder="taken at (default now): -10m, 2026-...Z">
    </div>
    <div id="ovs-upload-result" class="muted"></div>
    <div class="bar" id="ovs-tabs">${TABS.map(([t, l]) => `<button data-tab="${t}" class="${t === tab ? "primary" : ""}">${l}</button>`).join("")}</div>
    <div class="error" id="ovs-error"></div>
    <div id="ovs-body"></div>
    <div id="ovs-detail"></div>`;
  const nav = (changes) => {
    const n = new URLSearchParams(q);
    for (const [k, v] of Object.entries(changes)) (v ? n.set(k, v) : n.delete(k));
    go("ovs", n);
  };
  main.querySelector("#ovs-apply").onclick = () => nav({ collection: main.querySelector("#ovs-coll").value, filter: main.querySelector("#ovs-filter").value });
  main.querySelector("#ovs-coll").onchange = () => nav({ collection: main.querySelector("#ovs-coll").value });
  main.querySelectorAll("#ovs-tabs button").forEach((b) => { b.onclick = () => nav({ tab: b.dataset.tab }); });
  // A dump taken elsewhere (dpctl/dump-flows -m or ovs-ofctl dump-flows), stored with its time.
  main.querySelector("#ovs-upload").onchange = async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    const out = main.querySelector("#ovs-upload-result");
    const body = { text: await file.text(), name: file.name };
    const time = main.querySelector("#ovs-upload-time").value.trim();
    if (time) body.time = time;
    try {
      const r = await api("/api/v1/ovs/import", null, body);
      out.textContent = `${file.name}: collection ${r.id}, ${num(r.flows)} datapath flows, ${num(r.openflow)} OpenFlow flows, ${num(r.errors.length)} lines not decoded`;
      nav({ collection: r.id });
    } catch (err) {
      out.textContent = `${file.name}: ${err.message}`;
      out.className = "error";
    }
  };
  const body = main.querySelector("#ovs-body");
  const detail = main.querySelector("#ovs-detail");
  if (!coll && tab !== "path") {
    body.innerHTML = `<p>No collection yet: run the agent with <code>--ovs 10s</code>, or import a dump with <code>weir ovs import FILE</code>.</p>`;
    return;
  }
  const params = { collection: coll, filter: q.get("filter") || "" };
  try {
    if (tab === "tree") await treeTab(body, detail, params);
    else if (tab === "graph") await graphTab(body, detail, params);
    else if (tab === "openflow") await openflowTab(body, detail, coll);
    else if (tab === "churn") await churnTab(body, coll, st.collections || []);
    else await pathTab(body, q, coll);
  } catch (e) {
    const el = main.querySelector("#ovs-error");
    el.textContent = e.message + (e.parameter ? ` (parameter ${e.parameter})` : "");
  }
}

/// The conversations a megaflow covered, with its packets next to the capture's.
async function conversations(detail, coll, index) {
  const v = await api("/api/v1/ovs/conversations", { collection: coll, flow: index });
  const rows = v.conversations || [];
  detail.innerHTML = `<h3>conversations of datapath flow ${esc(v.flow.ufid || index)}</h3>
    <p id="ovs-counts">megaflow: <b>${num(v.megaflow_packets)}</b> packets · captured by weir (TC): <b>${num(v.captured_packets)}</b> packets in ${num(rows.length)} flows</p>
    <p id="ovs-rules">${v.flow.rules ? `OpenFlow rules: ${v.flow.rules.map((r) => `<span class="ovs-step">${esc(r.bridge)} table ${r.table} priority ${r.priority} <code>${esc(r.match || "(any)")}</code></span>`).join(" → ") || "none"}` : `<span class="muted">OpenFlow rules: not traced</span>`}</p>
    <table id="ovs-convs"><thead><tr><th>source</th><th>destination</th><th>proto</th><th>interface</th><th>packets</th><th>bytes</th></tr></thead><tbody>${
      rows.map((f) => `<tr><td>${esc(f.SrcAddr)}:${esc(f.SrcPort)}</td><td>${esc(f.DstAddr)}:${esc(f.DstPort)}</td><td>${esc(f.Proto)}</td><td>${esc(f.Interface)}</td><td>${num(f.Packets)}</td><td>${bytes(f.Bytes)}</td></tr>`).join("")
    }</tbody></table>`;
}

/// Flows shown per tree node before a "show all" button.
const PAGE = 100;

async function treeTab(body, detail, params) {
  const v = await api("/api/v1/ovs/tree", params);
  const t = v.tree;
  const small = t.nodes <= OPEN_LIMIT;
  // Nodes are drawn when opened: a big tree costs only its roots until someone digs in.
  const nodes = [];
  const flowRow = (f) => `<li class="ovs-flow ${f.matches ? "" : "muted"}" data-index="${f.index}"><a role="button" tabindex="0" class="ovs-conv" data-index="${f.index}">${esc(f.ufid || "flow " + f.index)}</a> packets:${num(f.packets)} bytes:${num(f.bytes)} <code>actions:${esc(v.flows[f.index].actions)}</code>${f.children.map((c) => node(c, small)).join("")}</li>`;
  const inner = (n, all) => {
    const shown = all ? n.flows : n.flows.slice(0, PAGE);
    const more = n.flows.length - shown.length;
    return `<ul>${shown.map(flowRow).join("")}</ul>${more > 0 ? `<button class="ovs-more" data-node="${nodes.indexOf(n)}">show all ${num(n.flows.length)} flows (${num(more)} more)</button>` : ""}`;
  };
  const node = (n, open) => {
    nodes.push(n);
    const id = nodes.length - 1;
    return `<details class="ovs-node" data-node="${id}" ${open ? "open" : ""}><summary>[recirc_id 0x${n.recirc_id.toString(16)} in_port ${esc(n.in_port)}] <b>${num(n.packets)}</b> packets <span class="muted">(${num(n.subtree_packets)} with what follows)</span></summary><div class="ovs-kids" data-filled="${open ? "1" : ""}">${open ? inner(n, false) : ""}</div></details>`;
  };
  body.innerHTML = `<p class="muted">${num(t.nodes)} nodes${t.truncated ? " (cut at the limit)" : ""}${t.missing.length ? ` · ${t.missing.length} recirculations lead to no flows` : ""}</p><div id="ovs-tree">${t.roots.map((n) => node(n, true)).join("") || "<p>no flows match</p>"}</div>`;
  const tree = body.querySelector("#ovs-tree");
  const wire = () => tree.querySelectorAll(".ovs-conv").forEach((a) => { a.onclick = () => conversations(detail, params.collection, a.dataset.index); });
  tree.addEventListener("toggle", (e) => {
    const d = e.target;
    const kids = d.querySelector(":scope > .ovs-kids");
    if (d.open && kids && !kids.dataset.filled) {
      kids.dataset.filled = "1";
      kids.innerHTML = inner(nodes[Number(d.dataset.node)], false);
      wire();
    }
  }, true);
  tree.addEventListener("click", (e) => {
    const b = e.target.closest(".ovs-more");
    if (!b) return;
    b.parentElement.innerHTML = inner(nodes[Number(b.dataset.node)], true);
    wire();
  });
  wire();
}

async function graphTab(body, detail, params) {
  const v = await api("/api/v1/ovs/graph", params);
  const g = v.graph;
  body.innerHTML = `<p class="muted">${num(g.nodes.length)} nodes, ${num(g.edges.length)} edges · click a recirculation node to list its flows</p><div id="ovs-graph" style="height:520px;border:1px solid #ddd"></div>`;
  const maxE = Math.max(1, ...g.edges.map((e) => e.packets));
  const shape = { recirc: "round-rectangle", output: "ellipse", ct: "diamond", end: "octagon" };
  const cy = cytoscape({
    container: body.querySelector("#ovs-graph"),
    elements: [
      ...g.nodes.map((n) => ({ data: { id: n.id, label: `${n.label}\n${num(n.packets)} pkts`, kind: n.kind, flows: n.flows } })),
      ...g.edges.map((e, i) => ({ data: { id: "e" + i, source: e.from, target: e.to, kind: e.kind, w: 1 + 8 * (e.packets / maxE), packets: e.packets, flows: e.flows } })),
    ],
    style: [
      { selector: "node", style: { label: "data(label)", "text-wrap": "wrap", "font-size": 9, "text-valign": "center", width: 120, height: 34, shape: (n) => shape[n.data("kind")] || "ellipse", "background-color": (n) => ({ recirc: "#bfdbfe", output: "#bbf7d0", ct: "#fde68a", end: "#fecaca" })[n.data("kind")] || "#e5e7eb" } },
      { selector: "edge", style: { width: "data(w)", "curve-style": "bezier", "target-arrow-shape": "triangle", "line-style": (e) => (e.data("kind") === "ct" ? "dashed" : "solid") } },
    ],
    layout: { name: "breadthfirst", directed: true, spacingFactor: 1.1, animate: false },
  });
  cy.on("mouseover", "edge", (ev) => tooltip.show(ev.originalEvent, `${ev.target.data("source")} → ${ev.target.data("target")}: ${num(ev.target.data("packets"))} packets, ${num(ev.target.data("flows"))} flows`));
  cy.on("mouseout", () => tooltip.hide());
  cy.on("tap", "node", async (ev) => {
    const idx = ev.target.data("flows") || [];
    if (!idx.length) return;
    // A recirculation node is a (recirc_id, in_port) pair: ask for exactly its flows.
    const rest = ev.target.id().slice("recirc:".length);
    const rid = rest.slice(0, rest.indexOf(":"));
    const port = rest.slice(rest.indexOf(":") + 1);
    const got = await api("/api/v1/ovs/flows", { collection: params.collection, filter: `recirc_id=${rid} in_port=${port}`, limit: 200000 });
    const rows = got.flows;
    detail.innerHTML = `<h3 id="ovs-node-title">${esc(ev.target.id())}: ${num(rows.length)} flows</h3><table id="ovs-node-flows"><thead><tr><th>ufid</th><th>packets</th><th>bytes</th><th>actions</th></tr></thead><tbody>${
      rows.map((f) => `<tr><td><a role="button" tabindex="0" class="ovs-conv" data-index="${f.index}">${esc(f.ufid || f.index)}</a></td><td>${num(f.packets)}</td><td>${num(f.bytes)}</td><td><code>${esc((f.text.split("actions:")[1] || "").split(", dp-extra-info:")[0])}</code></td></tr>`).join("")
    }</tbody></table><div id="ovs-conv-detail"></div>`;
    detail.querySelectorAll(".ovs-conv").forEach((a) => { a.onclick = () => conversations(detail.querySelector("#ovs-conv-detail"), params.collection, a.dataset.index); });
  });
  body.querySelector("#ovs-graph").cy = cy;
}

async function openflowTab(body, detail, coll) {
  const v = await api("/api/v1/ovs/openflow", { collection: coll });
  // The datapath flows traced through a rule: each opens its conversations.
  const made = (f) => (f.dp_flows || []).length
    ? `<details class="ovs-made"><summary>${num(f.dp_flows.length)}</summary>${f.dp_flows.map((i) => `<a role="button" tabindex="0" class="ovs-conv" data-index="${i}">flow ${i}</a>`).join(" ")}</details>`
    : "";
  body.innerHTML = `<p class="muted" id="ovs-traced">${num(v.traced || 0)} of ${num(v.datapath_flows || 0)} datapath flows traced to their rules (the busiest of a live collection: <code>weir agent --ovs-trace N</code>)</p>` + (v.tables.map((t) => `<h3 class="ovs-table">${esc(t.bridge)} table ${t.table}: ${num(t.n_packets)} packets, ${bytes(t.n_bytes)}${t.next_tables.length ? ` → tables ${t.next_tables.join(", ")}` : ""}</h3>
    <table><thead><tr><th>priority</th><th>packets</th><th>bytes</th><th>datapath flows</th><th>flow</th></tr></thead><tbody>${
      t.flows.map((i) => v.flows[i]).map((f) => `<tr><td>${f.priority}</td><td>${num(f.n_packets)}</td><td>${num(f.n_bytes)}</td><td>${made(f)}</td><td><code>${esc(f.text)}</code></td></tr>`).join("")
    }</tbody></table>`).join("") || "<p>no OpenFlow flows in this collection</p>") + groupsAndMeters(v);
  body.querySelectorAll(".ovs-conv").forEach((a) => { a.onclick = () => conversations(detail, coll, a.dataset.index); });
}

/// Groups and meters of the collection's bridges, each with the rules that use it.
function groupsAndMeters(v) {
  const used = (x) => x.rules.length ? `${num(x.rules.length)} rules (table:priority ${x.rules.map((i) => `${v.flows[i].table}:${v.flows[i].priority}`).join(", ")})` : `<span class="muted">unused</span>`;
  const groups = (v.groups || []).length ? `<h3>Groups</h3><table id="ovs-groups"><thead><tr><th>bridge</th><th>group</th><th>type</th><th>buckets</th><th>used by</th></tr></thead><tbody>${
    v.groups.map((g) => `<tr><td>${esc(g.bridge)}</td><td>${g.group_id}</td><td>${esc(g.type)}</td><td>${g.buckets.map((b) => `<div>${b.weight !== undefined ? `weight ${b.weight}: ` : ""}${b.watch_port !== undefined ? `watch ${esc(b.watch_port)}: ` : ""}<code>${esc(b.actions)}</code></div>`).join("")}</td><td>${used(g)}</td></tr>`).join("")
  }</tbody></table>` : "";
  const meters = (v.meters || []).length ? `<h3>Meters</h3><table id="ovs-meters"><thead><tr><th>bridge</th><th>meter</th><th>bands</th><th>flags</th><th>used by</th></tr></thead><tbody>${
    v.meters.map((m) => `<tr><td>${esc(m.bridge)}</td><td>${m.meter_id}</td><td>${m.bands.map((b) => `${esc(b.type)} over ${num(b.rate)} ${esc(m.unit)}${b.burst_size !== undefined ? ` (burst ${num(b.burst_size)})` : ""}`).join(", ")}</td><td>${esc((m.flags || []).join(" "))}</td><td>${used(m)}</td></tr>`).join("")
  }</tbody></table>` : "";
  return groups + meters;
}

/// Megaflows per collection over time, from the listing (no decoding): a line per origin.
function countChart(cols) {
  const live = cols.filter((c) => c.origin === "live").sort((a, b) => a.time_ms - b.time_ms);
  if (live.length < 2) return `<p class="muted" id="ovs-count-chart">megaflows over time: fewer than two live collections</p>`;
  const W = 900, H = 160, P = 30;
  const t0 = live[0].time_ms, t1 = live[live.length - 1].time_ms;
  const max = Math.max(1, ...live.map((c) => c.dp_lines));
  const x = (t) => P + ((t - t0) / Math.max(1, t1 - t0)) * (W - 2 * P);
  const y = (n) => H - P - (n / max) * (H - 2 * P);
  const pts = live.map((c) => `${x(c.time_ms).toFixed(1)},${y(c.dp_lines).toFixed(1)}`).join(" ");
  return `<h3>megaflows over time (${num(live.length)} live collections, at most ${num(max)})</h3>
    <svg id="ovs-count-chart" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}"><polyline fill="none" stroke="#2563eb" stroke-width="2" points="${pts}"></polyline>${
      live.map((c) => `<circle class="ovs-count-point" cx="${x(c.time_ms).toFixed(1)}" cy="${y(c.dp_lines).toFixed(1)}" r="3"><title>${esc(isoTime(c.time_ms))}: ${num(c.dp_lines)} megaflows</title></circle>`).join("")
    }<text x="${P}" y="${H - 8}" font-size="10">${esc(isoTime(t0))}</text><text x="${W - P}" y="${H - 8}" font-size="10" text-anchor="end">${esc(isoTime(t1))}</text></svg>`;
}

async function churnTab(body, coll, cols) {
  const v = await api("/api/v1/ovs/churn", { collection: coll, top: 20 });
  const c = v.churn;
  body.innerHTML = countChart(cols) + `<p id="ovs-churn">${num(c.before)} → ${num(c.after)} megaflows in ${c.seconds.toFixed(1)} s: ${num(c.added)} added, ${num(c.removed)} removed (${c.churn_per_s.toFixed(2)}/s)</p>
    <h3>busiest between the two collections</h3><table><thead><tr><th>ufid</th><th>packets between</th><th>actions</th></tr></thead><tbody>${
      v.top.map((f) => `<tr><td>${esc(f.ufid || f.line)}</td><td>${num(f.packets_between)}</td><td><code>${esc((f.text.split("actions:")[1] || "").split(", dp-extra-info:")[0])}</code></td></tr>`).join("")
    }</tbody></table>`;
}

async function pathTab(body, q, coll) {
  const keys = ["SrcAddr", "DstAddr", "Proto", "SrcPort", "DstPort", "Interface"];
  const p = { collection: coll };
  for (const k of keys) if (q.get(k)) p[k] = q.get(k);
  if (!p.SrcAddr || !p.DstAddr) {
    body.innerHTML = `<p>Open a flow on the Flows page and follow “datapath path in OVS”.</p>`;
    return;
  }
  const v = await api("/api/v1/ovs/path", p);
  body.innerHTML = `<p>${esc(p.SrcAddr)}:${esc(p.SrcPort || "")} → ${esc(p.DstAddr)}:${esc(p.DstPort || "")} on ${esc(p.Interface || "any port")}: ${num(v.paths.length)} paths</p>
    <ol id="ovs-paths">${v.paths.map((path) => `<li>${path.map((s) => `<span class="ovs-step">[recirc_id 0x${s.recirc_id.toString(16)}] ${num(s.packets)} pkts <code>${esc(s.actions)}</code></span>`).join(" → ")}</li>`).join("")}</ol>`;
}
