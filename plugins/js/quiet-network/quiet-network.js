// quiet-network: a weir alert-rule plugin (JavaScript, built with jco's QuickJS backend).
//
// Emits one critical "quiet-network" alert when the flows matching `filter` moved fewer than
// `min_bytes` bytes in the evaluated window: a capture or link that went silent.
//
// Config (all optional):
//   min_bytes  alert below this many bytes in the window (default 1000)
//   filter     a flow filter in weir's query language (default "": every flow)
//
// Numbers: u64 values (bytes, times) arrive as Number on QuickJS and as BigInt on
// StarlingMonkey; `toNum` reads either, and u64 values handed back to the host are passed
// through in the form they came in (window.toMs) so a BigInt/Number mismatch cannot trap.

import log from "weir:plugin/log@0.1.3";
import flows from "weir:plugin/flows@0.1.3";
import config from "weir:plugin/config@0.1.3";

const DEFAULT_MIN_BYTES = 1000;
// flows.aggregate refuses an empty group-by list, so group by the IP protocol (a u8: at most
// 256 groups) and ask for all of them; their sum is the total.
const GROUP_BY = ["Proto"];
const ALL_PROTOS = 256;

class InvalidInput extends Error {}

// Number(x) reads a Number or a BigInt alike (mixing them in `+` would throw).
function toNum(v) {
  return Number(v);
}

function configUint(key, dflt) {
  const raw = config.get(key);
  if (raw === null || raw === undefined) {
    return dflt;
  }
  const text = String(raw).trim().replace(/_/g, "");
  if (!/^[0-9]+$/.test(text)) {
    throw new InvalidInput(
      `config ${key}: expected a whole number of bytes, got ${JSON.stringify(String(raw))}`,
    );
  }
  const n = Number(text);
  if (!Number.isSafeInteger(n)) {
    throw new InvalidInput(`config ${key}: ${text} is too large`);
  }
  return n;
}

function errorText(e) {
  if (typeof e === "string") return e;
  if (e && typeof e.payload === "string") return e.payload;
  if (e && typeof e.val === "string") return e.val;
  if (e instanceof Error) return e.message;
  try {
    return JSON.stringify(e);
  } catch (_) {
    return String(e);
  }
}

function formatBytes(n) {
  if (n < 1000) return `${n} B`;
  const units = ["kB", "MB", "GB", "TB", "PB"];
  let v = n;
  for (let i = 0; i < units.length; i++) {
    v /= 1000;
    if (v < 1000 || i === units.length - 1) return `${v.toFixed(1)} ${units[i]}`;
  }
  return `${n} B`;
}

function bytesText(n) {
  return n < 1000 ? `${n} bytes` : `${formatBytes(n)} (${n} bytes)`;
}

function formatSeconds(ms) {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

function run(window) {
  let minBytes;
  try {
    minBytes = configUint("min_bytes", DEFAULT_MIN_BYTES);
  } catch (e) {
    if (e instanceof InvalidInput) {
      throw { tag: "invalid-input", val: e.message };
    }
    throw e;
  }
  const filter = config.get("filter") ?? "";

  let groups;
  try {
    groups = flows.aggregate(filter, window, GROUP_BY, "bytes", ALL_PROTOS);
  } catch (e) {
    throw { tag: "failed", val: errorText(e) };
  }
  let total = 0;
  for (const g of groups) {
    total += toNum(g.bytes);
  }

  const span = formatSeconds(Math.max(0, toNum(window.toMs) - toNum(window.fromMs)));
  const alerts = [];
  if (total < minBytes) {
    alerts.push({
      name: "quiet-network",
      severity: "critical",
      summary:
        `network abnormally quiet: ${bytesText(total)} in ${span}` +
        `${filter ? ` matching '${filter}'` : ""}, below min_bytes ${minBytes}`,
      labels: [
        ["bytes", String(total)],
        ["min_bytes", String(minBytes)],
      ],
      timeMs: window.toMs,
    });
  }
  log.log(
    "info",
    `quiet-network: ${total} bytes in [${window.fromMs}, ${window.toMs}], min_bytes ${minBytes}: ` +
      (alerts.length ? "alert" : "ok"),
  );
  return alerts;
}

export function evaluate(window) {
  try {
    return run(window);
  } catch (e) {
    if (e && (e.tag === "invalid-input" || e.tag === "failed")) throw e;
    // A bug here must not trap the instance: report it as a failed evaluation.
    throw { tag: "failed", val: `quiet-network: internal error: ${errorText(e)}` };
  }
}
