"""The token service, API keys and identity forwarding, through the real gateway over sockets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
from tests.support.net import request

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def db_url():
    directory = Path(tempfile.mkdtemp(prefix="potok-auth-"))
    return f"sqlite:///{directory}/identity.db"


@pytest.fixture(scope="module")
def gateway(upstream, db_url):
    for name, roles, org in (
        ("alice", ("reader",), "acme"),
        ("root", ("admin",), None),
        ("carol", (), "acme"),
        ("dave", (), None),
        ("erin", (), None),
        ("frank", (), None),
    ):
        add_user(db_url, name, PASSWORD, roles, org)
    process = GatewayProcess(auth_config(upstream.url, db_url, public_pem(rsa_private())))
    yield process
    process.stop()


def potok_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "POTOK_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "potok", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        cwd=tempfile.gettempdir(),
    )


def login(gateway, username: str = "alice", password: str = PASSWORD):
    return call(
        gateway.port, "POST", "/api/v1/auth/login", {"username": username, "password": password}
    )


def tokens(gateway, username: str = "alice") -> dict:
    response = login(gateway, username)
    assert response.status == 200, response
    return response.json()


def echoed(response) -> dict[str, str]:
    return {name.lower(): value for name, value in response.json()["headers"]}


def eventually(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_login_returns_a_token_pair(gateway):
    response = login(gateway)
    assert response.status == 200
    assert response.header("Cache-Control") == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600


def test_access_token_opens_the_route_and_identity_is_forwarded(gateway, upstream):
    access = tokens(gateway)["access_token"]
    response = request(gateway.port, "GET", "/api/me", bearer(access))
    assert response.status == 200
    headers = echoed(response)
    profile = call(gateway.port, "GET", "/api/v1/auth/profile", **bearer(access)).json()
    assert headers["x-user-id"] == profile["id"]
    assert headers["x-user-roles"] == "reader"
    assert headers["x-org-id"] == "acme"
    assert profile["username"] == "alice" and profile["org"] == "acme"


def test_the_token_reaches_the_upstream_unless_forward_token_is_false(gateway):
    access = tokens(gateway)["access_token"]
    forwarded = echoed(request(gateway.port, "GET", "/api/me", bearer(access)))
    assert forwarded["authorization"] == f"Bearer {access}"
    sealed = request(gateway.port, "GET", "/sealed/me", bearer(access))
    assert sealed.status == 200
    headers = echoed(sealed)
    assert "authorization" not in headers
    assert headers["x-user-id"] and headers["x-org-id"] == "acme"
    # A second Authorization header (any case) is stripped too, not only the one checked.
    extra = {"Authorization": f"Bearer {access}", "AUTHORIZATION": "Basic c2VjcmV0"}
    assert "authorization" not in echoed(request(gateway.port, "GET", "/sealed/me", extra))
    assert request(gateway.port, "GET", "/sealed/me").status == 401


def test_a_route_may_take_the_token_from_another_header(gateway, upstream):
    access = tokens(gateway)["access_token"]
    own = {"X-Access-Token": f"Bearer {access}"}
    for _ in range(2):  # verified, then from the cache
        assert request(gateway.port, "GET", "/own-header/me", own).status == 200
    # There, the usual header is just another header: it does not authenticate.
    assert request(gateway.port, "GET", "/own-header/x", bearer(access)).status == 401
    assert upstream.hits["/own-header/x"] == 0


def test_an_authorization_header_named_hop_by_hop_does_not_authenticate(gateway, upstream):
    """`Connection: Authorization` makes the header hop-by-hop: it is dropped before the
    gateway acts on the request, so it neither reaches the upstream nor opens a route."""
    access = tokens(gateway)["access_token"]
    assert request(gateway.port, "GET", "/api/me", bearer(access)).status == 200  # cached now
    hop = {**bearer(access), "Connection": "keep-alive, Authorization"}
    assert request(gateway.port, "GET", "/api/hop", hop).status == 401
    assert upstream.hits["/api/hop"] == 0


def test_no_token_is_401_with_a_challenge(gateway, upstream):
    response = request(gateway.port, "GET", "/api/no-token")
    assert response.status == 401
    assert response.header("WWW-Authenticate").startswith("Bearer")
    assert response.header("Content-Type") == "application/problem+json"
    assert upstream.hits["/api/no-token"] == 0


def test_unknown_user_and_wrong_password_look_the_same(gateway):
    wrong = login(gateway, "erin", "not the password")
    unknown = login(gateway, "nobody-at-all", "not the password")
    assert wrong.status == unknown.status == 401
    assert wrong.json()["detail"] == unknown.json()["detail"] == "invalid username or password"


def test_repeated_failures_lock_the_username(gateway):
    for _ in range(3):
        assert login(gateway, "frank", "wrong password!").status == 401
    locked = login(gateway, "frank", PASSWORD)
    assert locked.status == 429
    assert int(locked.header("Retry-After")) >= 1
    # An unknown username locks the same way: locking reveals nothing.
    for _ in range(3):
        login(gateway, "ghost-user", "wrong password!")
    assert login(gateway, "ghost-user", "wrong password!").status == 429
    time.sleep(2.1)
    assert login(gateway, "frank", PASSWORD).status == 200


def test_refresh_rotates(gateway):
    first = tokens(gateway, "dave")
    response = call(
        gateway.port, "POST", "/api/v1/auth/refresh", {"refresh_token": first["refresh_token"]}
    )
    assert response.status == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert request(gateway.port, "GET", "/api/x", bearer(second["access_token"])).status == 200


def test_logout_revokes_the_access_token(gateway, upstream):
    pair = tokens(gateway)
    access = pair["access_token"]
    assert request(gateway.port, "GET", "/api/before-logout", bearer(access)).status == 200
    out = call(
        gateway.port,
        "POST",
        "/api/v1/auth/logout",
        {"refresh_token": pair["refresh_token"]},
        **bearer(access),
    )
    assert out.status == 204
    after = request(gateway.port, "GET", "/api/after-logout", bearer(access))
    assert after.status == 401
    assert upstream.hits["/api/after-logout"] == 0
    refresh = call(
        gateway.port, "POST", "/api/v1/auth/refresh", {"refresh_token": pair["refresh_token"]}
    )
    assert refresh.status == 401


def test_roles_are_enforced(gateway, upstream):
    reader = tokens(gateway, "alice")["access_token"]
    admin = tokens(gateway, "root")["access_token"]
    assert request(gateway.port, "GET", "/admin/panel", bearer(reader)).status == 403
    assert upstream.hits["/admin/panel"] == 0
    assert request(gateway.port, "GET", "/admin/panel", bearer(admin)).status == 200


def test_tenant_route_injects_the_org(gateway):
    access = tokens(gateway)["access_token"]
    headers = {**bearer(access), "X-Tenant": "globex"}
    response = request(gateway.port, "GET", "/orgs/acme/tasks?org=globex&x=1", headers)
    assert response.status == 200
    body = response.json()
    assert sorted(body["query"].split("&")) == ["org=acme", "x=1"]
    assert echoed(response)["x-tenant"] == "acme"


def test_token_from_cookie_or_query(gateway):
    access = tokens(gateway)["access_token"]
    by_cookie = request(
        gateway.port, "GET", "/browser/a", {"Cookie": f"theme=dark; session={access}"}
    )
    assert by_cookie.status == 200
    by_query = request(gateway.port, "GET", f"/browser/b?x=1&token={access}")
    assert by_query.status == 200
    assert by_query.json()["query"] == "x=1"  # the token does not travel upstream


def test_api_keys(gateway, db_url, upstream):
    created = potok_cli(
        "keys", "create", "--name", "billing", "--scopes", "orders:read", "--org", "acme",
        "--database-url", db_url,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = created.stdout.splitlines()[0]
    assert key.startswith("pk_")
    weak = potok_cli("keys", "create", "--name", "weak", "--database-url", db_url)
    weak_key = weak.stdout.splitlines()[0]

    def works() -> bool:
        return request(gateway.port, "GET", "/machine/orders", {"X-API-Key": key}).status == 200

    eventually(works)
    response = request(gateway.port, "GET", "/machine/orders", {"X-API-Key": key})
    headers = echoed(response)
    key_id = key.split("_")[1]
    assert headers["x-user-id"] == f"key:{key_id}"
    assert headers["x-org-id"] == "acme"
    assert request(gateway.port, "GET", "/machine/x", {"X-API-Key": weak_key}).status == 403
    assert request(gateway.port, "GET", "/machine/x").status == 401

    listed = potok_cli("keys", "list", "--json", "--database-url", db_url)
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert rows[key_id]["state"] == "active"
    assert key not in listed.stdout

    eventually(
        lambda: (
            json.loads(potok_cli("keys", "list", "--json", "--database-url", db_url).stdout)[0][
                "last_used_at"
            ]
            is not None
        )
    )

    rotated = potok_cli("keys", "rotate", key_id, "--overlap", "1h", "--database-url", db_url)
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.splitlines()[0]
    eventually(
        lambda: request(gateway.port, "GET", "/machine/n", {"X-API-Key": new_key}).status == 200
    )
    # Overlap: the old key still works.
    assert request(gateway.port, "GET", "/machine/o", {"X-API-Key": key}).status == 200


def test_audit_records_logins(gateway, db_url):
    login(gateway, "erin", "bad password x")
    assert login(gateway, "erin", PASSWORD).status == 200

    def found() -> bool:
        out = potok_cli("audit", "--event", "login.*", "--json", "--database-url", db_url)
        events = [json.loads(line) for line in out.stdout.splitlines()]
        mine = [e for e in events if e["actor"] == "erin"]
        return {"login.failed", "login.succeeded"} <= {e["event"] for e in mine}

    eventually(found)
    denied = potok_cli("audit", "--event", "request.denied", "--json", "--database-url", db_url)
    assert any(json.loads(line)["outcome"] == "401" for line in denied.stdout.splitlines())


def test_users_cli(db_url):
    added = potok_cli(
        "users", "add", "zoe", "--roles", "a,b", "--org", "initech", "--password-stdin",
        "--database-url", db_url, stdin="zoe's long password\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = json.loads(potok_cli("users", "list", "--json", "--database-url", db_url).stdout)
    zoe = next(u for u in listed if u["username"] == "zoe")
    assert zoe["roles"] == ["a", "b"] and zoe["org"] == "initech" and not zoe["disabled"]
    again = potok_cli(
        "users", "add", "zoe", "--password-stdin", "--database-url", db_url, stdin="xxxxxxxxxx\n"
    )
    assert again.returncode == 1 and "already exists" in again.stderr
    short = potok_cli(
        "users", "add", "amy", "--password-stdin", "--database-url", db_url, stdin="short\n"
    )
    assert short.returncode == 1 and "at least 8" in short.stderr
    updated = potok_cli(
        "users", "update", "zoe", "--roles", "c", "--org", "", "--database-url", db_url
    )
    assert updated.returncode == 0, updated.stderr
    assert "roles=c org=-" in updated.stdout


def test_own_api_is_not_behind_route_auth(gateway):
    assert request(gateway.port, "GET", "/api/v1/health").status == 200
