// One renderer per case of the WIT `view` variant. Layout comes from well-kept libraries
// (d3-sankey, d3-chord, cytoscape); this file only maps a view onto them.
import { sankey as d3sankey, sankeyLinkHorizontal } from "d3-sankey";
import { chordDirected, ribbonArrow } from "d3-chord";
import { arc, line } from "d3-shape";
import { schemeTableau10 } from "d3-scale-chromatic";
import cytoscape from "cytoscape";
import { bytes, esc, num, tooltip } from "./util.js";

const SVG = "http://www.w3.org/2000/svg";
const fmt = (unit, v) => (unit === "bytes" ? `${bytes(v)} (${num(v)} B)` : `${num(v)} ${unit}`);

function svgEl(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

/// A filter matching one value of a field (quoted unless it reads as a number or address).
function term(field, value) {
  const plain = /^[A-Za-z0-9.:_\-/]+$/.test(value);
  return `${field}=${plain ? value : JSON.stringify(value)}`;
}

// Largest of a list without spreading it into arguments (a spread of 150 k values throws).
const maxOf = (xs, init) => xs.reduce((m, v) => (v > m ? v : m), init);
const minOf = (xs, init) => xs.reduce((m, v) => (v < m ? v : m), init);

/// Most items each kind of view is drawn with; beyond it the page says so instead of
/// freezing or throwing. Tables show their first rows.
export const DRAW_LIMITS = { sankey: 20000, chord: 400, graph: 20000, table: 5000, timeseries: 500000 };

function itemsOf(view) {
  switch (view.type) {
    case "sankey": return (view.nodes || []).length + (view.links || []).length;
    case "chord": return (view.labels || []).length;
    case "graph": return (view.nodes || []).length + (view.edges || []).length;
    case "timeseries": return (view.series || []).reduce((n, s) => n + s.points.length, 0);
    default: return 0;
  }
}

export function renderView(el, view, opts) {
  el.innerHTML = "";
  el.dataset.type = view.type;
  const items = itemsOf(view), limit = DRAW_LIMITS[view.type];
  el.classList.remove("too-big");
  if (limit && view.type !== "table" && items > limit) {
    el.classList.add("too-big");
    el.textContent = `This ${view.type} has ${num(items)} items, more than the ${num(limit)} this page draws: narrow the filter, shorten the range or ask for fewer groups.`;
    return;
  }
  switch (view.type) {
    case "sankey": return renderSankey(el, view, opts);
    case "chord": return renderChord(el, view, opts);
    case "graph": return renderGraph(el, view, opts);
    case "table": return renderTable(el, view);
    case "timeseries": return renderTimeseries(el, view);
    case "svg": {
      // Sanitized by never letting it run: shown as an image, so scripts and links are inert.
      const img = document.createElement("img");
      img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(view.svg);
      img.style.maxWidth = "100%";
      el.appendChild(img);
      return;
    }
    default:
      el.textContent = `no renderer for view type '${view.type}'`;
  }
}

function renderSankey(el, view, { fields = [], onSelect }) {
  const width = Math.max(800, el.clientWidth - 20);
  const height = Math.max(400, Math.min(4000, view.nodes.length * 14));
  if (!view.links.length) { el.textContent = "no traffic in this range"; return; }
  const graph = d3sankey()
    .nodeId((d) => d.id)
    .nodeAlign((d) => d.column)
    .nodeWidth(14)
    .nodePadding(6)
    .extent([[1, 1], [width - 180, height - 6]])({
      nodes: view.nodes.map((n) => ({ ...n })),
      links: view.links.map((l) => ({ ...l })),
    });
  const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "sankey" }, el);
  const value = (id) => id.slice(id.indexOf(":") + 1);
  const field = (n) => fields[n.column] || "";
  // The `other` node (id COL:*) stands for every group beyond the top: it filters nothing.
  const pick = (...ns) => ns.filter((n) => value(n.id) !== "*").map((n) => term(field(n), value(n.id)));
  const select = (...ns) => { const t = pick(...ns); if (onSelect && t.length) onSelect(t.join(" and ")); };
  const links = svgEl("g", { fill: "none", "stroke-opacity": 0.35 }, svg);
  for (const l of graph.links) {
    const p = svgEl("path", {
      d: sankeyLinkHorizontal()(l),
      stroke: schemeTableau10[l.source.column % 10],
      "stroke-width": Math.max(1, l.width),
      class: "link",
      "data-source": l.source.id,
      "data-target": l.target.id,
      "data-value": l.value,
    }, links);
    p.addEventListener("mousemove", (ev) => tooltip.show(ev, `${l.source.label} → ${l.target.label}: ${fmt(view.unit, l.value)}`));
    p.addEventListener("mouseleave", () => tooltip.hide());
    p.addEventListener("click", () => select(l.source, l.target));
  }
  for (const n of graph.nodes) {
    const g = svgEl("g", {}, svg);
    const r = svgEl("rect", {
      x: n.x0, y: n.y0, width: n.x1 - n.x0, height: Math.max(1, n.y1 - n.y0),
      fill: schemeTableau10[n.column % 10], class: "node", "data-id": n.id, "data-value": n.value,
    }, g);
    r.addEventListener("mousemove", (ev) => tooltip.show(ev, `${n.label}: ${fmt(view.unit, n.value)}`));
    r.addEventListener("mouseleave", () => tooltip.hide());
    r.addEventListener("click", () => select(n));
    const t = svgEl("text", { x: n.x1 + 4, y: (n.y0 + n.y1) / 2, dy: "0.35em", "font-size": 11 }, g);
    t.textContent = n.label;
  }
}

