"""An HTTP server that answers GET /?i=<n> with 1000 bytes and prints, per request, the
client's port: {"i": n, "port": p} (one JSON line, flushed). `http_ports.py ADDR PORT`;
prints "ready" once listening. HTTP/1.0: one connection per request."""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        i = parse_qs(urlparse(self.path).query).get("i", ["-1"])[0]
        body = b"x" * 1000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        print(json.dumps({"i": int(i), "port": self.client_address[1]}), flush=True)

    def log_message(self, *args):
        pass


server = HTTPServer((sys.argv[1], int(sys.argv[2])), Handler)
print("ready", flush=True)
server.serve_forever()
