// Browser test of the Summary page. Run by tests/e2e/summaries.rs, which passes WEIR_URL (an
// agent with the bundled edge-summary and flows folded in) and WEIR_SHOTS.
// Exits non-zero with a message on the first failed check; prints first-render times.
import { check, launch, readiness } from "./lib.mjs";
import { mkdirSync } from "node:fs";

const url = process.env.WEIR_URL;
const shots = process.env.WEIR_SHOTS;
mkdirSync(shots, { recursive: true });
const run = async (query) => (await (await fetch(`${url}/api/v1/plugins/edge-summary/run`, {
  method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ query }),
})).json()).result;
const cells = (page, sel) => page.$$eval(`${sel} tr`, (rs) => rs
  .map((r) => [...r.querySelectorAll("td")].map((c) => c.textContent.trim()))
  .filter((r) => r.length));

const { browser, page, errors } = await launch();
try {
  const ready = readiness(page, shots);
  let t = Date.now();
  await page.goto(`${url}/#/summary`);
  await ready("summary", t);
  // The overview and the top talkers are the summarizer's own answers.
  const overview = (await run("overview")).view.rows;
  const shown = await cells(page, "#sum-overview");
  check(shown.length === overview.length && shown[0][1] === overview[0][1], `overview ${JSON.stringify(shown[0])} vs ${JSON.stringify(overview[0])}`);
  const top = (await run("top talkers bytes 20")).view.rows;
  const drawn = await cells(page, "#sum-top");
  check(drawn.length === top.length && drawn[0][1] === top[0][1], `top talkers ${drawn.length} rows, first ${drawn[0]}`);
  check((await cells(page, "#sum-distinct")).length === 4, "four cardinalities");
  check(await page.$("#sampling-off"), "storage sampling: off, and how to turn it on");
  check((await cells(page, "#sum-peers")).length > 0, "sources by distinct peers");
  check(await page.$("#sum-windows svg.timeseries"), "quantiles drawn per window");
  const perWindow = await cells(page, "#sum-window-table");
  const win = (await run("overview")).window_list.filter((w) => w.bytes > 0);
  check(perWindow.length === win.length, `${perWindow.length} window rows for ${win.length} windows`);
  // Top ports by packets: in the URL, and the table follows.
  t = Date.now();
  await page.selectOption("#sum-dim", "ports");
  await ready("summary-ports", t);
  await page.selectOption("#sum-metric", "packets");
  await ready("summary-ports-packets", t);
  const hash = await page.evaluate(() => location.hash);
  check(hash.includes("dim=ports") && hash.includes("metric=packets"), `URL ${hash}`);
  const ports = (await run("top ports packets 20")).view.rows;
  const portsDrawn = await cells(page, "#sum-top");
  check(portsDrawn.length === ports.length && portsDrawn[0][1] === ports[0][1], `top ports ${portsDrawn[0]} vs ${ports[0]}`);
  // One interface's RTT quantiles.
  await page.selectOption("#sum-q", "rtt_us");
  await ready("summary-rtt", Date.now());
  await page.selectOption("#sum-group", "if=eth0");
  await ready("summary-rtt-eth0", Date.now());
  const rtt = (await run("quantiles rtt_us if=eth0")).view.rows;
  const rttDrawn = await cells(page, "#sum-quantiles");
  // Each answer merges the agent's windows again, and a KLL merge is randomized: the same
  // count, and a p50 within the sketch's error (not the same digits).
  const [drawnP50, apiP50] = [Number(rttDrawn[0][1]), Number(rtt[0][1])];
  check(rttDrawn[0][2] === rtt[0][2] && Math.abs(drawnP50 - apiP50) <= 0.05 * apiP50, `eth0 p50 ${rttDrawn[0]} vs ${rtt[0]}`);
  check(errors.length === 0, `page errors: ${errors.join("; ")}`);
  console.log("summary page: ok");
} finally {
  await browser.close();
}
