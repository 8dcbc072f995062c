#!/usr/bin/env python3
"""API load test (docs/RELIABILITY.md, "Load").

Starts `weir agent --no-capture` on a fresh data dir, preloads synthetic flows, measures the
import rate alone, then keeps imports running (4 clients, 5,000-flow batches, durable acks)
and 8 live tails open while wrk (a second process on loopback) drives each route the UI and
scripts use. Prints requests/s and p50/p99 latency per route with the import rate kept during
each, and checks that nothing was dropped silently: every import acknowledged is stored, every
non-2xx answer is counted, live tails say when they lag.

    python3 scripts/load.py [--seconds 10] [--connections 16] [--preload 200000] [--json FILE]

Needs a built `target/release/weir` and wrk (installed from Debian when missing).
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTS = [22, 53, 80, 443, 5432, 6379, 8080]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def flows(n, rng, now_ms):
    out = []
    for _ in range(n):
        src = rng.randrange(5000)
        dst = rng.randrange(2000)
        start = now_ms - rng.randrange(3_600_000)
        out.append({
            "TimeFlowStartMs": start,
            "TimeFlowEndMs": start + rng.randrange(5000),
            "SrcAddr": f"10.{src // 250}.{src % 250}.{1 + src % 7}",
            "DstAddr": f"172.16.{dst // 250}.{dst % 250 + 1}",
            "SrcPort": 32768 + rng.randrange(28000),
            "DstPort": rng.choice(PORTS),
            "Proto": 6 if rng.random() < 0.8 else 17,
            "Bytes": rng.randrange(64, 1_000_000),
            "Packets": rng.randrange(1, 1000),
            "Interface": f"eth{rng.randrange(2)}",
        })
    return out


class Importer:
    """Clients posting batches until stopped; counts acknowledged flows and failures."""

    def __init__(self, port, clients=4, batch=5000):
        self.port, self.clients, self.batch = port, clients, batch
        self.acked = 0
        self.failed = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = []
        # A few bodies made up front: generating JSON is not what is measured.
        rng = random.Random(7)
        now = int(time.time() * 1000)
        self.bodies = [json.dumps(flows(batch, rng, now)).encode() for _ in range(8)]

    def _run(self, i, limit):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        k = i
        while not self.stop.is_set():
            with self.lock:
                if limit is not None and self.acked >= limit:
                    return
            body = self.bodies[k % len(self.bodies)]
            k += 1
            try:
                conn.request("POST", "/api/v1/flows", body, {"content-type": "application/json"})
                r = conn.getresponse()
                text = r.read()
            except OSError as e:
                with self.lock:
                    self.failed.append(f"connection: {e}")
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                continue
            with self.lock:
                if r.status == 200:
                    self.acked += self.batch
                else:
                    self.failed.append(f"{r.status}: {text[:200]!r}")

    def start(self, limit=None):
        self.stop.clear()
        self.threads = [threading.Thread(target=self._run, args=(i, limit), daemon=True)
                        for i in range(self.clients)]
        for t in self.threads:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join()

    def count(self):
        with self.lock:
            return self.acked


class Tail:
    """One live tail (`/api/v1/flows/follow`): flows received, lag notices."""

    def __init__(self, port):
        self.flows = 0
        self.lagged = 0
        self.error = None
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"GET /api/v1/flows/follow HTTP/1.1\r\nHost: x\r\n\r\n")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        f = self.sock.makefile("rb")
        status = f.readline()
        if not status.startswith(b"HTTP/1.1 200"):
            self.error = status.decode(errors="replace").strip()
            return
        try:
            for line in f:
                if line.startswith(b"{\"lagged\""):
                    self.lagged += json.loads(line)["lagged"]
                elif line.startswith(b"{"):
                    self.flows += 1
        except OSError:
            pass

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def get_json(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, json.loads(r.read() or b"null")


def stored(port):
    status, v = get_json(port, "/api/v1/flows/aggregate?group_by=Proto&from=0")
    if status != 200:
        sys.exit(f"counting stored flows failed: {status} {v}")
    return v["total"]["flows"]


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"wrk printed an unreadable latency: {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk(url, seconds, connections):
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "60s", url],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)\s*$", out, re.M))
    if "50" not in lat or "99" not in lat:
        raise SystemExit(f"wrk's output has no latency distribution:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": total,
        "requests_per_s": rps,
        "p50_ms": ms(lat["50"]),
        "p99_ms": ms(lat["99"]),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10, help="wrk's run per route (default 10)")
    ap.add_argument("--connections", type=int, default=16, help="wrk's connections (default 16)")
    ap.add_argument("--preload", type=int, default=200_000, help="flows stored before the load (default 200000)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--import-only", action="store_true",
                    help="measure the import rate alone (for --seconds) and stop: no wrk, no tails")
    ap.add_argument("--clients", type=int, default=4,
                    help="importing clients, each posting its next batch once the last is acknowledged (default 4)")
    ap.add_argument("--weir", metavar="PATH",
                    help="the weir binary to run (default: target/release/weir; an older build to compare with)")
    ap.add_argument("--agent-args", default="",
                    help="more options for the agent, e.g. \"--commit-delay 1s\" (split on spaces)")
    a = ap.parse_args()
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)
    weir = a.weir or os.path.join(ROOT, "target", "release", "weir")
    if not os.path.exists(weir):
        sys.exit(f"{weir} is missing: build it first (cargo build --release)")

    data = tempfile.mkdtemp(prefix="weir-load-")
    port = free_port()
    log = open(os.path.join(data, "agent.log"), "w")
    agent = subprocess.Popen([weir, "agent", "--no-capture", "--no-plugins", "--data-dir",
                              os.path.join(data, "data"), "--listen", f"127.0.0.1:{port}"] + a.agent_args.split(),
                             stdout=subprocess.DEVNULL, stderr=log)
    try:
        for _ in range(300):
            try:
                if get_json(port, "/api/v1/status")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit("the agent did not come up; see its log in " + data)
        imp = Importer(port, clients=a.clients)
        print(f"preloading {a.preload} flows ...", file=sys.stderr)
        t0 = time.monotonic()
        imp.start(limit=a.preload)
        for t in imp.threads:
            t.join()
        print(f"  {imp.count()} flows in {time.monotonic() - t0:.1f} s", file=sys.stderr)

        # The import rate alone: the baseline the rates under load are compared with.
        before = imp.count()
        t0 = time.monotonic()
        imp.start()
        time.sleep(a.seconds)
        imp.join()
        alone = (imp.count() - before) / (time.monotonic() - t0)
        if a.import_only:
            st = get_json(port, "/api/v1/status")[1]
            time.sleep(2)
            sizes = {}
            for root, _, files in os.walk(os.path.join(data, "data")):
                for f in files:
                    try:
                        n = os.path.getsize(os.path.join(root, f))
                    except OSError:
                        continue
                    rel = os.path.relpath(os.path.join(root, f), os.path.join(data, "data"))
                    part = rel.split(os.sep)
                    key = "/".join(part[:1] + ([part[2]] if len(part) > 3 else []))
                    sizes[key] = sizes.get(key, 0) + n
            for k, n in sorted(sizes.items(), key=lambda x: -x[1])[:8]:
                print(f"  on disk: {k}: {n / 2**20:.1f} MiB", file=sys.stderr)
            print(f"import alone: {alone:.0f} flows/s ({a.clients} clients, 5,000-flow batches, durable acks; "
                  f"{len(imp.failed)} failed)")
            if a.json:
                with open(a.json, "w") as f:
                    json.dump({"import_alone_flows_per_s": alone, "failed": imp.failed,
                               "status": st}, f, indent=1)
            return

        imp.start()
        tails = [Tail(port) for _ in range(8)]
        now = int(time.time() * 1000)
        base = f"from={now - 3_600_000}&to={now + 60_000}"
        q = urllib.parse.quote
        routes = [
            ("status", "/api/v1/status"),
            ("the page", "/"),
            ("newest 100 flows", f"/api/v1/flows?limit=100&{base}"),
            ("one source, newest 100", f"/api/v1/flows?limit=100&filter={q('SrcAddr=10.3.7.2')}&{base}"),
            ("Overview: top-10 ports", f"/api/v1/flows/aggregate?group_by=DstPort&metric=bytes&top=10&{base}"),
            ("Overview: top-10 pairs", f"/api/v1/flows/aggregate?group_by=SrcAddr,DstAddr&metric=bytes&top=10&{base}"),
            ("Overview: bytes over time", f"/api/v1/flows/timeseries?metric=bytes&step=60000ms&top=1&{base}"),
            ("filtered time series", f"/api/v1/flows/timeseries?metric=bytes&step=60000ms&top=5&group_by=DstPort&filter={q('Proto=6')}&{base}"),
        ]
        rows = []
        for name, path in routes:
            c0, t0 = imp.count(), time.monotonic()
            r = wrk(f"http://127.0.0.1:{port}{path}", a.seconds, a.connections)
            r["route"], r["path"] = name, path
            r["import_flows_per_s"] = (imp.count() - c0) / (time.monotonic() - t0)
            rows.append(r)
            print(f"  {name}: {r['requests_per_s']:.0f} req/s", file=sys.stderr)
        imp.join()
        time.sleep(2.5)  # a flush interval and more: every acknowledged batch is queryable
        for t in tails:
            t.close()
        total = stored(port)

        print()
        print(f"| route ({a.connections} connections, {a.seconds} s each) | requests/s | p50 ms | p99 ms | non-2xx | import flows/s kept |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['route']} | {r['requests_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                  f"{r['non_2xx']} | {r['import_flows_per_s']:.0f} ({r['import_flows_per_s'] / alone:.2f} of alone) |")
        print()
        print(f"import alone: {alone:.0f} flows/s ({a.clients} clients, 5,000-flow batches, durable acks)")
        print(f"acknowledged: {imp.count()} flows; stored: {total}; import failures: {len(imp.failed)}")
        print(f"live tails: {sum(t.flows for t in tails)} flows received by 8 tails, "
              f"{sum(t.lagged for t in tails)} announced as lagged (skipped with notice); "
              f"refused: {sum(1 for t in tails if t.error)}")
        problems = []
        if total != imp.count():
            problems.append(f"stored {total} flows but {imp.count()} were acknowledged")
        if imp.failed:
            problems.append(f"{len(imp.failed)} imports failed, first: {imp.failed[0]}")
        for r in rows:
            if r["non_2xx"] or r["socket_errors"]:
                problems.append(f"{r['route']}: {r['non_2xx']} non-2xx, socket errors {r['socket_errors']!r}")
        for t in tails:
            if t.error:
                problems.append(f"a live tail was refused: {t.error}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"routes": rows, "import_alone_flows_per_s": alone, "acknowledged": imp.count(),
                           "stored": total, "problems": problems}, f, indent=2)
        if problems:
            print("PROBLEMS:\n  " + "\n  ".join(problems))
            sys.exit(1)
    finally:
        agent.terminate()
        agent.wait()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
