// Browser test of the Policies page against an agent holding captured conversations of
// namespace "pods". Run by tests/e2e/policy.rs, which passes:
//   WEIR_URL       the agent's base URL
//   WEIR_YAML      the cluster and its policies (pasted into the page)
//   WEIR_PROPOSED  a proposed policy set for the what-if
//   WEIR_SHOTS     where screenshots go
// Exits non-zero with a message on the first failed check; prints first-render times.
import { check, launch, readiness } from "./lib.mjs";
import { mkdirSync } from "node:fs";

const url = process.env.WEIR_URL;
const shots = process.env.WEIR_SHOTS;
mkdirSync(shots, { recursive: true });

const post = async (path, body) => {
  const r = await fetch(url + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  check(r.ok, `${path} answered ${r.status}`);
  return r.json();
};
const files = [{ name: "pasted", text: process.env.WEIR_YAML }];

const { browser, page, errors } = await launch();
try {
  const ready = readiness(page, shots);
  const open = async (hash, name) => {
    const t = Date.now();
    await page.goto(`${url}/${hash}`);
    await ready(name, t);
  };

  // Paste the objects: the policies list and the pods table follow the API's description.
  await open("#/policies", "policies-empty");
  await page.fill("#policy-yaml", process.env.WEIR_YAML);
  let t = Date.now();
  await page.click("#policy-save");
  await page.waitForFunction(() => location.hash.includes("t=") && document.body.dataset.ready === location.hash && document.querySelectorAll(".policy-item").length > 0, null, { timeout: 20000 });
  await ready("policies", t);
  const desc = await post("/api/v1/policy/describe", { files, live: false });
  check((await page.$$(".policy-item")).length === desc.policies.length, "one list entry per policy");
  check((await page.$$("#policy-pods tbody tr")).length === desc.pods.length, "one row per pod");
  check((await page.$$("#policy-graph canvas")).length > 0, "the policy is drawn");
  check((await page.textContent("#policy-json")).includes(desc.policies[0].name), "the first policy is shown");

  // Narrowed to a pod: the policies that apply to it; its effective peers on click.
  await open("#/policies?filter=x%2Fa", "policies-pod-filter");
  const one = await post("/api/v1/policy/describe", { files, live: false, pod: "x/a" });
  const names = await page.$$eval(".policy-name", (as) => as.map((a) => a.textContent));
  check(JSON.stringify(names) === JSON.stringify([...one.pods[0].ingress, ...one.pods[0].egress].filter((v, i, a) => a.indexOf(v) === i)), `policies for x/a: ${names}`);
  await page.click('.policy-pod-peers[data-pod="x/a"]');
  await page.waitForSelector("#policy-from");
  const from = await page.textContent("#policy-from");
  check(from.includes("80/TCP") && from.includes("x/b") && !from.includes("y/a"), `x/a reachable from: ${from}`);

  // Truth table: every cell as the API says; a blocked cell explains itself on hover.
  await open("#/policies?tab=table&ports=80%2FTCP%2C81%2FTCP", "policies-table");
  const table = await post("/api/v1/policy/table", { files, live: false, ports: ["80/TCP", "81/TCP"] });
  const cells = await page.$$eval("table.truth", (ts) => ts.map((t) => [...t.querySelectorAll("tbody tr")].map((r) => [...r.querySelectorAll("td")].map((c) => c.textContent).join(""))));
  check(JSON.stringify(cells) === JSON.stringify(table.tables.map((t) => t.rows.map((r) => r.cells))), `cells: ${JSON.stringify(cells)}`);
  await page.hover('table.truth[data-port="80/TCP"] td[data-from="y/a"][data-to="x/a"]');
  await page.waitForFunction(() => (document.getElementById("tooltip") || {}).textContent?.includes("decided by"), null, { timeout: 10000 });
  const tip = await page.textContent("#tooltip");
  check(tip.includes("y/a -> x/a 80/TCP: blocked") && tip.includes("NetworkPolicy x/a-from-b-on-http"), `tooltip: ${tip}`);
  await page.screenshot({ path: `${shots}/policies-table-hover.png` });

  // One pod: observed conversations with verdicts, and the suggestion.
  await open("#/policies?tab=pod&pod=x%2Fa&from=-1h", "policies-pod");
  const pv = await post("/api/v1/policy/pod", { files, live: false, pod: "x/a", from: "-1h" });
  check((await page.$$("#policy-observed tbody tr")).length === pv.observed.length, "observed rows");
  check((await page.$$("#policy-observed tbody tr.denied")).length === pv.observed.filter((o) => !o.allowed).length, "denied rows marked");
  check((await page.textContent("#policy-suggestion")).includes("a-observed"), "the suggested policy");
  // Allowed paths never used, both ways, as the API answers them (y/a's 8080 was never tried).
  check(pv.unused_egress.length > 0, "an unused egress path to show");
  for (const u of pv.unused_egress) {
    check((await page.textContent("#policy-unused-egress")).includes(`${u.peer} ${u.port.port}/${u.port.protocol}`), `unused egress ${u.peer} ${u.port.port}`);
  }

  // What-if: the proposal cuts observed conversations.
  await open("#/policies?tab=whatif&from=-1h", "policies-whatif");
  await page.fill("#policy-proposed", process.env.WEIR_PROPOSED);
  t = Date.now();
  await page.click("#policy-whatif-run");
  await page.waitForSelector("#policy-whatif-summary", { timeout: 30000 });
  console.log(`what-if: ${Date.now() - t} ms`);
  await page.screenshot({ path: `${shots}/policies-whatif.png`, fullPage: true });
  const cut = await page.$$eval("#policy-cut tbody tr", (rs) => rs.map((r) => [...r.children].slice(0, 3).map((c) => c.textContent).join(" ")));
  check(cut.includes("y/a x/b 80/TCP"), `cut rows: ${JSON.stringify(cut)}`);

  // A named port no pod declares: a warning box apart from the problems; still evaluated.
  await open("#/policies", "policies-before-warning");
  await page.$eval("#policy-input", (d) => { d.open = true; });
  await page.fill("#policy-yaml", `${process.env.WEIR_YAML}\n---\nkind: NetworkPolicy\nmetadata: {name: typo, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - {port: htp}\n`);
  await page.click("#policy-save");
  await page.waitForSelector("#policy-warnings", { timeout: 20000 });
  const warned = await page.textContent("#policy-warnings");
  check(warned.includes('NetworkPolicy x/typo, field spec.ingress[0].ports[0].port: named port "htp" (TCP) is declared by no pod'), `warnings: ${warned}`);
  check(!(await page.$("#policy-problems")), "a warning is not a problem");
  check((await page.$$eval(".policy-name", (as) => as.map((a) => a.textContent))).some((n) => n.includes("typo")), "the policy is still listed");

  check(errors.length === 0, "console errors:\n" + errors.join("\n"));
  console.log("policy pages ok");
} finally {
  await browser.close();
}
