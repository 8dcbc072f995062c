// Browser test of the web UI: Debian's chromium driven by playwright-core (no browser
// download), against a running agent. Run by the e2e suite (tests/e2e/ui.rs), which starts the
// agent on real namespace traffic and passes:
//   WEIR_URL      the agent's base URL
//   WEIR_FROM_MS  WEIR_TO_MS   the window holding the test traffic
//   WEIR_PLUGIN   a signed visualization .wasm (manifest embedded) to install through the UI
//   WEIR_SHOTS    where screenshots go (kept as test artifacts)
// Exits non-zero with a message on the first failed check.
import { check, launch } from "./lib.mjs";
import { mkdirSync } from "node:fs";

const url = process.env.WEIR_URL;
const from = process.env.WEIR_FROM_MS;
const to = process.env.WEIR_TO_MS;
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
    await page.goto(`${url}/${hash}`);
    await page.waitForFunction((h) => document.body.dataset.ready === h, hash, { timeout: 20000 });
    await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  };
  const win = `from=${from}&to=${to}`;

  // The page runs under a content security policy without inline script.
  const csp = (await fetch(url + "/")).headers.get("content-security-policy") || "";
  check(csp.includes("script-src 'self'") && !/script-src[^;]*unsafe-inline/.test(csp), `CSP: ${csp}`);

  // Every page loads without console errors (a CSP violation is one).
  for (const [hash, name] of [
    [`#/overview?${win}`, "overview"], [`#/flows?${win}`, "flows"], [`#/view/sankey?${win}`, "sankey"],
    [`#/view/chord?${win}`, "chord"], [`#/view/topology?${win}`, "topology"], ["#/plugins", "plugins"], ["#/status", "status"],
    ["#/alerts", "alerts"],
  ]) {
    await open(hash, name);
  }
  check(errors.length === 0, "console errors:\n" + errors.join("\n"));

  // The alerts page shows the agent's alert state: its queue line and tables.
  await open("#/alerts", "alerts");
  const queued = await page.textContent("#queued");
  const al = await api("/api/v1/alerts");
  check(queued.startsWith(`${al.queued_notifications} notification`), `alerts page queue line: ${queued}`);
  check((await page.$$("#firing tr")).length === 1 + al.active.filter((a) => a.state === "firing").length, "firing rows");
  // The live NoFlows alert is in the firing table and the history, with its severity.
  const firing = await page.$$eval("#firing tr", (trs) => trs.slice(1).map((t) => [...t.children].map((c) => c.textContent)));
  check(firing.some((r) => r[1] === "critical" && r[2] === "NoFlows" && r[3] === "no-flows"), `firing table: ${JSON.stringify(firing)}`);
  const hist = await page.$$eval("#history tr", (trs) => trs.slice(1).map((t) => [...t.children].map((c) => c.textContent)));
  check(hist.some((r) => r[0] === "firing" && r[3] === "NoFlows"), `history table: ${JSON.stringify(hist)}`);
  // Silencing it from the page: the silence is listed, the API has it, the alert shows it.
  await page.fill("#matchers", "alertname=NoFlows");
  await page.fill("#duration", "30m");
  await page.fill("#comment", "browser test");
  await page.click("#silence");
  await page.waitForFunction(() => document.querySelectorAll("#silences tr").length > 1, null, { timeout: 10000 });
  const sil = (await api("/api/v1/alerts")).silences;
  check(sil.some((s) => s.matchers.alertname === "NoFlows" && s.comment === "browser test"), `silences: ${JSON.stringify(sil)}`);
  await page.waitForFunction(() => [...document.querySelectorAll("#firing tr")].some((t) => t.textContent.includes("(silenced)")), null, { timeout: 10000 });
  await page.screenshot({ path: `${shots}/alerts-live.png`, fullPage: true });

  // The status page lists the capture features the agent probed, with their state.
  await open("#/status", "status");
  const feats = await page.$$eval("#feature-table tr", (trs) => trs.map((t) => [...t.children].map((c) => c.textContent)));
  const st = await api("/api/v1/status");
  for (const f of st.capture.features) {
    const row = feats.find((r) => r[1] === f.name);
    check(row && row[0] === (f.enabled ? "on" : "off"), `status page feature ${f.name}: ${JSON.stringify(row)}`);
  }
  check(feats.some((r) => r[1] === "drops") && feats.some((r) => r[1] === "dns"), "drops and dns features listed");

  // The overview's totals are the aggregate API's, with a time series per metric.
  const agg = await api(`/api/v1/flows/aggregate?group_by=SrcAddr,DstPort,DstAddr&metric=bytes&top=200&from=${from}&to=${to}`);
  check(agg.total.bytes > 0, "no traffic in the window");
  await open(`#/overview?${win}`, "overview");
  const shown = await page.textContent("#total-flows");
  check(shown === agg.total.flows.toLocaleString("en-US"), `overview flows ${shown} != ${agg.total.flows}`);
  for (const m of ["bytes", "packets", "flows"]) {
    check(await page.$(`#ts-${m} svg.timeseries path`), `no ${m} time series drawn`);
    // The firing alert is marked on each chart, named in its tooltip.
    const marks = await page.$$eval(`#ts-${m} line.alert-mark title`, (ts) => ts.map((t) => t.textContent));
    check(marks.some((t) => t.startsWith("NoFlows firing")), `${m} chart alert marks: ${JSON.stringify(marks)}`);
  }

  // Sankey: node and link totals equal the aggregate API's numbers for the same request.
  await open(`#/view/sankey?${win}&group_by=SrcAddr,DstPort,DstAddr&metric=bytes&top=200`, "sankey-3col");
  const drawn = await page.evaluate(() => {
    const col = (id) => Number(id.slice(0, id.indexOf(":")));
    const nodes = [...document.querySelectorAll("svg.sankey rect.node")];
    const links = [...document.querySelectorAll("svg.sankey path.link")];
    const sum = (xs) => xs.reduce((a, x) => a + Number(x), 0);
    return {
      nodes0: sum(nodes.filter((n) => col(n.dataset.id) === 0).map((n) => n.dataset.value)),
      nodes2: sum(nodes.filter((n) => col(n.dataset.id) === 2).map((n) => n.dataset.value)),
      links0: sum(links.filter((l) => col(l.dataset.source) === 0).map((l) => l.dataset.value)),
      count: links.length,
    };
  });
  const groupsTotal = agg.groups.reduce((a, g) => a + g.bytes, 0);
  check(drawn.count > 0, "sankey drew no links");
  check(drawn.nodes0 === groupsTotal, `sankey source nodes ${drawn.nodes0} != aggregate ${groupsTotal}`);
  check(drawn.nodes2 === groupsTotal, `sankey destination nodes ${drawn.nodes2} != aggregate ${groupsTotal}`);
  check(drawn.links0 === groupsTotal, `sankey links ${drawn.links0} != aggregate ${groupsTotal}`);

  // Clicking a link filters the flows table to it.
  const link = page.locator("svg.sankey path.link").first();
  const src = (await link.getAttribute("data-source")).replace(/^0:/, "");
  await link.dispatchEvent("click");
  await page.waitForFunction(() => location.hash.startsWith("#/flows") && document.body.dataset.ready === location.hash, null, { timeout: 20000 });
  await page.screenshot({ path: `${shots}/flows-from-sankey.png`, fullPage: true });
  const hash = decodeURIComponent(await page.evaluate(() => location.hash));
  check(hash.includes(`SrcAddr=${src}`), `flows filter ${hash} does not name ${src}`);
  const srcs = await page.$$eval("#flows tbody tr td:nth-child(2)", (tds) => tds.map((t) => t.textContent));
  check(srcs.length > 0, "filtered flows table is empty");
  check(srcs.every((s) => s === src), `rows not all from ${src}: ${srcs.join(",")}`);

  // With only the top 2 groups drawn, the rest is one `other` node per column: every column
  // still sums to the window's whole traffic.
  await open(`#/view/sankey?${win}&group_by=SrcAddr,DstPort,DstAddr&metric=bytes&top=2`, "sankey-top2");
  const top2 = await page.evaluate(() => {
    const nodes = [...document.querySelectorAll("svg.sankey rect.node")];
    const col0 = nodes.filter((n) => n.dataset.id.startsWith("0:"));
    return { sum: col0.reduce((a, n) => a + Number(n.dataset.value), 0), other: nodes.filter((n) => n.dataset.id.endsWith(":*")).length };
  });
  check(agg.groups.length > 2, "the test traffic has more than two groups");
  check(top2.other === 3, `other nodes: ${top2.other}`);
  check(top2.sum === agg.total.bytes, `top-2 sankey column ${top2.sum} != total ${agg.total.bytes}`);

  // A bad filter shows its error under the bar, with the position.
  await open("#/flows?filter=" + encodeURIComponent("Bytez=1"), "flows-bad-filter");
  const err = await page.textContent("#filter-error");
  check(/Bytez/.test(err) && err.includes("^"), `no readable filter error: ${err}`);
  // The browser logs the API's 400 for that filter; it is the expected answer, nothing else.
  check(errors.length === 1 && errors[0].includes("400 (Bad Request)"), "console errors:\n" + errors.join("\n"));
  errors.length = 0;

  // Installing a visualization through the UI makes it appear, and it draws.
  await open("#/plugins", "plugins-before");
  await page.setInputFiles("#file", process.env.WEIR_PLUGIN);
  await page.click("#upload");
  await page.waitForSelector('#views-nav a[href="#/view/top-ports"]', { timeout: 20000 });
  await page.waitForSelector('#list tr[data-name="top-ports"]', { timeout: 20000 });
  await page.screenshot({ path: `${shots}/plugins-after.png`, fullPage: true });
  await open(`#/view/top-ports?${win}`, "top-ports");
  const cells = await page.$$eval("#view table tr td:first-child", (tds) => tds.map((t) => t.textContent));
  const ports = await api(`/api/v1/flows/aggregate?group_by=DstPort&metric=bytes&top=20&from=${from}&to=${to}`);
  check(cells.join(",") === ports.groups.map((g) => String(g.key.DstPort)).join(","), `top-ports table ${cells} != aggregate`);

  // Permissions change in place, like a phone's: revoke a capability, then grant it back.
  await open("#/plugins", "plugins-grants");
  const row = '#list tr[data-name="top-ports"]';
  await page.click(`${row} button[data-a="revoke"][data-cap="flows"]`);
  await page.waitForSelector(`${row} button[data-a="grant"][data-cap="flows"]`, { timeout: 10000 });
  const held = async () => (await api("/api/v1/plugins")).plugins.find((p) => p.installed.manifest.name === "top-ports");
  const revoked = await held();
  check(!revoked.installed.granted.includes("flows") && !revoked.loaded, `revoke: ${JSON.stringify(revoked.installed.granted)}`);
  await page.click(`${row} button[data-a="grant"][data-cap="flows"]`);
  await page.waitForSelector(`${row} button[data-a="revoke"][data-cap="flows"]`, { timeout: 10000 });
  const granted = await held();
  check(granted.installed.granted.includes("flows") && granted.loaded, `grant: ${JSON.stringify(granted.installed.granted)}`);

  // Views too big to draw: a 150 k-node graph says so; a 150 k-row table shows its first
  // rows and counts the rest. Neither throws.
  errors.length = 0;
  await page.waitForSelector('#views-nav a[href="#/view/big-view"]', { timeout: 20000 });
  await open(`#/view/big-view?${win}`, "big-graph");
  const big = await page.textContent("#view");
  check(/150,000 items, more than the 20,000/.test(big), `big graph: ${big.slice(0, 200)}`);
  await open(`#/view/big-view?${win}&group_by=table&top=150000`, "big-table");
  const rows = await page.$$eval("#view table tr", (trs) => trs.length);
  check(rows === 5001, `big table rows: ${rows}`);
  const more = await page.textContent("#view .too-big");
  check(/145,000 more rows not shown/.test(more), `big table note: ${more}`);
  await open(`#/view/big-view?${win}&top=50`, "small-graph");
  check(!(await page.$("#view.too-big")), "a small view after a big one draws");
  check(errors.length === 0, "console errors on big views:\n" + errors.join("\n"));

  // An agent with an access token: the page asks for it in a login form, then works.
  if (process.env.WEIR_TOKEN_URL) {
    const p2 = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errs2 = [];
    p2.on("pageerror", (e) => errs2.push(e.message));
    await p2.goto(`${process.env.WEIR_TOKEN_URL}/#/overview`);
    await p2.waitForSelector("#login #token", { timeout: 20000 });
    await p2.screenshot({ path: `${shots}/login.png`, fullPage: true });
    await p2.fill("#token", "wrong-token-0000000");
    await p2.click("#login button");
    await p2.waitForFunction(() => document.querySelector("#login") && /wrong/.test(document.body.textContent), null, { timeout: 20000 });
    await p2.fill("#token", process.env.WEIR_TOKEN);
    await p2.click("#login button");
    await p2.waitForSelector("#total-bytes", { timeout: 20000 });
    await p2.screenshot({ path: `${shots}/after-login.png`, fullPage: true });
    check(errs2.length === 0, "script errors on the token agent:\n" + errs2.join("\n"));
  }

  // Live mode tails without errors.
  await open(`#/flows?live=1&${win}`, "flows-live");
  check(errors.length === 0, "console errors:\n" + errors.join("\n"));
  console.log("ui browser test: ok");
} finally {
  await browser.close();
}
