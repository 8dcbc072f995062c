// The Policies page: what each network policy selects and allows (a graph per policy), every
// pod's policies, the truth table with each cell explained on hover, one pod's observed
// traffic against its policies with a least-privilege suggestion, and what-if on stored
// history for pasted policies. Objects are the agent's live ones (when it watches Kubernetes)
// plus the YAML pasted here (kept in this browser session).
import cytoscape from "cytoscape";
import { api, esc, num, tooltip } from "./util.js";

const TABS = [["policies", "Policies"], ["table", "Truth table"], ["pod", "Pod: observed vs allowed"], ["whatif", "What-if on history"]];
const KEY = "weir-policy-yaml";
const WHATIF_KEY = "weir-policy-proposed";

const files = () => {
  const text = sessionStorage.getItem(KEY) || "";
  return text.trim() ? [{ name: "pasted", text }] : [];
};
const noteText = (p) => (typeof p === "string" ? p : `${p.place}: ${p.object}${p.field ? ", field " + p.field : ""}: ${p.message}`);
// Problems (objects not evaluated) and warnings (evaluated, most likely not meant: a named
// port no pod declares) of an answer, each in its own box.
const problemsHtml = (v) => {
  const ps = v.problems || [];
  const ws = v.warnings || [];
  return (ps.length ? `<div class="error" id="policy-problems">${ps.map((p) => `<div>${esc(noteText(p))}</div>`).join("")}</div>` : "")
    + (ws.length ? `<div class="warning" id="policy-warnings">${ws.map((p) => `<div>warning: ${esc(noteText(p))}</div>`).join("")}</div>` : "");
};

export async function policyPage(main, q, go) {
  const tab = q.get("tab") || "policies";
  main.innerHTML = `
    <h2>Network policies</h2>
    <details id="policy-input" ${files().length ? "" : "open"}><summary>Objects: the agent's live ones, plus YAML pasted here (Namespaces, Pods, NetworkPolicies, AdminNetworkPolicies)</summary>
      <textarea id="policy-yaml" rows="12" cols="100" spellcheck="false" placeholder="kind: NetworkPolicy ...">${esc(sessionStorage.getItem(KEY) || "")}</textarea>
      <div class="bar"><button class="primary" id="policy-save">Use these objects</button>
      <label><input type="checkbox" id="policy-live" ${q.get("live") === "0" ? "" : "checked"}> include the agent's live objects</label></div>
    </details>
    <div class="bar" id="policy-tabs">${TABS.map(([t, l]) => `<button data-tab="${t}" class="${t === tab ? "primary" : ""}">${l}</button>`).join("")}</div>
    <div class="error" id="policy-error"></div>
    <div id="policy-body"></div>`;
  const nav = (changes) => {
    const n = new URLSearchParams(q);
    for (const [k, v] of Object.entries(changes)) (v ? n.set(k, v) : n.delete(k));
    go("policies", n);
  };
  const live = () => main.querySelector("#policy-live").checked;
  main.querySelector("#policy-save").onclick = () => {
    sessionStorage.setItem(KEY, main.querySelector("#policy-yaml").value);
    nav({ live: live() ? "" : "0", t: String(Date.now()) });
  };
  main.querySelector("#policy-live").onchange = () => nav({ live: live() ? "" : "0" });
  main.querySelectorAll("#policy-tabs button").forEach((b) => { b.onclick = () => nav({ tab: b.dataset.tab }); });
  const body = main.querySelector("#policy-body");
  const ctx = { live: live(), files: files(), q, nav };
  try {
    if (tab === "table") await tableTab(body, ctx);
    else if (tab === "pod") await podTab(body, ctx);
    else if (tab === "whatif") await whatifTab(body, ctx);
    else await policiesTab(body, ctx);
  } catch (e) {
    main.querySelector("#policy-error").textContent = e.message + (e.parameter ? ` (parameter ${e.parameter})` : "");
  }
}

// ---- policies -------------------------------------------------------------------------------

