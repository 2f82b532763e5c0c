"""https:// upstreams through a real gateway: verification (CA bundle, system CAs, name,
expiry), SNI, mutual TLS, keep-alive reuse and idle expiry over TLS, the handshake timeout,
the connect metrics, health checks, DNS discovery and WebSocket pass-through to wss://.

Every upstream is a real TLS server on loopback with certificates from a throwaway CA;
each test has upstreams of its own, so the handshakes an upstream counts are the test's.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from tests.support.gateway import GatewayProcess
from tests.support.net import free_port, request
from tests.support.tls import Pki, TlsUpstream
from tests.support.upstream import RawUpstream


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(Path(tmp_path_factory.mktemp("pki")))


class Upstreams:
    """The upstreams of the module's gateway, one per case."""

    def __init__(self, pki: Pki) -> None:
        self.main = TlsUpstream(pki.server_context("localhost", "127.0.0.1"))
        self.idle = TlsUpstream(pki.server_context("localhost"))
        self.orders = TlsUpstream(pki.server_context("orders.internal"))
        self.expired = TlsUpstream(pki.server_context("localhost", expired=True))
        self.mtls = TlsUpstream(pki.server_context("localhost", require_client_cert=True))
        self.named = TlsUpstream(pki.server_context("localhost"))
        self.checked = TlsUpstream(pki.server_context("localhost"))
        self.old = TlsUpstream(pki.server_context("localhost", max_version=ssl.TLSVersion.TLSv1_2))

        async def never_speaks(reader: asyncio.StreamReader, _w: asyncio.StreamWriter) -> None:
            await reader.read()  # accepts the TCP connection, never answers the ClientHello

        self.silent = RawUpstream(never_speaks)

    def all(self) -> list[Any]:
        return list(vars(self).values())


def _service(url: str, **extra: Any) -> dict[str, Any]:
    # One attempt, no ejection or breaker: each request meets the target as configured.
    return {
        "targets": [url],
        "retry": {"attempts": 1},
        "passive_ejection": None,
        "circuit_breaker": None,
        **extra,
    }


def _config(pki: Pki, up: Upstreams) -> dict[str, Any]:
    ca = {"ca_file": pki.ca_file}
    services = {
        "main": _service(f"https://localhost:{up.main.port}", tls=ca),
        "byip": _service(
            f"https://127.0.0.1:{up.orders.port}",
            tls={**ca, "server_name": "orders.internal"},
        ),
        "ipsan": _service(f"https://127.0.0.1:{up.main.port}", tls=ca),
        "system": _service(f"https://localhost:{up.main.port}"),
        "expired": _service(f"https://localhost:{up.expired.port}", tls=ca),
        "wronghost": _service(f"https://localhost:{up.orders.port}", tls=ca),
        "insecure": _service(
            f"https://localhost:{up.orders.port}", tls={"insecure_skip_verify": True}
        ),
        "mtls": _service(
            f"https://localhost:{up.mtls.port}",
            tls={**ca, "cert_file": pki.client_cert_file, "key_file": pki.client_key_file},
        ),
        "nocert": _service(f"https://localhost:{up.mtls.port}", tls=ca),
        "silent": _service(
            f"https://127.0.0.1:{up.silent.port}", tls=ca, timeouts={"connect": "500ms"}
        ),
        "tls12": _service(f"https://localhost:{up.old.port}", tls=ca),
        "tls13": _service(f"https://localhost:{up.old.port}", tls={**ca, "min_version": "1.3"}),
        "idle": _service(
            f"https://localhost:{up.idle.port}", tls=ca, pool={"idle_timeout": "300ms"}
        ),
        "named": _service(f"https://localhost:{up.named.port}", tls=ca, dns={"family": "ipv4"}),
        "checked": _service(
            f"https://localhost:{up.checked.port}",
            tls=ca,
            health_check={"path": "/health", "interval": "200ms"},
        ),
    }
    routes = [
        {"name": name, "match": {"prefix": f"/{name}/"}, "service": name, "strip_prefix": True}
        for name in services
    ]
    return {"services": services, "routes": routes}


@pytest.fixture(scope="module")
def upstreams(pki: Pki) -> Iterator[Upstreams]:
    servers = Upstreams(pki)
    yield servers
    for server in servers.all():
        server.stop()


@pytest.fixture(scope="module")
def gateway(pki: Pki, upstreams: Upstreams) -> Iterator[GatewayProcess]:
    process = GatewayProcess(_config(pki, upstreams))
    yield process
    process.stop()


