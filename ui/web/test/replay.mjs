// Browser test of a replayed incident (`weir incident open`). Run by tests/e2e/incident.rs,
// which passes:
//   WEIR_URL    the replay's base URL
//   WEIR_SHOTS  where screenshots go
// The page says it is a read-only replay, and its Timeline (default range: the hour before the
// incident's end, the replay's clock) draws the API's lanes.
import { check, launch, readiness } from "./lib.mjs";
import { mkdirSync } from "node:fs";

const url = process.env.WEIR_URL;
const shots = process.env.WEIR_SHOTS;
mkdirSync(shots, { recursive: true });

const { browser, page, errors } = await launch();
try {
  const ready = readiness(page, shots);
  const t = Date.now();
  await page.goto(`${url}/#/timeline`);
  await ready("replay-timeline", t);
  await page.waitForSelector("#replay-banner");
  const banner = await page.textContent("#replay-banner");
  check(banner.includes("read-only") && banner.includes("incident.tar.gz"), `banner: ${banner}`);
  const api = await (await fetch(`${url}/api/v1/timeline`)).json();
  const drawn = await page.$$eval(".tl-lane", (ls) => ls.map((l) => l.dataset.lane));
  check(JSON.stringify(drawn) === JSON.stringify(api.lanes.map((l) => l.id)), `lanes ${drawn} vs API ${api.lanes.map((l) => l.id)}`);
  check(api.lanes.some((l) => l.id === "spans" && l.items.length === 1), "the incident's span is on the replay's default timeline");
  check(errors.length === 0, "no page errors: " + errors.join("; "));
} finally {
  await browser.close();
}
