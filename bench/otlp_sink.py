"""A collector stand-in for the tracing benchmarks (bench/tracing.sh, bench/proxy.sh,
bench/instructions.sh): accepts OTLP/HTTP trace exports on 127.0.0.1:PORT, counts spans
(protobuf decoded, by the C protobuf runtime), answers 200 and keeps the connection
open (HTTP/1.1), as a collector does.

    python bench/otlp_sink.py PORT COUNT_FILE
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

PORT = int(sys.argv[1])
COUNT_FILE = Path(sys.argv[2])
spans = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        global spans
        body = self.rfile.read(int(self.headers["Content-Length"]))
        message = ExportTraceServiceRequest.FromString(body)
        spans += sum(len(scope.spans) for rs in message.resource_spans for scope in rs.scope_spans)
        COUNT_FILE.write_text(f"{spans}\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
