"""Listeners: plain and https side by side, what each serves, the 308 redirect to https,
TLS versions/ALPN/ciphers, session resumption, X-Forwarded-Proto and HSTS by scheme, two
workers on every listener, and a bad certificate at start-up."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.gateway import GatewayProcess, simple_config
from tests.support.net import ResponseReader, build_request, free_port, request
from tests.support.tls_listeners import (
    Pki,
    http_listener,
    https_listener,
    https_request,
    tls_connection,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


def _forwarded_proto(response):
    headers = {k.lower(): v for k, v in json.loads(response.body)["headers"]}
    return headers.get("x-forwarded-proto")


@pytest.fixture(scope="module")
def front(pki, upstream):
    """http (proxy only) + https (everything) + http redirecting, one gateway."""
    chain, key = pki.issue("gateway.test", "localhost")
    plain, secure, redirect = free_port(), free_port(), free_port()
    config = simple_config(upstream.url)
    config["policies"] = {"security_headers": {"hsts": {"max_age": 600}}}
    config["server"] = {
        "listeners": [
            http_listener(plain, serves=["proxy"]),
            https_listener(secure, chain, key),
            http_listener(redirect, redirect_https=True),
        ]
    }
    gateway = GatewayProcess(config, workers=2)
    yield gateway, plain, secure, redirect
    gateway.stop()


def test_https_and_http_listeners_serve_the_routes_with_their_scheme(pki, front):
    _, plain, secure, _ = front
    context = pki.client_context()
    over_tls = https_request(secure, context, path="/echo")
    assert over_tls.status == 200
    assert _forwarded_proto(over_tls) == "https"
    over_plain = request(plain, "GET", "/echo")
    assert over_plain.status == 200 and _forwarded_proto(over_plain) == "http"
    # A client's own X-Forwarded-Proto is not believed (it is not a trusted proxy).
    spoofed = request(plain, "GET", "/echo", {"X-Forwarded-Proto": "https"})
    assert _forwarded_proto(spoofed) == "http"


def test_what_each_listener_serves(pki, front):
    _, plain, secure, _ = front
    # proxy only: the own API and metrics are not there (the catch-all route takes the
    # paths to the upstream), probes are on every listener.
    assert request(plain, "GET", "/api/v1/health").status == 200
    for path in ("/api/openapi.json", "/api/v1/metrics"):
        assert json.loads(request(plain, "GET", path).body)["path"] == path  # the upstream's echo
    context = pki.client_context()
    assert "openapi" in json.loads(https_request(secure, context, path="/api/openapi.json").body)
    scrape = https_request(secure, context, path="/api/v1/metrics")
    assert "http_requests_total" in scrape.body.decode()


def test_hsts_only_on_https_answers(pki, front):
    _, plain, secure, _ = front
    assert (
        https_request(secure, pki.client_context(), path="/x").header("Strict-Transport-Security")
        == "max-age=600; includeSubDomains"
    )
    assert request(plain, "GET", "/x").header("Strict-Transport-Security") is None
    # Even with a client claiming https: only a trusted proxy may say so.
    claimed = request(plain, "GET", "/x", {"X-Forwarded-Proto": "https"})
    assert claimed.header("Strict-Transport-Security") is None
    # An upstream's error answer passes through with it too.
    assert (
        https_request(secure, pki.client_context(), path="/status/404").header(
            "Strict-Transport-Security"
        )
        == "max-age=600; includeSubDomains"
    )


def test_redirect_to_https_keeps_path_query_method_and_host(front):
    _, _, secure, redirect = front
    answer = request(redirect, "GET", "/a/b?x=1&y=%20", {"Host": "shop.test:8080"})
    assert answer.status == 308
    assert answer.header("Location") == f"https://shop.test:{secure}/a/b?x=1&y=%20"
    posted = request(redirect, "POST", "/orders", {"Host": "shop.test"}, b"{}")
    assert posted.status == 308
    assert posted.header("Location") == f"https://shop.test:{secure}/orders"
    v6 = request(redirect, "GET", "/", {"Host": "[::1]:80"})
    assert v6.header("Location") == f"https://[::1]:{secure}/"


def test_acme_challenges_are_not_redirected(front, upstream):
    _, _, _, redirect = front
    answer = request(redirect, "GET", "/.well-known/acme-challenge/token123")
    assert answer.status == 200  # routed like any request: here the catch-all proxies it
    assert upstream.requests[-1]["path"] == "/.well-known/acme-challenge/token123"


def test_redirect_to_port_443_leaves_the_port_out(upstream):
    redirect = free_port()
    config = simple_config(upstream.url)
    config["server"] = {
        "listeners": [http_listener(redirect, redirect_https=True, redirect_port=443)]
    }
    gateway = GatewayProcess(config)
    try:
        answer = request(redirect, "GET", "/login?next=/", {"Host": "shop.test:80"})
        assert answer.status == 308
        assert answer.header("Location") == "https://shop.test/login?next=/"
    finally:
        gateway.stop()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_versions_alpn_and_ciphers(pki, front):
    _, _, secure, _ = front
    with tls_connection(secure, pki.client_context()) as sock:
        assert sock.version() == "TLSv1.3"
        assert sock.selected_alpn_protocol() == "http/1.1"
    with tls_connection(secure, pki.client_context(maximum=ssl.TLSVersion.TLSv1_2)) as sock:
        assert sock.version() == "TLSv1.2"
        name, _, _ = sock.cipher()
        assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name)
    old = pki.client_context()
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError), tls_connection(secure, old):
        pass
    # A TLS 1.2 client offering only CBC suites (outside "intermediate") is refused.
    weak = pki.client_context(maximum=ssl.TLSVersion.TLSv1_2)
    weak.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA")
    with pytest.raises(ssl.SSLError), tls_connection(secure, weak):
        pass
    # ALPN: h2 first, then http/1.1 (HTTP/2 is on by default); a client of neither gets none.
    with tls_connection(secure, pki.client_context(alpn=("h2", "http/1.1"))) as sock:
        assert sock.selected_alpn_protocol() == "h2"
    with tls_connection(secure, pki.client_context(alpn=("http/1.1",))) as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
    with tls_connection(secure, pki.client_context(alpn=("spdy/3",))) as sock:
        assert sock.selected_alpn_protocol() is None


def test_sessions_resume_whichever_worker_accepts(pki, front):
    """Tickets: the second handshake is an abbreviated one. Ten in a row over two workers
    (the kernel spreads connections across them): the ticket keys are shared."""
    _, _, secure, _ = front
    context = pki.client_context()
    with tls_connection(secure, context) as sock:
        sock.sendall(build_request("GET", "/x"))
        ResponseReader(sock).read()  # TLS 1.3 tickets arrive after the handshake
        session = sock.session
        assert not sock.session_reused
    for _ in range(10):
        with tls_connection(secure, context, session=session) as sock:
            sock.sendall(build_request("GET", "/x"))
            assert ResponseReader(sock).read().status == 200
            assert sock.session_reused


def test_keep_alive_and_pipelining_over_tls(pki, front):
    _, _, secure, _ = front
    with tls_connection(secure, pki.client_context()) as sock:
        sock.sendall(build_request("GET", "/echo/1") + build_request("GET", "/echo/2"))
        reader = ResponseReader(sock)
        first, second = reader.read(), reader.read()
        assert json.loads(first.body)["path"] == "/echo/1"
        assert json.loads(second.body)["path"] == "/echo/2"
        sock.sendall(build_request("POST", "/sink", body=b"z" * 300_000))
        assert json.loads(reader.read().body)["length"] == 300_000


def test_a_bad_certificate_at_start_is_a_clear_error(pki, tmp_path, upstream):
    chain, _ = pki.issue("gateway.test")
    other_chain, other_key = pki.issue("other.test")
    broken = tmp_path / "broken.key"
    broken.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    for cert, key, says in (
        (chain, str(tmp_path / "missing.key"), "missing.key: no such file"),
        (chain, str(broken), "broken.key"),
        (chain, other_key, "key values mismatch"),
    ):
        config = simple_config(upstream.url)
        config["server"] = {"listeners": [https_listener(free_port(), cert, key)]}
        path = tmp_path / "potok.yaml"
        path.write_text(yaml.safe_dump(config))
        run = subprocess.run(
            [sys.executable, "-m", "potok", "run", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 1
        assert "server.listeners[0] (https:" in run.stderr and says in run.stderr, run.stderr
    del other_chain


def test_config_checks_name_the_field(tmp_path, upstream):
    cases = [
        ({"listeners": [{"port": 1, "protocol": "https"}]}, "needs `tls`"),
        ({"listeners": [{"port": 1}], "port": 2}, "server.port: give either"),
        ({"listeners": [{"port": 1, "redirect_https": True}]}, "no https listener"),
        ({"listeners": [{"port": 1}, {"port": 1}]}, "server.listeners[1].port"),
    ]
    for server, says in cases:
        config = {**simple_config(upstream.url), "server": server}
        path = Path(tmp_path / "potok.yaml")
        path.write_text(yaml.safe_dump(config))
        run = subprocess.run(
            [sys.executable, "-m", "potok", "check", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode != 0 and says in run.stdout + run.stderr, (says, run.stdout)


def test_hsts_behind_a_trusted_proxy_that_terminated_tls(upstream):
    config = simple_config(upstream.url)
    config["policies"] = {"security_headers": {}}
    config["server"] = {"trusted_proxies": ["127.0.0.0/8"]}
    gateway = GatewayProcess(config)
    try:
        said = request(gateway.port, "GET", "/x", {"X-Forwarded-Proto": "https"})
        assert said.header("Strict-Transport-Security") == "max-age=31536000; includeSubDomains"
        assert request(gateway.port, "GET", "/x").header("Strict-Transport-Security") is None
    finally:
        gateway.stop()


def test_potok_check_loads_the_certificate_files(pki, tmp_path, upstream):
    chain, _ = pki.issue("gateway.test")
    _, other_key = pki.issue("other.test")
    config = simple_config(upstream.url)
    config["server"] = {"listeners": [https_listener(free_port(), chain, other_key)]}
    path = tmp_path / "potok.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run(
        [sys.executable, "-m", "potok", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert "server.listeners[0]" in run.stdout and "key values mismatch" in run.stdout


def test_http2_over_tls_on_an_https_listener(pki, front, upstream):
    """ALPN h2 on the https listener: curl speaks HTTP/2 through the gateway, the answer
    comes from the route's upstream, and the upstream sees X-Forwarded-Proto: https."""
    _, _, secure, _ = front
    run = subprocess.run(
        [
            "curl", "-sS", "--http2", "--cacert", str(pki.ca_path),
            "--resolve", f"gateway.test:{secure}:127.0.0.1",
            "-w", "\\n%{http_version}", f"https://gateway.test:{secure}/echo/h2",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    body, _, version = run.stdout.rpartition("\n")
    assert version == "2"
    headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert headers["x-forwarded-proto"] == "https"
