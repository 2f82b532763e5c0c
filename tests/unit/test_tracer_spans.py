"""The spans the tracer writes on the request path (one %-format each) against the
general encoder (otlp.span) and the official schema, field by field."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from potok.observability.tracing import context as context_module
from potok.observability.tracing import encode, otlp
from potok.observability.tracing import trace as trace_module
from potok.observability.tracing import tracer as tracer_module
from potok.observability.tracing.config import TracingConfig
from potok.observability.tracing.context import ALL, ID_POOL
from potok.observability.tracing.trace import RequestTrace
from potok.observability.tracing.tracer import Tracer
from potok.upstream.forwarded import TrustedProxies

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture(autouse=True, params=["native", "python"])
def encoders(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: with the C recorder and encoders and with the Python ones
    (trace.py's PythonRequestTrace, encode.py)."""
    if request.param == "native":
        assert trace_module.NATIVE, "the C extension is not built (setup.py build_ext)"
    else:
        monkeypatch.setattr(tracer_module, "_NativeBegin", None)
        monkeypatch.setattr(tracer_module, "new_trace", trace_module.python_new_trace)
        monkeypatch.setattr(tracer_module, "RequestTrace", trace_module.PythonRequestTrace)
        monkeypatch.setattr(trace_module, "RequestTrace", trace_module.PythonRequestTrace)
        monkeypatch.setattr(trace_module, "server_span", encode.python_server_span)
        monkeypatch.setattr(trace_module, "attempt_span", encode.python_attempt_span)
        monkeypatch.setattr(context_module, "pool_entries", encode.python_pool_entries)
        ID_POOL.empty()  # drawn again by the Python pool_entries
    return str(request.param)


class Target:  # as upstream.Target: hashable by identity
    name, host, port = "orders-1", "10.1.1.1", 8080


TARGET = Target()


class Collected:
    def __init__(self) -> None:
        self.spans: list[bytes] = []

    def submit(self, spans: list[bytes]) -> None:
        self.spans.extend(spans)


def gateway_tracer(accept_parent: str = "never") -> tuple[Tracer, Collected]:
    collected = Collected()
    config = TracingConfig(enabled=True, sample_ratio=1.0, accept_parent=accept_parent)
    return Tracer(config, collected, TrustedProxies(())), collected  # type: ignore[arg-type]


def exchange(**values: Any) -> Any:
    fields: dict[str, Any] = {
        "headers": [(b"User-Agent", b"tests/1"), (b"Accept", b"*/*")],
        "trace_headers": False,
        "trace": None,
        "trace_lines": b"",
        "peer_ip": "10.0.0.2",
        "client_ip": "192.0.2.7",
        "method": b"GET",
        "status": 200,
        "route_name": "orders",
        "service_name": "orders-api",
        "forwarded_proto": None,
        "version": "1.1",
        "host": b"api.example",
        "path": b"/orders/42",
        "request_id": "req-1",
    }
    fields.update(values)
    return SimpleNamespace(**fields)


def decoded(spans: list[bytes]) -> list[Span]:
    body = otlp.Envelope({"service.name": "t"}, "potok", "1").request(spans)
    message = ExportTraceServiceRequest.FromString(body)
    assert message.SerializeToString() == body  # canonical: fields in order, no extras
    return list(message.resource_spans[0].scope_spans[0].spans)


def attributes(span: Span) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in span.attributes}


def one_request(
    request: Any, *, status: int = 200, error: str | None = None, tracer_parent: str = "never"
) -> tuple[RequestTrace, list[Span]]:
    tracer, collected = gateway_tracer(tracer_parent)
    tracer.begin(request)
    trace = request.trace
    assert isinstance(trace, trace_module.RequestTrace)
    request.trace_lines = trace.begin_attempt(b"GET", TARGET, 0)
    trace.attempt_status = status
    if error is not None:
        trace.attempt_error = error
    trace.end_attempt()
    request.status = status
    tracer.finish(request, trace, 0.0025)
    return trace, decoded(collected.spans)


