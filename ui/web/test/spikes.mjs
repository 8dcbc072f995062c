// Browser test of the Timeline's spikes lane. Run by tests/e2e/correlation.rs, which passes:
//   WEIR_URL    the agent's base URL
//   WEIR_FROM   WEIR_TO  the range to open (ISO times) around an iperf3 burst
//   WEIR_SHOTS  where screenshots go
// The burst is drawn as a spike (5 s buckets, the step in the URL); clicking it shows its
// details, and its link opens the flows page over exactly the spike's range, largest first,
// where the burst's iperf3 flow (port 5201) comes first.
import { check, launch, params, readiness } from "./lib.mjs";
import { mkdirSync } from "node:fs";

const url = process.env.WEIR_URL;
const shots = process.env.WEIR_SHOTS;
mkdirSync(shots, { recursive: true });

const { browser, page, errors } = await launch();
try {
  const ready = readiness(page, shots);
  const from = process.env.WEIR_FROM, to = process.env.WEIR_TO;
  let t = Date.now();
  await page.goto(`${url}/#/timeline?from=${from}&to=${to}&step=5s`);
  await ready("spikes", t);
  const api = await (await fetch(`${url}/api/v1/timeline?from=${from}&to=${to}&step=5s`)).json();
  const lane = api.lanes.find((l) => l.id === "spikes");
  check(lane, `a spikes lane in the API: ${api.lanes.map((l) => l.id)}`);
  const idx = lane.items.findIndex((i) => i.kind === "spike");
  check(idx >= 0, `a spike: ${JSON.stringify(lane.items)}`);
  const item = lane.items[idx];
  const n = await page.$$eval('.tl-lane[data-lane="spikes"] .tl-item', (xs) => xs.length);
  check(n === lane.items.length, `spikes drawn ${n}, API ${lane.items.length}`);

  t = Date.now();
  await page.click(`.tl-item[data-sel="spikes:${idx}"]`);
  await ready("spikes-item", t);
  const what = await page.textContent("#tl-item");
  check(what.includes(item.text), `detail shows the spike: ${what}`);

  t = Date.now();
  await page.click("#tl-flows");
  await ready("spikes-flows", t);
  const p = params(await page.evaluate(() => location.hash));
  check(p.get("from") === new Date(item.time_ms).toISOString() && p.get("to") === new Date(item.end_ms).toISOString(), `the spike's range: ${p}`);
  check(p.get("sort") === "-Bytes", `largest first: ${p}`);
  const first = await page.$eval("#flows tbody tr", (r) => r.textContent);
  check(first.includes("5201"), `the burst's iperf3 flow first: ${first}`);
  // A wider range drops the step the URL gave (5 s buckets over a day would be refused).
  await page.goBack();
  await ready("spikes-back", Date.now());
  t = Date.now();
  await page.click('[data-range="-24h"]');
  await ready("spikes-24h", t);
  const h = params(await page.evaluate(() => location.hash));
  check(!h.get("step") && !(await page.textContent("#tl-error")), `24 h without the old step: ${h}`);
  check(errors.length === 0, "no page errors: " + errors.join("; "));
} finally {
  await browser.close();
}
