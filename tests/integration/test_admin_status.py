"""`potok status`: a running gateway summed up in a terminal, from its admin API; and the
admin API's view of WebSocket connections and channels."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from potok.cli.main import main
from tests.support.gateway import GatewayProcess
from tests.support.identity_gateway import call
from tests.support.net import free_port, request
from tests.support.realtime import Client, realtime_config, token


@pytest.fixture(scope="module")
def gateway(upstream) -> Iterator[GatewayProcess]:
    listen = free_port()
    config = {
        "metrics": {"listen": f"127.0.0.1:{listen}"},
        "services": {
            "up": {"targets": [upstream.url], "circuit_breaker": {"consecutive_failures": 2}},
            "spare": {"targets": ["http://127.0.0.1:1"]},
        },
        "routes": [
            {
                "name": "limited",
                "match": {"prefix": "/limited"},
                "service": "up",
                "policies": {"rate_limit": {"limit": 1, "window": "60s"}},
            },
            {"name": "all", "match": {"prefix": "/"}, "service": "up"},
        ],
    }
    process = GatewayProcess(config)
    process.listen_port = listen  # type: ignore[attr-defined]
    yield process
    process.stop()


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def status(*args: str) -> Result:
    """`potok status ...` through the CLI's entry point, in this process (a fresh
    interpreter would spend seconds importing on a loaded machine)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["status", *args])
    return Result(code, out.getvalue(), err.getvalue())


def test_status_shows_workers_services_breakers_rates_limits_and_reloads(gateway):
    admin = "/api/v1/admin/services/up/breaker"
    call(gateway.listen_port, "POST", admin, {"mode": "open"})
    for _ in range(3):
        request(gateway.port, "GET", "/limited/a")  # 503 (the breaker), then 429, 429
    call(gateway.listen_port, "POST", "/api/v1/admin/reload")
    result = status("--config", str(gateway.config_path), "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "1/1 workers up" in out
    assert "WORKERS" in out and str(gateway.process.pid) in out
    assert "SERVICES" in out and "up " in out and "spare" in out
    assert "BREAKERS NOT CLOSED" in out
    assert "held open by an operator" in out
    assert "TRAFFIC" in out and "limited" in out and "req/s" in out
    assert "RATE LIMITS" in out and "ip:127.0.0.1 (2)" in out
    assert "RELOADS" in out and "admin" in out and "unchanged" in out
    call(gateway.listen_port, "POST", admin, {"mode": "auto"})


def test_status_as_json_is_the_admin_documents_status(gateway):
    result = status("--url", f"http://127.0.0.1:{gateway.listen_port}", "--json", "--interval", "0")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document["services"]) == {"up", "spare"}
    assert document["workers"][0]["pid"] == gateway.process.pid


def test_status_says_why_it_cannot_answer(gateway, tmp_path):
    nothing = status("--url", f"http://127.0.0.1:{free_port()}", "--interval", "0")
    assert nothing.returncode == 1
    assert "potok status:" in nothing.stderr and "refused" in nothing.stderr.lower()
    config = tmp_path / "potok.yaml"
    config.write_text("services: {}\n")
    nowhere = status("--config", str(config))
    assert nowhere.returncode == 1
    assert "metrics.listen or admin.public" in nowhere.stderr
    public = status("--url", gateway.url, "--interval", "0")  # a user route answers there
    assert public.returncode == 1
    assert "not a Potok admin API answer" in public.stderr


def test_websocket_connections_and_channel_subscriptions_are_counted(upstream):
    listen = free_port()
    config = {
        "metrics": {"listen": f"127.0.0.1:{listen}"},
        "services": {"up": {"targets": [upstream.url]}},
        "routes": [{"name": "all", "match": {"prefix": "/"}, "service": "up"}],
        **realtime_config(),
    }
    gateway = GatewayProcess(config)

    async def scenario() -> dict:
        clients = [await Client.open(gateway.port) for _ in range(3)]
        for client in clients:
            await client.authenticate(token())
        for client in clients[:2]:
            assert (await client.subscribe("public:news"))["type"] == "subscribed"
        assert (await clients[2].subscribe("org:acme:tasks"))["type"] == "subscribed"
        document = call(listen, "GET", "/api/v1/admin/realtime").json()
        for client in clients:
            await client.close()
        return document

    try:
        document = asyncio.run(scenario())
    finally:
        gateway.stop()
    assert document["enabled"] is True
    assert document["connections"] == 3
    assert document["channel_count"] == 2
    assert document["channels"] == [
        {"channel": "public:news", "subscribers": 2},
        {"channel": "org:acme:tasks", "subscribers": 1},
    ]
