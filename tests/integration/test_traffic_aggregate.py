"""Aggregated routes through the real gateway: one answer from several real upstream
servers called in parallel, partial answers, failures, breakers, identity and traces."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.net import request
from tests.support.otlp import OtlpReceiver
from tests.support.realtime import AUDIENCE, ISSUER, SECRET, token
from tests.support.upstream import Upstream

CLIENT = 3


@pytest.fixture
def three() -> Iterator[tuple[Upstream, Upstream, Upstream]]:
    servers = (Upstream(), Upstream(), Upstream())
    yield servers
    for server in servers:
        server.stop()


def aggregated(
    urls: tuple[str, ...],
    calls: list[dict[str, Any]],
    match: dict[str, Any] | None = None,
    services: dict[str, Any] | None = None,
    **route: Any,
) -> dict[str, Any]:
    names = ("users", "tasks", "state")
    return {
        "services": {
            name: {"targets": [url], **(services or {}).get(name, {})}
            for name, url in zip(names, urls, strict=False)
        },
        "routes": [
            {
                "name": "dash",
                "match": match or {"prefix": "/dash"},
                "aggregate": {"calls": calls},
                **route,
            }
        ],
    }


def metric(body: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    found = re.search(rf"^{name}\{{{re.escape(wanted)}\}} ([\d.e+]+)$", body, re.M)
    return float(found.group(1)) if found else 0.0


def test_three_100ms_calls_answer_in_about_100ms_with_their_json_under_keys(three, start_gateway):
    calls = [
        {"service": name, "path": "/slow", "key": name} for name in ("users", "tasks", "state")
    ]
    gateway = start_gateway(aggregated(tuple(u.url for u in three), calls))
    assert request(gateway.port, "GET", "/dash?delay=0.1").status == 200  # warm the pools
    times = []
    for _ in range(5):
        started = time.perf_counter()
        response = request(gateway.port, "GET", "/dash?delay=0.1")
        times.append(time.perf_counter() - started)
        assert response.status == 200
        assert response.header("content-type") == "application/json"
        assert json.loads(response.body) == {
            "users": {"slow": True},
            "tasks": {"slow": True},
            "state": {"slow": True},
        }
        assert response.header("x-potok-partial") is None
    # Sequential would be 300 ms or more; parallel is 100 ms plus the gateway's share.
    assert 0.1 <= sorted(times)[2] < 0.2, times


def test_path_params_and_the_query_go_to_each_call_and_objects_merge_in_order(three, start_gateway):
    calls = [
        {"service": "users", "path": "/users/{id}", "key": "user"},
        {"service": "tasks", "path": "/tasks/of/{id}"},  # merged at the top level
        {"service": "state", "path": "/static"},
    ]
    gateway = start_gateway(
        aggregated(tuple(u.url for u in three), calls, match={"path": "/dash/{id}"})
    )
    response = request(gateway.port, "GET", "/dash/42?page=2&x=y")
    assert response.status == 200
    answer = json.loads(response.body)
    assert answer["user"]["path"] == "/users/42"
    assert answer["user"]["query"] == "page=2&x=y"
    # The echoes of tasks and state both give `path`: the later call (state) wins.
    assert answer["path"] == "/static" and answer["query"] == "page=2&x=y"
    assert three[1].hits["/tasks/of/42"] == 1


def test_an_optional_call_that_fails_leaves_a_200_that_names_it(three, start_gateway):
    calls = [
        {"service": "users", "path": "/echo", "key": "user"},
        {"service": "tasks", "path": "/status/500", "key": "tasks", "required": False},
        {"service": "state", "path": "/bytes", "key": "state", "required": False},
    ]
    gateway = start_gateway(aggregated(tuple(u.url for u in three), calls))
    response = request(gateway.port, "GET", "/dash?size=10")
    assert response.status == 200
    assert response.header("x-potok-partial") == "tasks,state"  # a 500; not JSON
    assert set(json.loads(response.body)) == {"user"}
    metrics = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    assert metric(metrics, "aggregate_calls_total", route="dash", call="user", result="ok") == 1
    assert (
        metric(metrics, "aggregate_calls_total", route="dash", call="tasks", result="status") == 1
    )
    assert (
        metric(metrics, "aggregate_calls_total", route="dash", call="state", result="invalid") == 1
    )
    assert metric(metrics, "aggregate_partial_total", route="dash") == 1
    gateway.wait_for(lambda: any(line["path"] == "/dash" for line in gateway.access_log()))
    [line] = [line for line in gateway.access_log() if line["path"] == "/dash"]
    assert line["status"] == 200 and line["target"] == "partial:tasks,state"
    assert line["service"] == "users,tasks,state"


def test_a_required_call_that_fails_fails_the_answer_at_once(three, start_gateway):
    calls = [
        {"service": "users", "path": "/status/503", "key": "user"},
        {"service": "tasks", "path": "/slow", "key": "tasks"},
    ]
    gateway = start_gateway(aggregated(tuple(u.url for u in three), calls))
    started = time.perf_counter()
    response = request(gateway.port, "GET", "/dash?delay=2")
    assert time.perf_counter() - started < 1.5  # not waiting for the slow call
    assert response.status == 502
    assert response.header("content-type") == "application/problem+json"
    problem = json.loads(response.body)
    assert problem["status"] == 502 and problem["call"] == "user"
    assert "503" in problem["detail"]
    assert problem["request_id"] == response.header("x-request-id")


def test_a_call_over_its_timeout_is_504_when_required_and_partial_when_not(three, start_gateway):
    calls = [
        {"service": "users", "path": "/echo", "key": "user"},
        {"service": "tasks", "path": "/slow", "key": "tasks", "timeout": "200ms"},
    ]
    gateway = start_gateway(aggregated(tuple(u.url for u in three), calls))
    started = time.perf_counter()
    response = request(gateway.port, "GET", "/dash?delay=3")
    assert time.perf_counter() - started < 1.0
    assert response.status == 504
    assert json.loads(response.body)["call"] == "tasks"

    calls[1]["required"] = False
    optional = start_gateway(aggregated(tuple(u.url for u in three), calls))
    response = request(optional.port, "GET", "/dash?delay=3")
    assert response.status == 200 and response.header("x-potok-partial") == "tasks"
    metrics = request(optional.port, "GET", "/api/v1/metrics").body.decode()
    assert (
        metric(metrics, "aggregate_calls_total", route="dash", call="tasks", result="timeout") == 1
    )


def test_an_answer_over_max_body_fails_its_call(three, start_gateway):
    calls = [
        {"service": "users", "path": "/echo", "key": "user"},
        {"service": "tasks", "path": "/bytes", "key": "tasks", "max_body": "1KiB"},
    ]
    gateway = start_gateway(aggregated(tuple(u.url for u in three), calls))
    # /bytes says Content-Length 4096: refused from its head.
    response = request(gateway.port, "GET", "/dash?size=4096")
    assert response.status == 502
    assert "over the 1024 allowed" in json.loads(response.body)["detail"]
    metrics = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    assert (
        metric(metrics, "aggregate_calls_total", route="dash", call="tasks", result="too_large")
        == 1
    )
    # A chunked answer (no length) fails as it grows past the limit.
    calls = [
        {"service": "users", "path": "/echo", "key": "user"},
        {
            "service": "state",
            "path": "/stream",
            "key": "big",
            "max_body": "1KiB",
            "required": False,
        },
    ]
    streamed = start_gateway(aggregated(tuple(u.url for u in three), calls))
    response = request(streamed.port, "GET", "/dash?size=4096&chunk=512")
    assert response.status == 200 and response.header("x-potok-partial") == "big"
    metrics = request(streamed.port, "GET", "/api/v1/metrics").body.decode()
    assert (
        metric(metrics, "aggregate_calls_total", route="dash", call="big", result="too_large") == 1
    )


def test_a_call_whose_breaker_is_open_is_503_with_retry_after(three, start_gateway):
    breaker = {"circuit_breaker": {"consecutive_failures": 3, "open_for": "30s"}}
    calls = [
        {"service": "users", "path": "/echo", "key": "user"},
        {"service": "tasks", "path": "/echo", "key": "tasks"},
    ]
    three[1].fail_with = 500
    gateway = start_gateway(
        aggregated(tuple(u.url for u in three), calls, services={"tasks": breaker})
    )
    statuses = [request(gateway.port, "GET", "/dash").status for _ in range(3)]
    assert statuses == [502] * 3
    seen = three[1].total
    response = request(gateway.port, "GET", "/dash")
    assert response.status == 503
    assert int(response.header("retry-after") or 0) >= 1
    assert "circuit breaker is open" in json.loads(response.body)["detail"]
    assert three[1].total == seen  # the open breaker sent nothing
    metrics = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    assert metric(metrics, "upstream_breaker_rejected_total", service="tasks") == 1
    assert (
        metric(metrics, "aggregate_calls_total", route="dash", call="tasks", result="breaker_open")
        == 1
    )


def test_retries_of_the_service_apply_to_its_call(pair, start_gateway):
    bad, good = pair
    bad.fail_with = 502
    config = {
        "services": {
            "users": {
                "targets": [bad.url, good.url],
                "balancer": "round_robin",
                "retry": {"attempts": 2, "on_status": [502]},
            }
        },
        "routes": [
            {
                "name": "dash",
                "match": {"path": "/dash"},
                "aggregate": {"calls": [{"service": "users", "path": "/echo", "key": "u"}]},
            }
        ],
    }
    gateway = start_gateway(config)
    assert [request(gateway.port, "GET", "/dash").status for _ in range(6)] == [200] * 6
    metrics = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    assert metric(metrics, "upstream_retries_total", service="users", reason="502") >= 1


def test_identity_request_id_and_trace_context_reach_every_call(three, start_gateway):
    receiver = OtlpReceiver()
    try:
        calls = [
            {"service": name, "path": "/echo", "key": name} for name in ("users", "tasks", "state")
        ]
        config = aggregated(
            tuple(u.url for u in three),
            calls,
            policies={
                "auth_jwt": {
                    "issuers": [
                        {
                            "issuer": ISSUER,
                            "audiences": [AUDIENCE],
                            "keys": [{"algorithm": "HS256", "secret": SECRET}],
                        }
                    ]
                }
            },
        )
        config["tracing"] = {
            "enabled": True,
            "endpoint": receiver.endpoint,
            "batch": {"interval": "50ms"},
        }
        gateway = start_gateway(config)
        assert request(gateway.port, "GET", "/dash").status == 401
        response = request(
            gateway.port,
            "GET",
            "/dash",
            headers={
                "Authorization": f"Bearer {token(sub='user-7', org='acme')}",
                "Accept-Encoding": "gzip",
                "X-Client": "web",
            },
        )
        assert response.status == 200
        answer = json.loads(response.body)
        request_id = response.header("x-request-id")
        parents = []
        for name in ("users", "tasks", "state"):
            headers = {k.lower(): v for k, v in answer[name]["headers"]}
            assert headers["x-user-id"] == "user-7"
            assert headers["x-org-id"] == "acme"
            assert headers["x-request-id"] == request_id
            assert headers["x-client"] == "web"
            assert "accept-encoding" not in headers  # the answer must be readable JSON
            parents.append(headers["traceparent"].split("-"))
        trace_ids = {p[1] for p in parents}
        assert len(trace_ids) == 1
        assert len({p[2] for p in parents}) == 3  # a client span each
        spans = receiver.wait_for_spans(trace_ids.pop(), 4)
        [server] = [s for s in spans if s.kind != CLIENT]
        clients = [s for s in spans if s.kind == CLIENT]
        assert {s.span_id for s in clients} == {p[2] for p in parents}
        assert all(s.parent_id == server.span_id for s in clients)
    finally:
        receiver.stop()


def test_other_methods_get_405(three, start_gateway):
    calls = [{"service": "users", "path": "/echo", "key": "u"}]
    gateway = start_gateway(aggregated(tuple(u.url for u in three), calls))
    response = request(gateway.port, "POST", "/dash", body=b"{}")
    assert response.status == 405 and response.header("allow") == "GET, HEAD"
    got = request(gateway.port, "GET", "/dash")
    response = request(gateway.port, "HEAD", "/dash")
    assert response.status == 200 and response.body == b""
    # Composed from GETs like the GET's answer, only not sent: the same length.
    assert response.header("content-length") == str(len(got.body))


@pytest.mark.parametrize(
    ("route", "named"),
    [
        ({"service": "users"}, "aggregate: not with service"),
        ({"mirror": {"service": "tasks"}}, "aggregate: not with mirror"),
        ({"match": {"path": "/d", "methods": ["POST"]}}, "GET and HEAD only"),
    ],
)
def test_config_errors_name_the_field(route, named, tmp_path):
    calls = [{"service": "users", "path": "/echo", "key": "u"}]
    config = aggregated(("http://127.0.0.1:1", "http://127.0.0.1:2"), calls)
    config["routes"][0].update(route)
    _refused(config, tmp_path, "routes[0]", named)


def test_a_path_parameter_the_match_does_not_define_is_refused(tmp_path):
    calls = [{"service": "users", "path": "/users/{id}", "key": "u"}]
    config = aggregated(("http://127.0.0.1:1",), calls, match={"path": "/d/{user}"})
    _refused(config, tmp_path, "routes[0]", "aggregate.calls[0].path: uses id")


def test_an_unknown_service_and_a_twice_used_key_are_refused(tmp_path):
    calls = [{"service": "nope", "path": "/x", "key": "u"}]
    config = aggregated(("http://127.0.0.1:1",), calls)
    _refused(config, tmp_path, "routes[0].aggregate.calls[0].service", "unknown service 'nope'")
    calls = [
        {"service": "users", "path": "/x", "key": "u"},
        {"service": "users", "path": "/y", "key": "u", "name": "other"},
    ]
    _refused(aggregated(("http://127.0.0.1:1",), calls), tmp_path, "aggregate", "same `key`")


def _refused(config: dict[str, Any], tmp_path: Any, where: str, message: str) -> None:
    import subprocess
    import sys

    import yaml

    path = tmp_path / "potok.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "potok", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert where in out and message in out, out


_ = GatewayProcess  # the fixture's type, for readers


def test_a_full_bulkhead_is_503_for_its_call(three, start_gateway):
    calls = [{"service": "users", "path": "/slow", "key": "user"}]
    gateway = start_gateway(
        aggregated(
            tuple(u.url for u in three),
            calls,
            services={"users": {"bulkhead": {"max_concurrent": 1}}},
        )
    )

    async def both() -> list[int]:
        async with aiohttp.ClientSession() as session:

            async def one(delay: float) -> int:
                url = f"http://127.0.0.1:{gateway.port}/dash?delay={delay}"
                async with session.get(url) as response:
                    await response.read()
                    return response.status

            first = asyncio.ensure_future(one(1.0))
            await asyncio.sleep(0.3)  # the first holds the only slot
            second = await one(0)
            return [await first, second]

    assert asyncio.run(both()) == [200, 503]
    metrics = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    assert metric(metrics, "upstream_bulkhead_rejected_total", service="users") == 1


def test_the_routes_deadline_cancels_the_calls(three, start_gateway):
    calls = [{"service": "users", "path": "/slow", "key": "user", "timeout": "10s"}]
    gateway = start_gateway(
        aggregated(tuple(u.url for u in three), calls, timeouts={"request": "300ms"})
    )
    started = time.perf_counter()
    response = request(gateway.port, "GET", "/dash?delay=5")
    assert response.status == 504
    assert time.perf_counter() - started < 2.0
    # The call was dropped with the request: the next one gets a fresh answer at once.
    assert request(gateway.port, "GET", "/dash?delay=0").status == 200
