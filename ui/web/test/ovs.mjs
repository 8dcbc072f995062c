// Browser test of the OVS page (tree, graph, OpenFlow, path) against an agent collecting a real
// Open vSwitch. Run by tests/e2e/ovs.rs, which passes:
//   WEIR_URL          the agent's base URL
//   WEIR_COLLECTION   the collection to show
//   WEIR_FLOW         a datapath flow index whose conversations to open
//   WEIR_CONV         a captured conversation as a query string (SrcAddr=..&DstAddr=..&...)
//   WEIR_UPLOAD       a datapath dump to upload through the page
//   WEIR_SHOTS        where screenshots go
// Exits non-zero with a message on the first failed check; prints first-render times.
import { check, launch } from "./lib.mjs";
import { mkdirSync } from "node:fs";

const url = process.env.WEIR_URL;
const coll = process.env.WEIR_COLLECTION;
const shots = process.env.WEIR_SHOTS;
mkdirSync(shots, { recursive: true });

const api = async (path) => {
  const r = await fetch(url + path);
  check(r.ok, `${path} answered ${r.status}`);
  return r.json();
};

const { browser, page, errors } = await launch();
try {
  const open = async (hash, name) => {
    const t = Date.now();
    await page.goto(`${url}/${hash}`);
    await page.waitForFunction((h) => document.body.dataset.ready === h, hash, { timeout: 20000 });
    const ms = Date.now() - t;
    await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
    console.log(`${name}: first render ${ms} ms`);
    return ms;
  };
  const q = `collection=${encodeURIComponent(coll)}`;

  // Tree: the roots the API gives, and a megaflow's conversations with both packet counts.
  await open(`#/ovs?tab=tree&${q}`, "ovs-tree");
  const tree = await api(`/api/v1/ovs/tree?${q}`);
  const roots = await page.$$("#ovs-tree > details");
  check(roots.length === tree.tree.roots.length, `tree roots: page ${roots.length}, API ${tree.tree.roots.length}`);
  const flowLinks = await page.$$(".ovs-conv");
  check(flowLinks.length >= tree.tree.roots.reduce((n, r) => n + r.flows.length, 0), "every root flow is listed");
  await page.click(`.ovs-conv[data-index="${process.env.WEIR_FLOW}"]`);
  await page.waitForSelector("#ovs-counts");
  const conv = await api(`/api/v1/ovs/conversations?${q}&flow=${process.env.WEIR_FLOW}`);
  const counts = await page.textContent("#ovs-counts");
  check(counts.includes(conv.megaflow_packets.toLocaleString("en-US")) && counts.includes(conv.captured_packets.toLocaleString("en-US")), `counts line: ${counts}`);
  check((await page.$$("#ovs-convs tbody tr")).length === conv.conversations.length, "conversation rows");
  await page.screenshot({ path: `${shots}/ovs-conversations.png`, fullPage: true });

  // Graph: the API's nodes and edges drawn; a click on a recirculation node lists its flows.
  await open(`#/ovs?tab=graph&${q}`, "ovs-graph");
  const g = (await api(`/api/v1/ovs/graph?${q}`)).graph;
  const drawn = await page.evaluate(() => { const cy = document.getElementById("ovs-graph").cy; return [cy.nodes().length, cy.edges().length]; });
  check(drawn[0] === g.nodes.length && drawn[1] === g.edges.length, `graph drawn ${drawn}, API ${g.nodes.length}/${g.edges.length}`);
  const busiest = g.nodes.filter((n) => n.kind === "recirc").sort((a, b) => b.flows.length - a.flows.length)[0];
  await page.evaluate((id) => document.getElementById("ovs-graph").cy.getElementById(id).emit("tap"), busiest.id);
  await page.waitForSelector("#ovs-node-flows");
  check((await page.$$("#ovs-node-flows tbody tr")).length === busiest.flows.length, "flows of the tapped node");

  // OpenFlow: one section per table.
  await open(`#/ovs?tab=openflow&${q}`, "ovs-openflow");
  const of = await api(`/api/v1/ovs/openflow?${q}`);
  check((await page.$$("h3.ovs-table")).length === of.tables.length, "OpenFlow tables");
  // Each rule with the datapath flows traced through it; one opens a megaflow's conversations
  // and the rules that made it.
  check((await page.textContent("#ovs-traced")).startsWith(`${of.traced.toLocaleString("en-US")} of `), "traced line");
  const made = of.flows.filter((f) => f.dp_flows.length > 0).length;
  check(made > 0 && (await page.$$("details.ovs-made")).length === made, `rules with datapath flows: page ${(await page.$$("details.ovs-made")).length}, API ${made}`);
  await page.click("details.ovs-made summary");
  await page.click("details.ovs-made[open] .ovs-conv");
  await page.waitForSelector("#ovs-rules");
  check((await page.textContent("#ovs-rules")).includes("table 0 priority"), `rules line: ${await page.textContent("#ovs-rules")}`);
  await page.screenshot({ path: `${shots}/ovs-openflow-rules.png`, fullPage: true });
  // Groups and meters, a row each.
  check((await page.$$("#ovs-groups tbody tr")).length === of.groups.length && of.groups.length > 0, "group rows");
  check((await page.$$("#ovs-meters tbody tr")).length === of.meters.length && of.meters.length > 0, "meter rows");

  // Over time: one point per live collection, and the churn line.
  await open(`#/ovs?tab=churn&${q}`, "ovs-churn");
  const listed = await api("/api/v1/ovs");
  const live = listed.collections.filter((c) => c.origin === "live").length;
  const points = (await page.$$("#ovs-count-chart circle.ovs-count-point")).length;
  // Collections keep coming (one a second): the page drew those listed when it loaded.
  check(points >= 2 && points <= live, `megaflow chart points ${points}, live collections ${live}`);
  check((await page.textContent("#ovs-churn")).includes("megaflows in"), "churn line");

  // From a captured conversation to its datapath path.
  const hash = `#/ovs?tab=path&${q}&${process.env.WEIR_CONV}`;
  await open(hash, "ovs-path");
  const path = await api(`/api/v1/ovs/path?${q}&${process.env.WEIR_CONV}`);
  check(path.paths.length > 0, "a path through the datapath");
  check((await page.$$("#ovs-paths li")).length === path.paths.length, "path rows");

  // Upload a dump through the page: it becomes the shown collection.
  await open(`#/ovs?tab=tree&${q}`, "ovs-upload");
  await page.setInputFiles("#ovs-upload", { name: "uploaded-dp.txt", mimeType: "text/plain", buffer: Buffer.from(process.env.WEIR_UPLOAD) });
  await page.waitForFunction((c) => location.hash.includes("collection=") && !location.hash.includes(c) && document.body.dataset.ready === location.hash, coll, { timeout: 20000 });
  await page.waitForFunction(() => document.querySelectorAll("#ovs-tree > details").length > 0, null, { timeout: 20000 });
  const after = await api("/api/v1/ovs");
  const up = after.collections.find((c) => c.origin === "import" && c.datapaths.includes("uploaded-dp.txt"));
  check(up, "the uploaded dump is a collection");
  check(decodeURIComponent(await page.evaluate(() => location.hash)).includes(up.id), "the page shows the uploaded collection");

  check(errors.length === 0, "console errors:\n" + errors.join("\n"));
  console.log("ovs pages ok");
} finally {
  await browser.close();
}
