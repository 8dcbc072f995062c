"""An OTLP/HTTP receiver for the e2e tests, decoding with the OpenTelemetry project's own
protobuf classes (PyPI opentelemetry-proto, in /opt/weir-otel). Listens on 127.0.0.1:argv[1];
POST /v1/logs and /v1/metrics must be `application/x-protobuf` (else 415) and parse as
ExportLogsServiceRequest / ExportMetricsServiceRequest (else 400). Appends one JSON line per
log record and per metric data point to the file argv[2] (MessageToDict's names), answers
200 with the empty Export*ServiceResponse. Prints "ready" when listening."""
import http.server
import json
import sys

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2


def attrs(kvs):
    out = {}
    for kv in kvs:
        v = MessageToDict(kv.value)
        out[kv.key] = int(v["intValue"]) if "intValue" in v else next(iter(v.values()), None)
    return out


def logs(req):
    for rl in req.resource_logs:
        res = attrs(rl.resource.attributes)
        for sl in rl.scope_logs:
            for r in sl.log_records:
                yield {"kind": "log", "resource": res, "scope": sl.scope.name,
                       "time_unix_nano": r.time_unix_nano,
                       "observed_time_unix_nano": r.observed_time_unix_nano,
                       "severity_number": r.severity_number, "severity_text": r.severity_text,
                       "event_name": r.event_name, "body": r.body.string_value,
                       "attributes": attrs(r.attributes)}


def metrics(req):
    for rm in req.resource_metrics:
        res = attrs(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind != "sum":
                    yield {"kind": "metric", "name": m.name, "data": kind}
                    continue
                for p in m.sum.data_points:
                    yield {"kind": "metric", "resource": res, "name": m.name, "unit": m.unit,
                           "data": kind, "temporality": m.sum.aggregation_temporality,
                           "monotonic": m.sum.is_monotonic,
                           "start_time_unix_nano": p.start_time_unix_nano,
                           "time_unix_nano": p.time_unix_nano,
                           "value": p.as_int if p.WhichOneof("value") == "as_int" else p.as_double,
                           "attributes": attrs(p.attributes)}


ROUTES = {
    "/v1/logs": (logs_service_pb2.ExportLogsServiceRequest,
                 logs_service_pb2.ExportLogsServiceResponse, logs),
    "/v1/metrics": (metrics_service_pb2.ExportMetricsServiceRequest,
                    metrics_service_pb2.ExportMetricsServiceResponse, metrics),
}


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        route = ROUTES.get(self.path)
        if route is None:
            return self.answer(404)
        if self.headers.get("Content-Type") != "application/x-protobuf":
            with open(sys.argv[2], "a") as f:
                f.write(json.dumps({"kind": "refused",
                                    "content_type": self.headers.get("Content-Type")}) + "\n")
            return self.answer(415)
        req_type, resp_type, rows = route
        try:
            req = req_type.FromString(body)
        except Exception as e:  # the test reads the refusal from the file
            with open(sys.argv[2], "a") as f:
                f.write(json.dumps({"kind": "undecodable", "error": str(e)}) + "\n")
            return self.answer(400)
        with open(sys.argv[2], "a") as f:
            for row in rows(req):
                f.write(json.dumps(row) + "\n")
        self.answer(200, resp_type().SerializeToString())


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("ready", flush=True)
server.serve_forever()