function renderChord(el, view, { fields = [], onSelect }) {
  const size = Math.min(760, Math.max(480, el.clientWidth - 20));
  const outer = size / 2 - 90, inner = outer - 14;
  if (!view.labels.length) { el.textContent = "no traffic in this range"; return; }
  const chords = chordDirected().padAngle(0.02).sortSubgroups((a, b) => b - a)(view.matrix);
  const svg = svgEl("svg", { width: size, height: size, viewBox: `${-size / 2} ${-size / 2} ${size} ${size}`, class: "chord" }, el);
  const color = (i) => schemeTableau10[i % 10];
  const groupArc = arc().innerRadius(inner).outerRadius(outer);
  for (const g of chords.groups) {
    const p = svgEl("path", { d: groupArc(g), fill: color(g.index), class: "group", "data-label": view.labels[g.index] }, svg);
    const out = view.matrix[g.index].reduce((a, b) => a + b, 0);
    const inn = view.matrix.reduce((a, row) => a + row[g.index], 0);
    p.addEventListener("mousemove", (ev) => tooltip.show(ev, `${view.labels[g.index]}: out ${fmt(view.unit, out)}, in ${fmt(view.unit, inn)}`));
    p.addEventListener("mouseleave", () => tooltip.hide());
    const a = (g.startAngle + g.endAngle) / 2;
    const t = svgEl("text", {
      transform: `rotate(${(a * 180) / Math.PI - 90}) translate(${outer + 6}) ${a > Math.PI ? "rotate(180)" : ""}`,
      "text-anchor": a > Math.PI ? "end" : "start", dy: "0.35em", "font-size": 11,
    }, svg);
    t.textContent = view.labels[g.index];
  }
  const ribbon = ribbonArrow().radius(inner - 1).padAngle(1 / inner);
  for (const c of chords) {
    // Coloured by the sending side: in and out are told apart.
    const p = svgEl("path", { d: ribbon(c), fill: color(c.source.index), "fill-opacity": 0.7, class: "ribbon" }, svg);
    const [from, to] = [view.labels[c.source.index], view.labels[c.target.index]];
    p.addEventListener("mousemove", (ev) => tooltip.show(ev, `${from} → ${to}: ${fmt(view.unit, view.matrix[c.source.index][c.target.index])}`));
    p.addEventListener("mouseleave", () => tooltip.hide());
    p.addEventListener("click", () => onSelect && fields.length === 2 && onSelect(`${term(fields[0], from)} and ${term(fields[1], to)}`));
  }
}

const LAYOUTS = ["cose", "concentric", "circle", "breadthfirst", "grid"];

