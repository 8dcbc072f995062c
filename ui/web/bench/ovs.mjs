// UI benchmark: first render of the OVS tree and graph pages for a collection of 10,000
// datapath flows in headless chromium (target <= 1 s each), and their API answers (target <=
// 200 ms, decoded collection cached), against the Status page in the same run. Run by
// scripts/bench-ui.sh, which starts an agent and passes WEIR_URL. Prints a table.
import { chromium } from "playwright-core";

const url = process.env.WEIR_URL;
// The flows of host/benches/ovs.rs: 8 ports, half at recirc_id 0 (conntrack, then one of 100
// recirculation ids), half after it.
const hex = (n, w) => n.toString(16).padStart(w, "0");
const lines = [];
for (let i = 0; i < 10000; i++) {
  const port = i % 8;
  const r = i % 2 === 0 ? 0 : 1 + (Math.floor(i / 2) % 100);
  const o = `p${(port + 1) % 8}`;
  const act = r === 0 ? `ct(zone=${1 + (i % 4)}),recirc(0x${(1 + (Math.floor(i / 2) % 100)).toString(16)})`
    : i % 3 === 0 ? `meter(0),check_pkt_len(size=1500,gt(${o}),le(push_vlan(vid=10,pcp=0),${o}))` : o;
  const ct = r === 0 ? "ct_state(0/0),ct_zone(0/0)" : "ct_state(0x22/0x23),ct_zone(0x1/0)";
  lines.push(`ufid:${hex(i, 8)}-0000-4000-8000-${hex(i, 12)}, skb_priority(0/0),skb_mark(0/0),${ct},ct_mark(0/0),ct_label(0/0),recirc_id(0x${r.toString(16)}),dp_hash(0/0),in_port(p${port}),packet_type(ns=0,id=0),eth(src=02:00:00:00:${hex((i >> 8) % 256, 2)}:${hex(i % 256, 2)}/00:00:00:00:00:00,dst=02:00:00:01:00:01/00:00:00:00:00:00),eth_type(0x0800),ipv4(src=10.${(i >> 16) % 256}.${(i >> 8) % 256}.${i % 256}/255.255.255.255,dst=10.9.${i % 200}.0/255.255.255.0,proto=6/0xff,tos=0/0,ttl=64/0,frag=no),tcp(src=${1024 + (i % 60000)}/0xff00,dst=443), packets:${1 + (i % 5000)}, bytes:${(1 + (i % 5000)) * 800}, used:${((i % 1000) / 100).toFixed(3)}s, flags:SP., dp:ovs, actions:${act}, dp-extra-info:miniflow_bits(5,2)`);
}
const imp = await fetch(`${url}/api/v1/ovs/import`, { method: "POST", body: JSON.stringify({ text: lines.join("\n"), name: "netdev@bench" }) });
if (!imp.ok) throw new Error(`import: ${imp.status} ${await imp.text()}`);
const coll = (await imp.json()).id;
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const apiMs = async (path) => {
  const times = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    const r = await fetch(`${url}${path}`);
    await r.text();
    if (!r.ok) throw new Error(`${path}: ${r.status}`);
    times.push(performance.now() - t);
  }
  return median(times);
};
const treeApi = await apiMs(`/api/v1/ovs/tree?collection=${coll}`);
const graphApi = await apiMs(`/api/v1/ovs/graph?collection=${coll}`);

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const measure = async (hash, shapeOf) => {
  const times = [];
  let shape = null;
  for (let i = 0; i < 6; i++) {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    await page.goto(`${url}/${hash}`);
    await page.waitForFunction((h) => document.body.dataset.ready === h, hash, { timeout: 60000 });
    const t = await page.evaluate(() => performance.now());
    shape = await page.evaluate(shapeOf);
    await page.close();
    if (i > 0) times.push(t);
  }
  return { ms: median(times), shape };
};
const tree = await measure(`#/ovs?tab=tree&collection=${coll}`, () => document.querySelectorAll(".ovs-flow").length);
const graph = await measure(`#/ovs?tab=graph&collection=${coll}`, () => { const cy = document.getElementById("ovs-graph").cy; return `${cy.nodes().length} nodes, ${cy.edges().length} edges`; });
const status = await measure("#/status", () => 0);
await browser.close();
console.log("ui benchmark: OVS views of 10,000 datapath flows, medians of 5");
console.log("");
console.log("| measure | value | target |");
console.log("|---|---|---|");
console.log(`| tree API (collection decoded and cached) | ${treeApi.toFixed(0)} ms | <= 200 ms |`);
console.log(`| graph API | ${graphApi.toFixed(0)} ms | <= 200 ms |`);
console.log(`| tree page, ${tree.shape} flow rows, navigation to drawn | ${tree.ms.toFixed(0)} ms | <= 1000 ms |`);
console.log(`| graph page, ${graph.shape}, navigation to drawn | ${graph.ms.toFixed(0)} ms | <= 1000 ms |`);
console.log(`| Status page (no chart), navigation to drawn (baseline) | ${status.ms.toFixed(0)} ms | |`);
console.log(`| ratio tree / Status, graph / Status | ${(tree.ms / status.ms).toFixed(2)}, ${(graph.ms / status.ms).toFixed(2)} | |`);