async function policiesTab(body, ctx) {
  const v = await api("/api/v1/policy/describe", null, { live: ctx.live, files: ctx.files });
  const label = (p) => `${p.kind} ${p.namespace ? p.namespace + "/" : ""}${p.name}`;
  // A pod, workload or namespace narrows both lists to it and the policies that apply to it.
  const f = (ctx.q.get("filter") || "").trim();
  const match = (pod) => !f || pod.pod === f || pod.workload === f || pod.pod.startsWith(f + "/");
  const pods = (v.pods || []).filter(match);
  const applying = new Set(pods.flatMap((p) => [...p.ingress, ...p.egress]));
  const pols = (v.policies || []).filter((p) => !f || applying.has(label(p)) || (p.namespace && p.namespace === f));
  body.innerHTML = `${problemsHtml(v)}
    <div class="bar"><input id="policy-filter" size="30" placeholder="pod, workload or namespace" value="${esc(f)}"><button class="primary" id="policy-filter-apply">Show</button>
    <span class="muted">${num(pols.length)} policies, ${num(pods.length)} pods${f ? " for " + esc(f) : ""}</span></div>
    <div class="split"><div id="policy-list">${pols.map((p, i) => `
      <div class="policy-item" data-i="${i}"><a role="button" tabindex="0" class="policy-name">${esc(label(p))}</a>
      <span class="muted">selects ${num(p.selects.length)} pod(s)</span></div>`).join("") || "<p>No policies: paste some above, or run the agent with --kubernetes.</p>"}</div>
    <div><div id="policy-graph" style="height:420px"></div><div id="policy-detail"></div></div></div>
    <h3>Pods</h3><table id="policy-pods"><thead><tr><th>pod</th><th>workload</th><th>ingress policies</th><th>egress policies</th><th></th></tr></thead><tbody>${
      pods.map((p) => `<tr><td><a role="button" tabindex="0" class="policy-pod-peers" data-pod="${esc(p.pod)}">${esc(p.pod)}</a></td><td>${esc(p.workload)}</td><td>${p.ingress.map(esc).join("<br>") || `<span class="muted">none: not isolated</span>`}</td><td>${p.egress.map(esc).join("<br>") || `<span class="muted">none: not isolated</span>`}</td>
        <td><a href="#/policies?tab=pod&pod=${encodeURIComponent(p.pod)}">observed vs allowed</a></td></tr>`).join("")}</tbody></table>
    <div id="policy-peers"></div>`;
  body.querySelector("#policy-filter-apply").onclick = () => ctx.nav({ filter: body.querySelector("#policy-filter").value });
  const show = (i) => drawPolicy(body, pols[i]);
  body.querySelectorAll(".policy-name").forEach((a) => { a.onclick = () => show(Number(a.parentElement.dataset.i)); });
  // A pod's effective peers, per port.
  body.querySelectorAll(".policy-pod-peers").forEach((a) => {
    a.onclick = async () => {
      const d = await api("/api/v1/policy/describe", null, { live: ctx.live, files: ctx.files, pod: a.dataset.pod });
      const p = (d.pods || [])[0] || {};
      const list = (m) => Object.entries(m || {}).map(([port, ps]) => `<tr><td>${esc(port)}</td><td>${ps.map(esc).join(", ")}</td></tr>`).join("") || `<tr><td colspan="2" class="muted">none</td></tr>`;
      body.querySelector("#policy-peers").innerHTML = `<h3>${esc(a.dataset.pod)}: effective peers</h3>
        <h4>may be reached from (its ports)</h4><table id="policy-from">${list(p.allowed_from)}</table>
        <h4>may reach (their ports)</h4><table id="policy-to">${list(p.allowed_to)}</table>`;
    };
  });
  const want = ctx.q.get("policy");
  const first = pols.findIndex((p) => label(p) === want);
  if (pols.length) show(first >= 0 ? first : 0);
}

/// One policy as a graph: the selected pods in the middle, each rule's peers around, arrows
/// in the direction traffic is allowed, labelled with the ports.
function drawPolicy(body, p) {
  const els = [{ data: { id: "sel", label: `${p.name}\nselects: ${p.selects.join(", ") || "(no pod)"}` }, classes: "selected" }];
  let n = 0;
  for (const dir of ["ingress", "egress"]) {
    const rules = p[dir];
    if (rules == null) continue;
    if (rules.length === 0) {
      els.push({ data: { id: `deny-${dir}`, label: `all ${dir} denied` }, classes: "deny" });
      els.push({ data: { id: `e${n++}`, source: dir === "ingress" ? `deny-${dir}` : "sel", target: dir === "ingress" ? "sel" : `deny-${dir}`, label: "" }, classes: "deny" });
      continue;
    }
    rules.forEach((r, ri) => {
      const peers = r.peers || [{ peer: `${r.name} (${r.action})`, pods: r.pods || [] }];
      for (const peer of peers) {
        const id = `${dir}-${ri}-${n}`;
        els.push({ data: { id, label: `${peer.peer}\n${(peer.pods || []).length} pod(s) now: ${(peer.pods || []).slice(0, 6).join(", ")}${(peer.pods || []).length > 6 ? "…" : ""}` }, classes: r.action === "Deny" ? "deny" : "peer" });
        const ports = (r.ports || [r.action || ""]).join(", ");
        els.push({ data: { id: `e${n++}`, source: dir === "ingress" ? id : "sel", target: dir === "ingress" ? "sel" : id, label: `${dir} ${ports}` } });
      }
    });
  }
  const box = body.querySelector("#policy-graph");
  box.innerHTML = "";
  cytoscape({
    container: box,
    elements: els,
    layout: { name: "breadthfirst", directed: true, spacingFactor: 1.2 },
    style: [
      { selector: "node", style: { label: "data(label)", "text-wrap": "wrap", "text-max-width": 220, "font-size": 10, "background-color": "#93c5fd", "text-valign": "bottom" } },
      { selector: "node.selected", style: { "background-color": "#2563eb", shape: "round-rectangle", width: 40, height: 40 } },
      { selector: ".deny", style: { "background-color": "#b91c1c", "line-color": "#b91c1c", "target-arrow-color": "#b91c1c" } },
      { selector: "edge", style: { label: "data(label)", "font-size": 9, "curve-style": "bezier", "target-arrow-shape": "triangle", width: 2, "line-color": "#9ca3af", "target-arrow-color": "#9ca3af" } },
    ],
  });
  body.querySelector("#policy-detail").innerHTML = `<pre id="policy-json">${esc(JSON.stringify(p, null, 2))}</pre>`;
}

