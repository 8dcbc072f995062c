// Browser test of the storage-sampling part of the Summary page. Run by tests/e2e/sampling.rs
// with WEIR_URL (an agent whose sampling-controller set shadow rules) and WEIR_SHOTS.
import { check, launch, readiness } from "./lib.mjs";
import { mkdirSync } from "node:fs";

const url = process.env.WEIR_URL;
const shots = process.env.WEIR_SHOTS;
mkdirSync(shots, { recursive: true });
const { browser, page, errors } = await launch();
try {
  const ready = readiness(page, shots);
  await page.goto(`${url}/#/summary`);
  await ready("summary-sampling", Date.now());
  const changes = await page.textContent("#sampling-changes");
  check(changes.includes("sampling-controller (shadow)") && changes.includes("budget 200/s"), `changes: ${changes}`);
  const status = await (await fetch(`${url}/api/v1/status`)).json();
  const shown = await page.textContent("#sum-sampling");
  check(shown.includes(`of ${Number(status.storage_sampling.offered).toLocaleString("en-US")}`) || shown.includes("flows offered"), `counts: ${shown.slice(0, 200)}`);
  check(errors.length === 0, `page errors: ${errors.join("; ")}`);
  console.log("sampling section: ok");
} finally {
  await browser.close();
}
