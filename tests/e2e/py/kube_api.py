"""A recorded Kubernetes API server for the e2e tests (no API server can run on the test
machines). Serves, from the directory in argv[2], on 127.0.0.1:argv[1]:

  GET /api/v1/{res}, /apis/{group}/{version}/{res}
                                the list in {res}.json (as a real server answers a list:
                                kind, metadata.resourceVersion, items); 404 (a kind the
                                server does not serve) when there is no such file
  GET ...?watch=true|1          a chunked stream of the watch events in {res}.watch.jsonl,
                                following the file as lines are appended (like `tail -f`)
Prints "ready" when listening. Every request is logged to requests.log in the directory.
"""
import http.server
import json
import os
import sys
import time
import urllib.parse

PORT = int(sys.argv[1])
DIR = sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        with open(os.path.join(DIR, "requests.log"), "a") as f:
            f.write(self.path + "\n")

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(url.query)
        parts = url.path.strip("/").split("/")
        cluster_wide = (len(parts) == 3 and parts[:2] == ["api", "v1"]) or \
            (len(parts) == 4 and parts[0] == "apis")
        recorded = any(os.path.exists(os.path.join(DIR, parts[-1] + ext))
                       for ext in (".json", ".forbidden"))
        if not cluster_wide or not recorded:
            self.send_json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                 "reason": "NotFound", "code": 404, "message": "not recorded"})
            self.log_message("")
            return
        kind = parts[-1]
        self.log_message("")
        if os.path.exists(os.path.join(DIR, kind + ".forbidden")):
            self.send_json(403, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                 "reason": "Forbidden", "code": 403, "message": "forbidden"})
            return
        if q.get("watch", ["false"])[0] in ("true", "1"):
            self.watch(kind, float(q.get("timeoutSeconds", ["290"])[0]))
            return
        with open(os.path.join(DIR, kind + ".json")) as f:
            self.send_json(200, json.load(f))

    def watch(self, kind, timeout):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        path = os.path.join(DIR, kind + ".watch.jsonl")
        sent = 0
        deadline = time.time() + min(timeout, 60)
        try:
            while time.time() < deadline:
                lines = []
                if os.path.exists(path):
                    with open(path) as f:
                        lines = [l for l in f.read().splitlines() if l.strip()]
                for line in lines[sent:]:
                    data = (line + "\n").encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                sent = max(sent, len(lines))
                time.sleep(0.1)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print("ready", flush=True)
server.serve_forever()