// ---- truth table ----------------------------------------------------------------------------

async function tableTab(body, ctx) {
  const ports = (ctx.q.get("ports") || "80/TCP").split(",").map((s) => s.trim()).filter(Boolean);
  const v = await api("/api/v1/policy/table", null, { live: ctx.live, files: ctx.files, ports });
  body.innerHTML = `${problemsHtml(v)}
    <div class="bar"><input id="policy-ports" size="30" value="${esc(ports.join(","))}" placeholder="80/TCP,53/UDP"><button class="primary" id="policy-ports-apply">Show</button>
    <span class="muted">. allowed · X blocked · # the pod itself · hover a cell for why</span></div>
    ${(v.tables || []).map((t) => `<h3>probe: ${t.port} ${esc(t.protocol)} <span class="muted">${num(t.allowed)} allowed, ${num(t.blocked)} blocked</span></h3>
      <div class="scroll"><table class="truth" data-port="${t.port}/${esc(t.protocol)}"><thead><tr><th>-</th>${v.pods.map((p) => `<th>${esc(p)}</th>`).join("")}</tr></thead><tbody>${
        t.rows.map((r) => `<tr><th>${esc(r.from)}</th>${[...r.cells].map((c, j) => `<td class="cell ${c === "X" ? "x" : c === "." ? "ok" : "self"}" data-from="${esc(r.from)}" data-to="${esc(v.pods[j])}">${c}</td>`).join("")}</tr>`).join("")
      }</tbody></table></div>`).join("")}`;
  body.querySelector("#policy-ports-apply").onclick = () => ctx.nav({ ports: body.querySelector("#policy-ports").value });
  const cache = new Map();
  body.querySelectorAll("table.truth").forEach((tb) => {
    tb.addEventListener("mouseover", async (ev) => {
      const td = ev.target.closest("td.cell");
      if (!td || td.classList.contains("self")) return;
      const key = `${td.dataset.from}|${td.dataset.to}|${tb.dataset.port}`;
      if (!cache.has(key)) {
        cache.set(key, api("/api/v1/policy/explain", null, { live: ctx.live, files: ctx.files, from: td.dataset.from, to: td.dataset.to, port: tb.dataset.port })
          .then(explainText).catch((e) => e.message));
      }
      const text = await cache.get(key);
      td.title = text;
      tooltip.show(ev, text);
      body.dataset.explained = key;
    });
    tb.addEventListener("mouseout", () => tooltip.hide());
  });
}

export function explainText(e) {
  const dir = (name) => {
    const d = e[name];
    const steps = (d.steps || []).map((s) => `  ${s.policy}${s.rule ? " rule " + s.rule : ""}: ${s.effect === "isolates" ? "selects the pod; no rule allows this" : s.effect}`).join("\n");
    return `${name}: ${d.allowed ? "allowed" : "denied"} (decided by ${d.decided_by})${steps ? "\n" + steps : ""}`;
  };
  return `${e.from} -> ${e.to} ${e.port}/${e.protocol}: ${e.allowed ? "allowed" : "blocked"}\n${dir("egress")}\n${dir("ingress")}`;
}

// ---- one pod --------------------------------------------------------------------------------

// Allowed paths never used, the first 200 of them.
function unusedList(list, show) {
  return list.slice(0, 200).map(show).join(" · ") || "none";
}

