"""OpenTelemetry tracing through the real gateway: spans exported over OTLP/HTTP to a
local receiver that decodes the protobuf, W3C trace context continued upstream."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from tests.support.h2client import H2Client
from tests.support.identity_gateway import claims, ec_private, sign
from tests.support.jwks_server import JwksServer
from tests.support.net import free_port, request
from tests.support.otlp import OtlpReceiver
from tests.support.upstream import Upstream

SERVER, CLIENT = 2, 3
ERROR = 2
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
CALLERS_TRACEPARENT = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"  # a sampled caller


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    yield server
    server.stop()


def traced(upstream_url: str, endpoint: str, **tracing: Any) -> dict[str, Any]:
    return {
        "services": {"up": {"targets": [upstream_url]}},
        "routes": [{"name": "all", "match": {"prefix": "/"}, "service": "up"}],
        "tracing": {
            "enabled": True,
            "endpoint": endpoint,
            "batch": {"interval": "50ms"},
            **tracing,
        },
    }


def upstream_traceparents(upstream: Upstream, path: str) -> list[str]:
    """The traceparent headers the upstream got on its last request to `path`."""
    for seen in reversed(upstream.requests):
        if seen["path"] == path:
            headers: dict[str, str] = seen["headers"]  # type: ignore[assignment]
            return [v for k, v in headers.items() if k.lower() == "traceparent"]
    raise AssertionError(f"the upstream never got {path}")


def echoed_header(body: bytes, name: str) -> list[str]:
    return [v for k, v in json.loads(body)["headers"] if k.lower() == name]


def test_one_server_span_and_a_client_span_the_upstream_continues(
    upstream, receiver, start_gateway
):
    gateway = start_gateway(traced(upstream.url, receiver.endpoint))
    response = request(gateway.port, "GET", "/echo/one", headers={"User-Agent": "tracer/1"})
    assert response.status == 200
    [sent] = echoed_header(response.body, "traceparent")
    version, trace_id, parent_id, flags = sent.split("-")
    assert (version, flags) == ("00", "01")

    spans = receiver.wait_for_spans(trace_id, 2)
    [server] = [s for s in spans if s.kind == SERVER]
    [client] = [s for s in spans if s.kind == CLIENT]
    assert server.name == "GET all" and server.parent_id == ""
    assert client.parent_id == server.span_id
    assert client.span_id == parent_id  # the upstream's parent is the attempt's span
    assert server.attributes["http.request.method"] == "GET"
    assert server.attributes["url.path"] == "/echo/one"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["user_agent.original"] == "tracer/1"
    assert server.attributes["potok.route"] == "all"
    assert server.attributes["potok.request_id"] == response.header("x-request-id")
    assert client.attributes["server.port"] == upstream.port
    assert client.attributes["http.response.status_code"] == 200
    assert server.start_ns <= client.start_ns <= client.end_ns <= server.end_ns
    assert server.resource["service.name"] == "potok"
    assert receiver.content_types[-1] == "application/x-protobuf"
    # The trace id is in the request's access-log line.
    gateway.wait_for(lambda: any(line.get("trace_id") for line in gateway.access_log()))
    [line] = [line for line in gateway.access_log() if line["path"] == "/echo/one"]
    assert line["trace_id"] == trace_id


def test_retries_are_one_client_span_each(upstream, receiver, start_gateway):
    config = traced(upstream.url, receiver.endpoint)
    config["services"]["up"]["retry"] = {
        "attempts": 3,
        "on_status": [503],
        "backoff": {"initial": "1ms", "max": "2ms"},
    }
    gateway = start_gateway(config)
    assert request(gateway.port, "GET", "/status/503").status == 503
    [sent] = upstream_traceparents(upstream, "/status/503")
    trace_id = sent.split("-")[1]
    spans = receiver.wait_for_spans(trace_id, 4)
    [server] = [s for s in spans if s.kind == SERVER]
    attempts = sorted((s for s in spans if s.kind == CLIENT), key=lambda s: s.start_ns)
    assert len(attempts) == 3
    assert [a.attributes.get("http.request.resend_count", 0) for a in attempts] == [0, 1, 2]
    assert all(a.parent_id == server.span_id for a in attempts)
    assert all(a.status_code == ERROR and a.attributes["error.type"] == "503" for a in attempts)
    assert server.status_code == ERROR
    # Each attempt told the upstream its own span.
    assert len({a.span_id for a in attempts}) == 3
    assert sent.split("-")[2] == attempts[-1].span_id


def test_a_trusted_callers_trace_is_continued(upstream, receiver, start_gateway):
    gateway = start_gateway(traced(upstream.url, receiver.endpoint, accept_parent="always"))
    response = request(
        gateway.port,
        "GET",
        "/echo/continued",
        headers={"traceparent": CALLERS_TRACEPARENT, "tracestate": "vendor=abc"},
    )
    [sent] = echoed_header(response.body, "traceparent")
    assert sent.split("-")[1] == PARENT_TRACE and sent.split("-")[2] != PARENT_SPAN
    assert echoed_header(response.body, "tracestate") == ["vendor=abc"]
    spans = receiver.wait_for_spans(PARENT_TRACE, 2)
    [server] = [
        s for s in spans if s.kind == SERVER and s.attributes["url.path"] == "/echo/continued"
    ]
    assert server.parent_id == PARENT_SPAN


def test_an_untrusted_callers_trace_is_not_continued(upstream, receiver, start_gateway):
    # Default: parents only from server.trusted_proxies (none here). The client cannot
    # choose the trace id or force sampling; its headers do not reach the upstream.
    gateway = start_gateway(traced(upstream.url, receiver.endpoint, sample_ratio=0.0))
    response = request(
        gateway.port,
        "GET",
        "/echo/untrusted",
        headers={"traceparent": CALLERS_TRACEPARENT, "tracestate": "vendor=evil"},
    )
    [sent] = echoed_header(response.body, "traceparent")
    assert PARENT_TRACE not in sent and sent.endswith("-00")
    assert echoed_header(response.body, "tracestate") == []


@pytest.mark.parametrize(
    "value",
    [
        f"00-{'0' * 32}-{PARENT_SPAN}-01",  # all-zero trace id
        f"00-{PARENT_TRACE}-{'0' * 16}-01",  # all-zero span id
        f"00-{PARENT_TRACE.upper()}-{PARENT_SPAN}-01",  # upper case
        f"ff-{PARENT_TRACE}-{PARENT_SPAN}-01",  # version ff
        f"00-{PARENT_TRACE}-{PARENT_SPAN}-01-extra",  # version 00 has no more fields
        "garbage",
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(upstream, receiver, start_gateway, value):
    gateway = start_gateway(traced(upstream.url, receiver.endpoint, accept_parent="always"))
    response = request(gateway.port, "GET", "/echo/bad", headers={"traceparent": value})
    [sent] = echoed_header(response.body, "traceparent")
    assert PARENT_TRACE not in sent.lower()
    assert sent.split("-")[1] != "0" * 32


def test_a_later_version_is_read_by_its_first_four_fields(upstream, receiver, start_gateway):
    gateway = start_gateway(traced(upstream.url, receiver.endpoint, accept_parent="always"))
    value = f"cc-{PARENT_TRACE}-{PARENT_SPAN}-01-what-the-future-holds"
    response = request(gateway.port, "GET", "/echo/future", headers={"traceparent": value})
    [sent] = echoed_header(response.body, "traceparent")
    assert sent.startswith(f"00-{PARENT_TRACE}-")


def test_unsampled_requests_propagate_but_export_nothing(upstream, receiver, start_gateway):
    gateway = start_gateway(traced(upstream.url, receiver.endpoint, sample_ratio=0.0))
    trace_ids = []
    for _ in range(20):
        response = request(gateway.port, "GET", "/echo/unsampled")
        [sent] = echoed_header(response.body, "traceparent")
        assert sent.endswith("-00")
        trace_ids.append(sent.split("-")[1])
    # A sampled parent is still followed (parent-based sampling).
    gateway2 = start_gateway(
        traced(upstream.url, receiver.endpoint, sample_ratio=0.0, accept_parent="always")
    )
    parent = f"00-{uuid.uuid4().hex}-{PARENT_SPAN}-01"
    request(gateway2.port, "GET", "/echo/parent-sampled", headers={"traceparent": parent})
    receiver.wait_for_spans(parent.split("-")[1], 2)
    assert all(receiver.trace(trace_id) == [] for trace_id in trace_ids)
    assert len(set(trace_ids)) == 20


def test_a_ratio_samples_about_that_share(upstream, receiver, start_gateway):
    gateway = start_gateway(traced(upstream.url, receiver.endpoint, sample_ratio=0.25))
    flags = []
    for _ in range(200):
        response = request(gateway.port, "GET", "/echo/ratio")
        flags.append(echoed_header(response.body, "traceparent")[0].endswith("-01"))
    # Binomial(200, 0.25): mean 50, sd 6.1; 20..80 is beyond 4.9 sd either way.
    assert 20 <= sum(flags) <= 80


def test_the_redis_rate_limit_round_trip_is_a_child_span(upstream, receiver, start_gateway):
    config = traced(upstream.url, receiver.endpoint)
    config["redis"] = {
        "url": "redis://127.0.0.1:6379/0",
        "key_prefix": f"t{os.getpid()}-{uuid.uuid4().hex[:8]}:",
    }
    config["routes"][0]["policies"] = {
        "rate_limit": {"limit": 100, "window": "60s", "store": "redis"}
    }
    gateway = start_gateway(config)
    response = request(gateway.port, "GET", "/echo/limited")
    assert response.status == 200
    trace_id = echoed_header(response.body, "traceparent")[0].split("-")[1]
    spans = receiver.wait_for_spans(trace_id, 3)
    [server] = [s for s in spans if s.kind == SERVER]
    [redis] = [s for s in spans if s.name == "rate_limit redis"]
    assert redis.parent_id == server.span_id
    assert redis.attributes["db.system.name"] == "redis"
    assert redis.attributes["potok.rate_limit.admitted"] is True


def test_a_collector_that_is_down_costs_the_requests_nothing(upstream, start_gateway):
    dead = f"http://127.0.0.1:{free_port()}/v1/traces"
    gateway = start_gateway(traced(upstream.url, dead, timeout="1s"))
    started = time.monotonic()
    statuses = [request(gateway.port, "GET", "/echo/down").status for _ in range(50)]
    assert statuses == [200] * 50
    assert time.monotonic() - started < 10
    assert gateway.process.poll() is None


def test_long_values_take_the_general_encoder_and_arrive_whole(upstream, receiver, start_gateway):
    # The server span's attributes are one template while every value is short; a long
    # path, user agent or request id goes through the general encoder instead.
    gateway = start_gateway(traced(upstream.url, receiver.endpoint))
    path = "/echo/" + "long-segment/" * 12
    agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
    response = request(
        gateway.port, "GET", path, headers={"User-Agent": agent, "X-Request-ID": "r" * 100}
    )
    assert response.status == 200
    trace_id = echoed_header(response.body, "traceparent")[0].split("-")[1]
    spans = receiver.wait_for_spans(trace_id, 2)
    [server] = [s for s in spans if s.kind == SERVER]
    assert server.attributes["url.path"] == path
    assert server.attributes["user_agent.original"] == agent
    assert server.attributes["potok.request_id"] == response.header("x-request-id")
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.request.method"] == "GET"
    assert server.attributes["network.protocol.version"] == "1.1"
    [client] = [s for s in spans if s.kind == CLIENT]
    assert client.attributes["http.request.method"] == "GET"
    assert client.attributes["server.port"] == upstream.port


def test_with_tracing_off_the_callers_trace_context_goes_upstream_untouched(
    upstream, start_gateway
):
    # The parsers note traceparent/tracestate for the tracer; they stay ordinary headers.
    gateway = start_gateway(
        {
            "services": {"up": {"targets": [upstream.url]}},
            "routes": [{"name": "all", "match": {"prefix": "/"}, "service": "up"}],
        }
    )
    response = request(
        gateway.port,
        "GET",
        "/echo/off",
        headers={"traceparent": CALLERS_TRACEPARENT, "tracestate": "vendor=abc"},
    )
    assert echoed_header(response.body, "traceparent") == [CALLERS_TRACEPARENT]
    assert echoed_header(response.body, "tracestate") == ["vendor=abc"]


def test_an_unsampled_callers_trace_goes_on_unsampled_with_its_state(
    upstream, receiver, start_gateway
):
    gateway = start_gateway(traced(upstream.url, receiver.endpoint, accept_parent="always"))
    trace_id = uuid.uuid4().hex
    response = request(
        gateway.port,
        "GET",
        "/echo/unsampled-parent",
        headers={"traceparent": f"00-{trace_id}-{PARENT_SPAN}-00", "tracestate": "k=v"},
    )
    [sent] = echoed_header(response.body, "traceparent")
    version, sent_trace, sent_span, flags = sent.split("-")
    assert (version, sent_trace, flags) == ("00", trace_id, "00")
    assert sent_span not in (PARENT_SPAN, "0" * 16)
    assert echoed_header(response.body, "tracestate") == ["k=v"]
    gateway.wait_for(lambda: any(line.get("trace_id") for line in gateway.access_log()))
    assert gateway.access_log()[-1]["trace_id"] == trace_id
    time.sleep(0.2)  # two batch intervals
    assert receiver.trace(trace_id) == []


def test_an_http2_callers_trace_is_continued_and_its_headers_replaced(
    upstream, receiver, start_gateway
):
    gateway = start_gateway(traced(upstream.url, receiver.endpoint, accept_parent="always"))
    trace_id = uuid.uuid4().hex
    client = H2Client(gateway.port)
    try:
        stream_id = client.request(
            "/echo/h2",
            headers=[("traceparent", f"00-{trace_id}-{PARENT_SPAN}-01"), ("tracestate", "a=1")],
        )
        result = client.wait(stream_id)
    finally:
        client.close()
    assert result.status == 200
    [sent] = echoed_header(bytes(result.body), "traceparent")
    assert sent.split("-")[1] == trace_id and sent.split("-")[2] != PARENT_SPAN
    assert echoed_header(bytes(result.body), "tracestate") == ["a=1"]
    spans = receiver.wait_for_spans(trace_id, 2)
    [server] = [s for s in spans if s.kind == SERVER]
    [attempt] = [s for s in spans if s.kind == CLIENT]
    assert server.parent_id == PARENT_SPAN
    assert server.attributes["network.protocol.version"] == "2"
    assert attempt.parent_id == server.span_id and attempt.span_id == sent.split("-")[2]


def test_a_jwks_fetch_the_request_waited_for_is_a_child_span(upstream, receiver, start_gateway):
    old, new = ec_private(), ec_private()
    jwks = JwksServer({"keys": [jwk_of(old, "k-0")]})
    try:
        config = traced(upstream.url, receiver.endpoint)
        issuer = {
            "issuer": "https://jwks.test",
            "jwks": {"url": jwks.url, "min_refresh_interval": "10ms"},
        }
        config["routes"][0]["policies"] = {"auth_jwt": {"issuers": [issuer]}}
        gateway = start_gateway(config)
        gateway.wait_for(lambda: jwks.fetches >= 1)  # the set as it was at start
        time.sleep(0.05)  # past min_refresh_interval
        jwks.document = {"keys": [jwk_of(old, "k-0"), jwk_of(new, "k-1")]}  # a new key
        token = sign(claims(iss="https://jwks.test"), new, "ES256", kid="k-1")
        response = request(
            gateway.port, "GET", "/echo/jwks", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status == 200, response
        trace_id = echoed_header(response.body, "traceparent")[0].split("-")[1]
        spans = receiver.wait_for_spans(trace_id, 3)
        [server] = [s for s in spans if s.kind == SERVER]
        [fetch] = [s for s in spans if s.name == "auth_jwt jwks"]
        assert fetch.parent_id == server.span_id and fetch.kind == 1  # INTERNAL
        assert server.start_ns <= fetch.start_ns <= fetch.end_ns <= server.end_ns
        assert jwks.fetches == 2
    finally:
        jwks.stop()


def jwk_of(key: Any, kid: str) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": "ES256", "use": "sig"}