function renderGraph(el, view, { fields = [], layout, onLayout, onSelect }) {
  const choice = document.getElementById("layout-choice");
  const name = LAYOUTS.includes(layout) ? layout : "cose";
  if (choice) {
    choice.innerHTML = `<label>layout <select id="layout">${LAYOUTS.map((l) => `<option ${l === name ? "selected" : ""}>${l}</option>`).join("")}</select></label>`;
    choice.querySelector("select").onchange = (e) => onLayout && onLayout(e.target.value);
  }
  if (!view.nodes.length) { el.textContent = "no traffic in this range"; return; }
  const box = document.createElement("div");
  box.className = "cy";
  el.appendChild(box);
  const maxN = maxOf(view.nodes.map((n) => n.weight), 1);
  const maxE = maxOf(view.edges.map((e) => e.weight), 1);
  const cy = cytoscape({
    container: box,
    elements: [
      ...view.nodes.map((n) => ({ data: { id: n.id, label: n.label, size: 16 + 44 * Math.sqrt(n.weight / maxN), attrs: n.attributes } })),
      ...view.edges.map((e, i) => ({ data: { id: "e" + i, source: e.source, target: e.target, w: 1 + 9 * (e.weight / maxE), attrs: e.attributes } })),
    ],
    style: [
      { selector: "node", style: { label: "data(label)", width: "data(size)", height: "data(size)", "font-size": 10, "background-color": "#2563eb" } },
      { selector: "edge", style: { width: "data(w)", "curve-style": "bezier", "target-arrow-shape": "triangle", "line-color": "#94a3b8", "target-arrow-color": "#94a3b8" } },
    ],
    layout: { name, animate: false },
  });
  const describe = (d) => Object.entries(d.attrs || {}).map(([k, v]) => `${k} ${num(v)}`).join(", ");
  cy.on("mouseover", "node", (ev) => tooltip.show(ev.originalEvent, `${ev.target.data("label")}: ${describe(ev.target.data())}`));
  cy.on("mouseover", "edge", (ev) => tooltip.show(ev.originalEvent, `${ev.target.data("source")} → ${ev.target.data("target")}: ${describe(ev.target.data())}`));
  cy.on("mouseout", () => tooltip.hide());
  cy.on("tap", "node", (ev) => onSelect && fields.length === 2 && onSelect(`(${term(fields[0], ev.target.id())} or ${term(fields[1], ev.target.id())})`));
  cy.on("tap", "edge", (ev) => onSelect && fields.length === 2 && onSelect(`${term(fields[0], ev.target.data("source"))} and ${term(fields[1], ev.target.data("target"))}`));
  el.cy = cy;
}

function renderTable(el, view) {
  const shown = view.rows.slice(0, DRAW_LIMITS.table);
  const more = view.rows.length - shown.length;
  el.innerHTML = `<table><tr>${view.columns.map((c) => `<th>${esc(c)}</th>`).join("")}</tr>${shown
    .map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join("")}</tr>`).join("")}</table>${
    more > 0 ? `<p class="muted too-big">${num(more)} more rows not shown (first ${num(DRAW_LIMITS.table)} of ${num(view.rows.length)})</p>` : ""}`;
}

function renderTimeseries(el, view) {
  const width = Math.max(400, el.clientWidth - 20), height = 220, pad = 40;
  const pts = view.series.flatMap((s) => s.points);
  if (!pts.length) { el.textContent = "no data in this range"; return; }
  // The requested range when given (so marks anywhere in it show), else the data's extent.
  const [x0, x1] = view.range || [minOf(pts.map((p) => p[0]), Infinity), maxOf(pts.map((p) => p[0]), -Infinity)];
  const y1 = maxOf(pts.map((p) => p[1]), 1);
  const x = (t) => pad + ((t - x0) / Math.max(1, x1 - x0)) * (width - 2 * pad);
  const y = (v) => height - pad + -((v / y1) * (height - 2 * pad));
  const svg = svgEl("svg", { width, height, class: "timeseries" }, el);
  const title = svgEl("text", { x: pad, y: 16, "font-size": 12 }, svg);
  title.textContent = `${view.unit} (max ${view.unit === "bytes" ? bytes(y1) : num(y1)})`;
  view.series.forEach((s, i) => {
    svgEl("path", { d: line().x((p) => x(p[0])).y((p) => y(p[1]))(s.points), fill: "none", stroke: schemeTableau10[i % 10], "stroke-width": 2 }, svg);
  });
  svgEl("line", { x1: pad, x2: width - pad, y1: height - pad, y2: height - pad, stroke: "#94a3b8" }, svg);
  // Alert times (firing in red, resolved in green) as vertical marks with their name.
  for (const m of view.marks || []) {
    if (m.time_ms < x0 || m.time_ms > x1) continue;
    const mx = x(m.time_ms);
    const mark = svgEl("line", { x1: mx, x2: mx, y1: 20, y2: height - pad, stroke: m.color || "#dc2626", "stroke-dasharray": "4 3", class: "alert-mark" }, svg);
    const t = svgEl("title", {}, mark);
    t.textContent = m.label;
  }
}
