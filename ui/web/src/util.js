// Small helpers shared by the pages and the renderers.

/// Calls the API: GET with query params, or POST/DELETE with a JSON (or binary) body. API errors
/// become an Error carrying the server's message, parameter and position.
export async function api(path, params, body, method) {
  const qs = params ? "?" + new URLSearchParams(params).toString() : "";
  const init = { method: method || (body != null ? "POST" : "GET"), headers: {} };
  const token = sessionStorage.getItem("weir-token");
  if (token) init.headers.authorization = "Bearer " + token;
  if (body instanceof Uint8Array) {
    init.body = body;
    init.headers["content-type"] = "application/wasm";
  } else if (body != null) {
    init.body = JSON.stringify(body);
    init.headers["content-type"] = "application/json";
  }
  const r = await fetch(path + qs, init);
  const text = await r.text();
  let v = null;
  try { v = text ? JSON.parse(text) : null; } catch { v = null; }
  if (!r.ok) {
    const e = (v && v.error) || {};
    throw Object.assign(new Error(e.message || `${r.status} ${r.statusText}`), { status: r.status, parameter: e.parameter, position: e.position });
  }
  return v;
}

export function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

export const num = (n) => Number(n).toLocaleString("en-US");

export function bytes(n) {
  const u = ["B", "kB", "MB", "GB", "TB"];
  let v = Number(n), i = 0;
  while (v >= 1000 && i < u.length - 1) { v /= 1000; i++; }
  return (i ? v.toFixed(1) : v) + " " + u[i];
}

/// One tooltip for every chart.
export const tooltip = {
  el() {
    let t = document.getElementById("tooltip");
    if (!t) { t = document.createElement("div"); t.id = "tooltip"; document.body.appendChild(t); }
    return t;
  },
  show(ev, text) { const t = this.el(); t.textContent = text; t.style.display = "block"; t.style.left = ev.clientX + 12 + "px"; t.style.top = ev.clientY + 12 + "px"; },
  hide() { const t = document.getElementById("tooltip"); if (t) t.style.display = "none"; },
};
