// Shared by the browser tests: Debian's Chromium launched headless with the flags that work on
// the test machines, one page whose console and page errors are collected, and `check`.
import { chromium } from "playwright-core";

export function check(cond, msg) {
  if (!cond) throw new Error("check failed: " + msg);
}

/// The query parameters of a location hash (`#/flows?from=...`).
export const params = (hash) => new URLSearchParams(hash.split("?")[1] || "");

/// `ready(name, t)`: waits until the page says it has drawn the current hash, saves a
/// screenshot `name` into `shots` and prints the time since `t`.
export function readiness(page, shots) {
  return async (name, t) => {
    await page.waitForFunction(() => document.body.dataset.ready === location.hash, null, { timeout: 20000 });
    await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
    console.log(`${name}: first render ${Date.now() - t} ms`);
  };
}

/// `{ browser, page, errors }`: close `browser` when done; `errors` fills as the page runs.
export async function launch() {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const errors = [];
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("console", (m) => { if (m.type() === "error") errors.push(`${page.url()}: ${m.text()}`); });
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));
  // Anything the content security policy blocks (Chromium also logs it) fails the test.
  await page.exposeFunction("__cspViolation", (v) => errors.push(`${page.url()}: CSP blocked ${v}`));
  await page.addInitScript(() => document.addEventListener("securitypolicyviolation",
    (e) => window.__cspViolation(`${e.violatedDirective} ${e.blockedURI}`)));
  return { browser, page, errors };
}