def test_a_sampled_request_is_a_server_span_and_a_client_span():
    request = exchange()
    trace, (client, server) = one_request(request)
    assert server.trace_id == client.trace_id == trace.fields[2:18]
    assert server.span_id == trace.fields[20:28] and server.parent_span_id == b""
    assert client.parent_span_id == server.span_id and client.span_id != server.span_id
    # The upstream was told the attempt's span.
    assert request.trace_lines == (
        f"traceparent: 00-{client.trace_id.hex()}-{client.span_id.hex()}-01\r\n".encode()
    )
    assert server.name == "GET orders" and client.name == "GET"
    assert (server.kind, client.kind) == (Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT)
    assert server.end_time_unix_nano - server.start_time_unix_nano == 2_500_000
    assert server.flags == otlp.FLAGS_LOCAL_PARENT and client.flags == otlp.FLAGS_LOCAL_PARENT
    assert attributes(server) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "server.address": "api.example",
        "http.response.status_code": 200,
        "client.address": "192.0.2.7",
        "network.peer.address": "10.0.0.2",
        "potok.route": "orders",
        "potok.service": "orders-api",
        "url.path": "/orders/42",
        "potok.request_id": "req-1",
        "user_agent.original": "tests/1",
    }
    assert attributes(client) == {
        "http.request.method": "GET",
        "server.address": "10.1.1.1",
        "server.port": 8080,
        "potok.target": "orders-1",
        "http.response.status_code": 200,
    }
    assert not server.HasField("status") and not client.HasField("status")


@pytest.mark.parametrize("dense", [True, False])
def test_a_retry_is_a_span_of_its_own_and_the_upstream_is_told_so(dense):
    request = exchange()
    tracer, collected = gateway_tracer()
    ID_POOL.configure(ALL, dense)  # a pool written whole, or entry by entry (a low ratio's)
    tracer.begin(request)
    trace = request.trace
    first = trace.begin_attempt(b"GET", TARGET, 0)
    trace.attempt_status = 503
    second = trace.begin_attempt(b"GET", TARGET, 1)  # ends the first
    trace.attempt_status = 200
    trace.end_attempt()
    tracer.finish(request, trace, 0.001)
    one, two, server = decoded(collected.spans)
    assert first != second and first[:49] == second[:49]  # same trace, other span
    assert second == f"traceparent: 00-{two.trace_id.hex()}-{two.span_id.hex()}-01\r\n".encode()
    assert one.parent_span_id == two.parent_span_id == server.span_id
    assert attributes(one)["error.type"] == "503" and one.status.code == 2
    assert attributes(two)["http.request.resend_count"] == 1
    assert "error.type" not in attributes(two)


def test_a_5xx_and_an_error_are_errors_on_both_spans():
    _, (client, server) = one_request(exchange(), status=503, error="reset")
    assert client.status.code == server.status.code == 2  # ERROR
    assert client.status.message == "reset" and server.status.message == "503"
    assert attributes(client)["error.type"] == "reset"
    assert attributes(server)["error.type"] == "503"


@pytest.mark.parametrize(
    "values",
    [
        {"path": b"/" + b"p" * 200},  # past the template's one length byte
        {"request_id": "r" * 90},
        {"path": "/caf\u00e9".encode()},  # not ASCII: the general encoder
        {"headers": [(b"user-agent", b"a" * 300)]},
        {"route_name": "", "service_name": ""},  # unrouted
    ],
)
def test_values_past_the_fast_paths_bounds_arrive_whole(values):
    request = exchange(**values)
    _, (_, server) = one_request(request)
    got = attributes(server)
    assert got["url.path"] == request.path.decode("latin-1")
    assert got["potok.request_id"] == request.request_id
    if not request.route_name:
        assert server.name == "GET" and "potok.route" not in got


def test_a_continued_trace_keeps_the_callers_ids_and_state():
    request = exchange(
        headers=[
            (b"traceparent", f"00-{PARENT_TRACE}-{PARENT_SPAN}-01".encode()),
            (b"tracestate", b"vendor=abc"),
        ],
        trace_headers=True,
    )
    _, (client, server) = one_request(request, tracer_parent="always")
    assert request.headers == []  # the caller's lines are replaced by the gateway's
    assert request.trace_lines.startswith(f"traceparent: 00-{PARENT_TRACE}-".encode())
    assert server.trace_id.hex() == PARENT_TRACE and server.parent_span_id.hex() == PARENT_SPAN
    assert server.trace_state == client.trace_state == "vendor=abc"
    assert server.flags == otlp.FLAGS_REMOTE_PARENT and client.flags == otlp.FLAGS_LOCAL_PARENT
    assert client.parent_span_id == server.span_id
    assert request.trace_lines.endswith(b"-01\r\ntracestate: vendor=abc\r\n")