def metric(gateway: GatewayProcess, name: str, **labels: str) -> float:
    text = request(gateway.port, "GET", "/api/v1/metrics").body.decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _problem(gateway: GatewayProcess, path: str) -> dict[str, Any]:
    response = request(gateway.port, "GET", path)
    assert response.status == 502, response
    assert response.header("content-type") == "application/problem+json"
    problem = response.json()
    assert isinstance(problem, dict)
    return problem


def _logged(gateway: GatewayProcess, service: str) -> dict[str, Any]:
    """The gateway's log line about the failed handshake with `service`'s target."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in gateway.stderr().splitlines():
            if "upstream TLS handshake failed" in line and f'"service": "{service}"' in line:
                entry: dict[str, Any] = json.loads(line)
                return entry
            if "upstream TLS handshake failed" in line and f"service={service}" in line:
                return {"line": line}
        time.sleep(0.05)
    raise AssertionError(f"no TLS failure logged for {service}:\n{gateway.stderr()}")


def test_keep_alive_reuses_one_tls_connection_and_sends_the_host_name(gateway, upstreams):
    main = upstreams.main
    for _ in range(20):
        response = request(gateway.port, "GET", "/main/echo")
        assert response.status == 200, response
    assert main.handshakes == 1
    assert main.server_names == ["localhost"]
    assert dict(main.requests[-1]["headers"])["Host"] == f"localhost:{main.port}"  # type: ignore[call-overload]
    # New connections only: one TCP connect and one handshake for 20 requests.
    labels = {"service": "main"}
    assert metric(gateway, "upstream_connect_duration_seconds_count", phase="tcp", **labels) == 1
    assert metric(gateway, "upstream_connect_duration_seconds_count", phase="tls", **labels) == 1
    assert metric(gateway, "upstream_connect_duration_seconds_sum", phase="tls", **labels) > 0


def test_idle_tls_connections_expire_like_plain_ones(gateway, upstreams):
    assert request(gateway.port, "GET", "/idle/echo").status == 200
    assert request(gateway.port, "GET", "/idle/echo").status == 200
    assert upstreams.idle.handshakes == 1
    time.sleep(0.8)  # past the 300 ms idle timeout
    assert request(gateway.port, "GET", "/idle/echo").status == 200
    assert upstreams.idle.handshakes == 2


def test_an_ip_target_is_checked_and_named_by_server_name(gateway, upstreams):
    assert request(gateway.port, "GET", "/byip/echo").status == 200
    assert upstreams.orders.server_names[-1] == "orders.internal"


def test_an_ip_target_without_server_name_is_checked_against_the_ip_and_sends_no_sni(
    gateway, upstreams
):
    before = upstreams.main.handshakes
    assert request(gateway.port, "GET", "/ipsan/echo").status == 200
    assert upstreams.main.handshakes == before + 1
    assert upstreams.main.server_names[-1] is None  # RFC 6066: no IP literals in SNI


def test_system_cas_refuse_a_private_ca(gateway):
    problem = _problem(gateway, "/system/echo")
    assert "unable to get local issuer certificate" in problem["detail"]
    assert "unable to get local issuer certificate" in str(_logged(gateway, "system"))
    assert metric(gateway, "upstream_tls_failures_total", service="system", reason="unknown_ca")


def test_an_expired_certificate_is_refused_with_a_clear_reason(gateway, upstreams):
    problem = _problem(gateway, "/expired/echo")
    assert "certificate has expired" in problem["detail"]
    logged = str(_logged(gateway, "expired"))
    assert "certificate has expired" in logged
    assert f"127.0.0.1:{upstreams.expired.port}" in logged or "localhost" in logged
    assert upstreams.expired.total == 0  # no request went to it
    assert metric(gateway, "upstream_tls_failures_total", service="expired", reason="expired")


def test_a_certificate_for_another_name_is_refused(gateway, upstreams):
    problem = _problem(gateway, "/wronghost/echo")
    assert "Hostname mismatch" in problem["detail"]
    assert "Hostname mismatch" in str(_logged(gateway, "wronghost"))
    assert (
        upstreams.orders.hits["/echo"] == upstreams.orders.total - upstreams.orders.hits["/health"]
    )  # only the byip/insecure cases' requests reached it
    assert metric(
        gateway, "upstream_tls_failures_total", service="wronghost", reason="hostname_mismatch"
    )


def test_insecure_skip_verify_accepts_any_certificate_and_is_logged(gateway):
    assert request(gateway.port, "GET", "/insecure/echo").status == 200
    assert "insecure_skip_verify" in gateway.stderr()
    assert "verification is OFF" in gateway.stderr()


def test_min_version_refuses_an_older_protocol(gateway, upstreams):
    assert request(gateway.port, "GET", "/tls12/echo").status == 200
    problem = _problem(gateway, "/tls13/echo")
    assert "TLS handshake with" in problem["detail"]
    # The server answers a 1.3-only ClientHello with an alert and hangs up.
    assert "closed the connection during the handshake" in problem["detail"]
    assert "min_version" in problem["detail"]
    assert metric(gateway, "upstream_tls_failures_total", service="tls13", reason="handshake")


def test_mutual_tls_presents_the_client_certificate(gateway, upstreams):
    response = request(gateway.port, "GET", "/mtls/peer")
    assert response.status == 200, response
    subject = response.json()["subject"]  # type: ignore[index]
    assert subject["commonName"] == "potok-gateway"


def test_an_upstream_requiring_a_client_certificate_refuses_a_gateway_without_one(gateway):
    response = request(gateway.port, "GET", "/nocert/peer")
    assert response.status == 502, response


def test_a_target_that_never_completes_the_handshake_times_out(gateway, upstreams):
    started = time.monotonic()
    problem = _problem(gateway, "/silent/echo")
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 5, elapsed
    assert "no TLS handshake within 0.5s" in problem["detail"]
    assert upstreams.silent.connections >= 1
    assert "no TLS handshake within" in str(_logged(gateway, "silent"))
    assert metric(gateway, "upstream_tls_failures_total", service="silent", reason="timeout")


def test_dns_discovered_addresses_are_checked_against_the_name(gateway, upstreams):
    deadline = time.monotonic() + 5
    while True:  # discovery swaps localhost for its address
        health = request(gateway.port, "GET", "/api/v1/health").json()
        assert isinstance(health, dict)
        targets = [t["target"] for t in health["services"]["named"]["targets"]]
        if targets == [f"127.0.0.1:{upstreams.named.port}"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert targets == [f"127.0.0.1:{upstreams.named.port}"]
    response = request(gateway.port, "GET", "/named/echo")
    assert response.status == 200, response
    assert upstreams.named.server_names == ["localhost"]


def test_health_checks_speak_tls(gateway, upstreams):
    deadline = time.monotonic() + 5
    while upstreams.checked.health_checks < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstreams.checked.health_checks >= 2
    assert set(upstreams.checked.server_names) == {"localhost"}


async def test_websocket_pass_through_to_a_wss_upstream(gateway, upstreams):
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{gateway.url}/main/ws") as ws,
    ):
        await ws.send_str("over tls")
        assert (await ws.receive(timeout=5)).data == "over tls"
        await ws.send_bytes(b"\x00\x01" * 40_000)
        assert (await ws.receive(timeout=5)).data == b"\x00\x01" * 40_000


def test_a_free_port_refusing_tcp_is_still_a_connect_failure(pki, start_gateway):
    """TCP refused on an https:// target: the plain connect failure it always was."""
    port = free_port()
    gateway = start_gateway(
        {
            "services": {
                "dead": _service(f"https://localhost:{port}", tls={"ca_file": pki.ca_file})
            },
            "routes": [{"name": "dead", "match": {"prefix": "/"}, "service": "dead"}],
        }
    )
    problem = _problem(gateway, "/x")
    assert "cannot connect" in problem["detail"]


def test_a_reload_after_the_ca_bundle_changed_uses_the_new_one(tmp_path, start_gateway):
    """Same config text, new file contents: SIGHUP rebuilds the service's TLS context."""
    other = Pki(tmp_path)  # a second, unrelated CA and its server
    upstream = TlsUpstream(other.server_context("localhost"))
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(trustme.CA().cert_pem.bytes())  # not the upstream's CA
    try:
        gateway = start_gateway(
            {
                "services": {
                    "svc": _service(
                        f"https://localhost:{upstream.port}", tls={"ca_file": str(bundle)}
                    )
                },
                "routes": [{"name": "svc", "match": {"prefix": "/"}, "service": "svc"}],
            }
        )
        assert request(gateway.port, "GET", "/echo").status == 502
        bundle.write_bytes(other.ca.cert_pem.bytes())
        gateway.signal(signal.SIGHUP)
        gateway.wait_for(lambda: "config reloaded" in gateway.stderr(), timeout=10)
        assert request(gateway.port, "GET", "/echo").status == 200
    finally:
        upstream.stop()
