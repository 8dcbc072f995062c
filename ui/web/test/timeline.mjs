// Browser test of the Timeline page. Run by tests/e2e/timeline.rs, which passes:
//   WEIR_URL    the agent's base URL
//   WEIR_FROM   WEIR_TO  the range to open (ISO times)
//   WEIR_SHOTS  where screenshots go
// Exits non-zero with a message on the first failed check; prints first-render times.
import { check, launch, params, readiness } from "./lib.mjs";
import { mkdirSync, readFileSync } from "node:fs";

const url = process.env.WEIR_URL;
const shots = process.env.WEIR_SHOTS;
mkdirSync(shots, { recursive: true });

const { browser, page, errors } = await launch();
try {
  const ready = readiness(page, shots);
  const from = process.env.WEIR_FROM, to = process.env.WEIR_TO;
  let t = Date.now();
  await page.goto(`${url}/#/timeline?from=${from}&to=${to}`);
  await ready("timeline", t);
  const api = await (await fetch(`${url}/api/v1/timeline?from=${from}&to=${to}`)).json();
  const drawn = await page.$$eval(".tl-lane", (ls) => ls.map((l) => l.dataset.lane));
  check(JSON.stringify(drawn) === JSON.stringify(api.lanes.map((l) => l.id)), `lanes ${drawn} vs API ${api.lanes.map((l) => l.id)}`);
  for (const l of api.lanes) {
    const n = await page.$$eval(`.tl-lane[data-lane="${l.id}"] .tl-item`, (xs) => xs.length);
    check(n === l.items.length, `lane ${l.id}: ${n} items drawn, API has ${l.items.length}`);
  }
  const bars = await page.$$eval(".tl-vol", (xs) => xs.length);
  check(bars === api.buckets, `${bars} volume bars for ${api.buckets} buckets`);

  // Click the critical event: its details, then the flows behind it.
  const events = api.lanes.find((l) => l.id === "events");
  const idx = events.items.findIndex((i) => i.severity === "critical");
  check(idx >= 0, "a critical event in the API");
  t = Date.now();
  await page.click(`.tl-item[data-sel="events:${idx}"]`);
  await ready("timeline-event", t);
  const what = await page.textContent("#tl-item");
  check(what.includes("OOMKilling"), `detail shows the event: ${what}`);
  check(params(await page.evaluate(() => location.hash)).get("sel") === `events:${idx}`, "the selection is in the URL");
  t = Date.now();
  await page.click("#tl-flows");
  await ready("timeline-flows", t);
  const hash = await page.evaluate(() => location.hash);
  check(hash.startsWith("#/flows") && params(hash).get("filter") === events.items[idx].flow_filter, `flows page with the event's filter: ${hash}`);
  const rows = await page.$$eval("#flows tbody tr", (xs) => xs.length);
  check(rows > 0, "the event's flows are listed");
  await page.goBack();
  await ready("timeline-back", Date.now());

  // Hide the logs lane: gone from the chart, kept in the URL.
  await page.click('#tl-lanes input[data-lane="logs"]');
  await page.waitForFunction(() => location.hash.includes("hide=logs") && document.body.dataset.ready === location.hash);
  check(!(await page.$('.tl-lane[data-lane="logs"]')), "logs lane hidden");
  check(await page.$('.tl-lane[data-lane="events"]'), "events lane still drawn");

  // Export the shown window as an incident file: a download of a gzip archive, named by node
  // and start; the Rust side verifies it with `weir incident verify`.
  const [dl] = await Promise.all([page.waitForEvent("download"), page.click("#tl-export")]);
  check(/^weir-incident-.+\.tar\.gz$/.test(dl.suggestedFilename()), `download name ${dl.suggestedFilename()}`);
  await dl.saveAs(`${shots}/timeline-incident.tar.gz`);
  const head = readFileSync(`${shots}/timeline-incident.tar.gz`).subarray(0, 2);
  check(head[0] === 0x1f && head[1] === 0x8b, "the download is gzip");

  // Zoom in: the range halves around its middle.
  t = Date.now();
  await page.click("#tl-in");
  await page.waitForFunction((f) => new URLSearchParams(location.hash.split("?")[1] || "").get("from") !== f && document.body.dataset.ready === location.hash, from);
  await ready("timeline-zoomed", t);
  const q = params(await page.evaluate(() => location.hash));
  const span0 = Date.parse(to) - Date.parse(from), span1 = Date.parse(q.get("to")) - Date.parse(q.get("from"));
  check(Math.abs(span1 - span0 / 2) <= 2000, `zoomed span ${span1} vs ${span0 / 2}`);
  check(q.get("hide") === "logs", "hidden lanes survive the zoom");

  check(errors.length === 0, "no page errors: " + errors.join("; "));
} finally {
  await browser.close();
}