async function podTab(body, ctx) {
  const pod = ctx.q.get("pod") || "";
  const from = ctx.q.get("from") || "-7d";
  body.innerHTML = `<div class="bar"><input id="policy-pod" size="30" placeholder="ns/pod" value="${esc(pod)}">
    <input id="policy-pod-from" size="10" value="${esc(from)}"><button class="primary" id="policy-pod-apply">Show</button></div><div id="policy-pod-body"></div>`;
  body.querySelector("#policy-pod-apply").onclick = () => ctx.nav({ pod: body.querySelector("#policy-pod").value, from: body.querySelector("#policy-pod-from").value });
  if (!pod) return;
  const v = await api("/api/v1/policy/pod", null, { pod, live: ctx.live, files: ctx.files, from });
  const rows = v.observed || [];
  body.querySelector("#policy-pod-body").innerHTML = `${problemsHtml(v)}
    <h3>${esc(v.pod)} (${esc(v.address)}): ${num(rows.length)} observed conversations, ${num(rows.filter((r) => !r.allowed).length)} the policies deny</h3>
    <table id="policy-observed"><thead><tr><th>direction</th><th>peer</th><th>port</th><th>flows</th><th>verdict</th><th>why</th></tr></thead><tbody>${
      rows.map((r) => `<tr class="${r.allowed ? "" : "denied"}"><td>${r.direction}</td><td>${esc(r.peer)}</td><td>${r.port}/${esc(r.protocol)}</td><td>${num(r.flows)}</td><td>${r.allowed ? "allowed" : "denied"}</td><td class="muted">${esc(r.reason)}</td></tr>`).join("")}</tbody></table>
    <h3>allowed ingress never used: ${num(v.unused_ingress.length)}</h3>
    <p id="policy-unused">${unusedList(v.unused_ingress, (u) => `${esc(u.peer)} → ${u.port.port}/${esc(u.port.protocol)}`)}</p>
    <h3>allowed egress never used: ${num(v.unused_egress.length)}</h3>
    <p id="policy-unused-egress">${unusedList(v.unused_egress, (u) => `→ ${esc(u.peer)} ${u.port.port}/${esc(u.port.protocol)}`)}</p>
    <h3>least privilege: the tightest policy allowing what was observed</h3><pre id="policy-suggestion">${esc(v.suggestion)}</pre>`;
}

// ---- what-if --------------------------------------------------------------------------------

async function whatifTab(body, ctx) {
  const from = ctx.q.get("from") || "-7d";
  body.innerHTML = `<p class="muted">Paste a proposed policy set: the stored conversations of the window are judged under it and under the current policies (the objects above, or the live ones).</p>
    <textarea id="policy-proposed" rows="14" cols="100" spellcheck="false">${esc(sessionStorage.getItem(WHATIF_KEY) || "")}</textarea>
    <div class="bar"><label>window from <input id="policy-whatif-from" size="10" value="${esc(from)}"></label><button class="primary" id="policy-whatif-run">Replay</button></div>
    <div id="policy-whatif-result"></div>`;
  const out = body.querySelector("#policy-whatif-result");
  body.querySelector("#policy-whatif-run").onclick = async () => {
    const text = body.querySelector("#policy-proposed").value;
    sessionStorage.setItem(WHATIF_KEY, text);
    out.innerHTML = `<p class="muted">replaying…</p>`;
    try {
      const pasted = ctx.files;
      const req = { proposed: [{ name: "proposed", text }], from: body.querySelector("#policy-whatif-from").value };
      // Pasted objects above are the current set (and the cluster); else the agent's live ones.
      if (pasted.length) { req.current = pasted; req.cluster = pasted; }
      const r = await api("/api/v1/policy/whatif", null, req);
      const list = (key, title) => `<h3>${title}: ${num(r[key + "_groups"])}</h3><table id="policy-${key}"><thead><tr><th>from</th><th>to</th><th>port</th><th>conversations</th><th>flows</th><th>last seen</th><th>why</th></tr></thead><tbody>${
        (r[key] || []).map((c) => `<tr><td>${esc(c.from)}</td><td>${esc(c.to)}</td><td>${c.port}/${esc(c.protocol)}</td><td>${num(c.conversations)}</td><td>${num(c.flows)}</td><td>${c.last_seen_ms ? new Date(c.last_seen_ms).toISOString() : ""}</td><td class="muted">${esc(c.reason)}</td></tr>`).join("")}</tbody></table>`;
      out.innerHTML = `${problemsHtml(r)}<p id="policy-whatif-summary">${num(r.flows)} flows, ${num(r.conversations)} conversations replayed (compared with ${esc(r.compared_with)})</p>
        ${list("cut", "would be cut")}${list("newly_allowed", "would newly be allowed")}`;
    } catch (e) {
      out.innerHTML = `<p class="error">${esc(e.message)}</p>`;
    }
  };
}
