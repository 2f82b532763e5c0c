"""Attacks at the edge (issue 13 items 2, 3, 25): encoded separators and `;` against the
tenant check, identity and forwarding headers spoofed with underscores or other names.

Each attack uses paths of its own, so the upstream's counters prove what reached it.
"""

from __future__ import annotations

import socket
import tempfile

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.identity_gateway import (
    add_user,
    auth_config,
    bearer,
    call,
    public_pem,
    rsa_private,
)
from tests.support.net import ResponseReader, build_request, request

PASSWORD = "edge attack tests password"


@pytest.fixture(scope="module")
def gateway(upstream):
    db_url = f"sqlite:///{tempfile.mkdtemp(prefix='potok-edge-')}/identity.db"
    add_user(db_url, "alice", PASSWORD, ("reader",), "acme")
    config = auth_config(upstream.url, db_url, public_pem(rsa_private()))
    process = GatewayProcess(config)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def acme(gateway) -> dict[str, str]:
    response = call(
        gateway.port, "POST", "/api/v1/auth/login", {"username": "alice", "password": PASSWORD}
    )
    assert response.status == 200, response
    return bearer(response.json()["access_token"])


def upstream_headers(response) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


# Item 2: the tenant check judges the path the upstream acts on --------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/orgs/acme/..%2fglobex/x",
        "/orgs/acme/..%2Fglobex/x",
        "/orgs/acme/..%5cglobex/x",
        "/orgs/acme/..%5Cglobex/x",
        "/orgs/acme/%2e%2e%2fglobex/x",
    ],
)
def test_an_encoded_separator_cannot_switch_the_tenant(gateway, upstream, acme, path):
    before = upstream.total
    response = request(gateway.port, "GET", path, acme)
    assert response.status == 400, response
    assert response.header("Content-Type") == "application/problem+json"
    assert upstream.total == before, "reached the upstream"


@pytest.mark.parametrize(
    "path", ["/orgs/acme/..;/globex/x", "/orgs/acme/..;x=1/globex/x", "/orgs/acme/%2e%2e;/globex/x"]
)
def test_a_semicolon_dot_segment_is_judged_resolved(gateway, upstream, acme, path):
    # /orgs/globex/x: another tenant, refused by the tenant check.
    before = upstream.total
    assert request(gateway.port, "GET", path, acme).status == 403
    assert upstream.total == before


def test_the_upstream_gets_the_path_the_tenant_check_judged(gateway, acme):
    response = request(gateway.port, "GET", "/orgs/globex/..;/acme/x", acme)
    assert response.status == 200, response
    assert response.json()["path"] == "/orgs/acme/x"


# Item 3: identity headers spoofed with underscores ---------------------------------------


SPOOF = {
    "X_User_Id": "alice-id",
    "x_user_roles": "admin",
    "X_Org_Id": "globex",
    "X_USER_SCOPES": "everything",
    "X-User_Id": "mixed",
    "X_Forwarded_For": "10.9.9.9",
    "X_Real_IP": "10.9.9.9",
    "X_Request_ID": "forged",
}


def test_underscore_twins_of_identity_headers_are_stripped(gateway, acme):
    open_response = request(gateway.port, "GET", "/open/underscore", SPOOF)
    assert open_response.status == 200
    names = {name.lower() for name, _ in open_response.json()["headers"]}
    assert not {name.lower() for name in SPOOF} & names
    assert not {"x-user-id", "x-user-roles", "x-org-id", "x-user-scopes"} & names
    # Behind authentication the upstream sees exactly the gateway's values.
    response = request(gateway.port, "GET", "/api/underscore", {**SPOOF, **acme})
    seen = upstream_headers(response)
    assert seen["x-user-roles"] == ["reader"]
    assert seen["x-org-id"] == ["acme"]
    assert not {name.lower() for name in SPOOF} & set(seen)
    # Without a token, an underscore identity does not open a protected route.
    assert request(gateway.port, "GET", "/admin/underscore", SPOOF).status == 401


def test_other_underscore_headers_pass(gateway):
    response = request(gateway.port, "GET", "/open/custom", {"X_Custom_Thing": "kept"})
    assert upstream_headers(response)["x_custom_thing"] == ["kept"]


def test_forwarded_and_x_real_ip_from_an_untrusted_peer_are_dropped(gateway):
    response = request(
        gateway.port,
        "GET",
        "/open/forwarded",
        {"Forwarded": "for=10.1.1.1;proto=https", "X-Real-IP": "10.1.1.1"},
    )
    seen = upstream_headers(response)
    assert "forwarded" not in seen and "x-real-ip" not in seen
    assert seen["x-forwarded-for"] == ["127.0.0.1"]


def test_forwarded_and_x_real_ip_from_a_trusted_proxy_are_kept(start_gateway, upstream):
    gateway = start_gateway(
        {
            "server": {"trusted_proxies": ["127.0.0.0/8"]},
            "services": {"up": {"targets": [upstream.url]}},
            "routes": [{"match": {"prefix": "/"}, "service": "up"}],
        }
    )
    headers = {
        "Forwarded": "for=203.0.113.7;proto=https",
        "X-Real-IP": "203.0.113.7",
        "X-Forwarded-For": "203.0.113.7",
        "X_Real_IP": "10.0.0.1",  # an underscore twin is dropped even from a trusted proxy
    }
    seen = upstream_headers(request(gateway.port, "GET", "/trusted", headers))
    assert seen["forwarded"] == ["for=203.0.113.7;proto=https"]
    assert seen["x-real-ip"] == ["203.0.113.7"]
    assert seen["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    assert "x_real_ip" not in seen


# Item 25: IPv4 clients of a dual-stack listener ------------------------------------------


def test_ipv4_clients_of_a_dual_stack_listener_appear_as_ipv4(start_gateway, upstream):
    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6; the dual-stack listener cannot be tested")
    gateway = start_gateway(
        {
            "server": {"host": "::"},
            "services": {"up": {"targets": [upstream.url]}},
            "routes": [{"match": {"prefix": "/"}, "service": "up"}],
        }
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(build_request("GET", "/dual-stack", {"X-Request-ID": "dual-stack-1"}))
        response = ResponseReader(sock).read()
    assert upstream_headers(response)["x-forwarded-for"] == ["127.0.0.1"]
    gateway.wait_for(lambda: any(e["request_id"] == "dual-stack-1" for e in gateway.access_log()))
    line = next(e for e in gateway.access_log() if e["request_id"] == "dual-stack-1")
    assert line["client_ip"] == "127.0.0.1"


# Item 21: the own pages' CSP needs no policy ---------------------------------------------


def test_api_docs_have_a_csp_without_a_security_headers_policy(start_gateway, upstream):
    gateway = start_gateway(
        {
            "services": {"up": {"targets": [upstream.url]}},
            "routes": [{"match": {"prefix": "/up"}, "service": "up"}],
        }
    )
    response = request(gateway.port, "GET", "/api/docs")
    assert response.status == 200
    csp = response.header("Content-Security-Policy")
    assert csp is not None and "frame-ancestors 'none'" in csp
    # Proxied answers get nothing they were not configured to get.
    assert request(gateway.port, "GET", "/up/x").header("Content-Security-Policy") is None
