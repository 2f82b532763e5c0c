"""A collector stand-in for the tracing benchmarks (bench/tracing.sh, bench/proxy.sh,
bench/instructions.sh): accepts OTLP/HTTP trace exports on 127.0.0.1:PORT, answers 200
and keeps the connection open (HTTP/1.1), as a collector does.

It decodes one batch in DECODE_EVERY (by the C protobuf runtime: a batch that does not
parse fails the request with a 400, which the gateway logs and counts) and reports
"<batches> batches, <bytes> bytes; <n> decoded: <spans> spans" in COUNT_FILE. Decoding
them all made it slower than a collector: sharing the load generator's core, it read
its socket late, and the gateway under test paid for that in partial writes (~1.5 % of
its req/s at 100 % sampling, measured against this).

    python bench/otlp_sink.py PORT COUNT_FILE
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

PORT = int(sys.argv[1])
COUNT_FILE = Path(sys.argv[2])
DECODE_EVERY = 8
batches = size = decoded = spans = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        global batches, size, decoded, spans
        body = self.rfile.read(int(self.headers["Content-Length"]))
        batches += 1
        size += len(body)
        status = 200
        if batches % DECODE_EVERY == 1:
            try:
                message = ExportTraceServiceRequest.FromString(body)
            except DecodeError:
                status = 400
            else:
                decoded += 1
                spans += sum(
                    len(scope.spans) for rs in message.resource_spans for scope in rs.scope_spans
                )
        COUNT_FILE.write_text(
            f"{batches} batches, {size} bytes; {decoded} decoded: {spans} spans\n"
        )
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
