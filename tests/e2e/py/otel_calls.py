"""HTTP calls from a network namespace, traced and logged by the OpenTelemetry Python SDK.

    otel_calls.py ENDPOINT NETNS URL COUNT

Sets up the SDK (BatchSpanProcessor + OTLPSpanExporter, BatchLogRecordProcessor +
OTLPLogExporter, both OTLP/HTTP protobuf to ENDPOINT/v1/traces and ENDPOINT/v1/logs) and the
urllib instrumentation in the current namespace, so the exporters' threads send from here; then
the main thread enters NETNS (setns) and makes COUNT GET requests to URL?i=<n>, each a new
connection, each under a parent span `call-<n>` and with a WARNING log line inside it. Prints
one JSON line per call: {"i": n, "trace_id": "...", "status": 200}. Comes back to its own
namespace before flushing, so the export never runs from NETNS.
"""
import ctypes
import json
import logging
import os
import sys
import time
import urllib.request

from opentelemetry import trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.urllib import URLLibInstrumentor
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

endpoint, netns, url, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL("libc.so.6", use_errno=True)


def enter(fd):
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


resource = Resource.create({"service.name": "weir-e2e-client"})
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(
    BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"), schedule_delay_millis=200)
)
trace.set_tracer_provider(tracer_provider)
logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(
    BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{endpoint}/v1/logs"), schedule_delay_millis=200)
)
set_logger_provider(logger_provider)
log = logging.getLogger("weir-e2e")
log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))
log.setLevel(logging.INFO)
URLLibInstrumentor().instrument()
tracer = trace.get_tracer("weir-e2e")

home = os.open("/proc/self/ns/net", os.O_RDONLY)
target = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
enter(target)
for i in range(count):
    with tracer.start_as_current_span(f"call-{i}") as span:
        log.warning("calling %s for call %d", url, i)
        with urllib.request.urlopen(f"{url}?i={i}", timeout=10) as r:
            r.read()
            status = r.status
        trace_id = format(span.get_span_context().trace_id, "032x")
    print(json.dumps({"i": i, "trace_id": trace_id, "status": status}), flush=True)
    time.sleep(0.4)
enter(home)
tracer_provider.shutdown()
logger_provider.shutdown()
