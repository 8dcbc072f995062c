"""A workload exporter for the correlation test, in Prometheus' text format on 127.0.0.1:PORT:

  workload_rx_bytes_total{iface=IF}  the interface's received bytes (`ip -n NS -s -j link`)
  workload_config_version            3, always
  workload_temperature_celsius       wobbles on its own (20, 20.5, 21 by the second)

`workload_exporter.py PORT NS IF`; prints "ready" when listening."""
import json
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, NS, IF = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def rx_bytes():
    out = subprocess.run(["ip", "-n", NS, "-s", "-j", "link", "show", "dev", IF],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["stats64"]["rx"]["bytes"]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = (
            "# TYPE workload_rx_bytes_total counter\n"
            f'workload_rx_bytes_total{{iface="{IF}"}} {rx_bytes()}\n'
            "# TYPE workload_config_version gauge\n"
            "workload_config_version 3\n"
            "# TYPE workload_temperature_celsius gauge\n"
            f"workload_temperature_celsius {20 + (int(time.time()) % 3) * 0.5}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print("ready", flush=True)
server.serve_forever()
