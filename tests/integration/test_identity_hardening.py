"""Issue 13/14 identity items through the real gateway: own-API errors, refresh reuse interval,
revocation in the same second as a login, audit names and actors, API key rotation and
forwarding, JWT canonical encoding and JWKS key use."""

from __future__ import annotations

import asyncio
import calendar
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import jwt
import pytest
from sqlalchemy import update

from potok.identity.config import DatabaseConfig
from potok.identity.database import Database
from potok.identity.revocation import SUBJECT, RevocationStore
from potok.identity.schema import api_keys
from tests.support.gateway import GatewayProcess
from tests.support.identity_db import postgres_database
from tests.support.identity_gateway import (
    add_user,
    auth_config,
    bearer,
    call,
    ec_private,
    public_pem,
    rsa_private,
)
from tests.support.jwks_server import JwksServer
from tests.support.net import request

PASSWORD = "hardening tests password"
JWKS_KEY = ec_private()
POTOK = [sys.executable, "-m", "potok"]


@pytest.fixture(scope="module")
def jwks_server():
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(JWKS_KEY.public_key()))
    server = JwksServer(
        {
            "keys": [
                {**jwk, "kid": "ec-sig", "alg": "ES256", "use": "sig"},
                # The same key, declared for encryption only: it must never verify.
                {**jwk, "kid": "ec-encrypt", "alg": "ES256", "key_ops": ["encrypt"]},
                {**jwk, "kid": "ec-enc-use", "alg": "ES256", "use": "enc"},
            ]
        }
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def db_url():
    return f"sqlite:///{tempfile.mkdtemp(prefix='potok-hardening-')}/identity.db"


@pytest.fixture(scope="module")
def gateway(upstream, db_url, jwks_server):
    for name in ("alice", "bob", "carol", "dave", "erin", "gina", "hank"):
        add_user(db_url, name, PASSWORD, ("reader",), "acme")
    config = auth_config(upstream.url, db_url, public_pem(rsa_private()), jwks_server.url)
    config["routes"] += [
        {
            "name": "machine-forward",
            "match": {"prefix": "/machine-forward"},
            "service": "up",
            "policies": {"auth_api_key": {"forward_key": True}},
        },
        {
            "name": "walled",
            "match": {"prefix": "/walled"},
            "service": "up",
            "policies": {"ip_filter": {"deny": ["127.0.0.0/8"]}},
        },
    ]
    process = GatewayProcess(config)
    yield process
    process.stop()


def potok_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "POTOK_CONFIG"}
    return subprocess.run(
        [*POTOK, *args],
        capture_output=True,
        text=True,
        env={**environment, **(env or {})},
        timeout=60,
        check=False,
        cwd=tempfile.gettempdir(),
    )


def login(gateway, username: str = "alice"):
    return call(
        gateway.port, "POST", "/api/v1/auth/login", {"username": username, "password": PASSWORD}
    )


def tokens(gateway, username: str = "alice") -> dict[str, Any]:
    response = login(gateway, username)
    assert response.status == 200, response
    return response.json()


def refresh(gateway, token: str):
    return call(gateway.port, "POST", "/api/v1/auth/refresh", {"refresh_token": token})


def works(gateway, access: str) -> bool:
    return request(gateway.port, "GET", "/api/who", bearer(access)).status == 200


def eventually(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def audit(db_url: str, *args: str) -> list[dict[str, Any]]:
    result = potok_cli("audit", "--database-url", db_url, "--json", "--limit", "500", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def problem_of(response) -> dict[str, Any]:
    assert response.header("Content-Type") == "application/problem+json", response
    document = response.json()
    assert document["status"] == response.status and document["request_id"]
    return document


# Item 6 and issue 14: every own-API error is problem+json ----------------------------------


@pytest.mark.parametrize("path", ["/api/v1/auth/login", "/api/v1/auth/refresh"])
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\x80", "text/plain"),
        (b"\x80", "application/json"),
        (b"\xff\xfe{", "application/json"),
        (b"{", "application/json"),
        (b"[]", "application/json"),
        (b'"text"', "application/json"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_400(gateway, path, body, content_type):
    response = request(gateway.port, "POST", path, {"Content-Type": content_type}, body)
    assert response.status == 400, response
    assert "JSON object" in problem_of(response)["detail"]


def test_logout_with_a_non_utf8_body_is_400(gateway):
    access = tokens(gateway, "gina")["access_token"]
    headers = {"Content-Type": "text/plain", **bearer(access)}
    response = request(gateway.port, "POST", "/api/v1/auth/logout", headers, b"\x80")
    assert response.status == 400, response
    problem_of(response)


def test_fields_that_do_not_fit_are_422_naming_them_with_json_words(gateway):
    response = call(gateway.port, "POST", "/api/v1/auth/login", {"username": None, "password": "x"})
    assert response.status == 422
    document = problem_of(response)
    assert [e["field"] for e in document["errors"]] == ["username"]
    assert "None" not in response.body.decode()


def test_unknown_paths_and_methods_of_the_own_api_are_problems(gateway):
    missing = request(gateway.port, "GET", "/api/v1/auth/me")
    assert missing.status == 404
    assert problem_of(missing)["instance"] == "/api/v1/auth/me"
    wrong = request(gateway.port, "DELETE", "/api/v1/auth/login")
    assert wrong.status == 405 and wrong.header("Allow") == "POST"
    problem_of(wrong)


def test_the_request_id_in_a_problem_is_the_one_the_client_sees(gateway):
    response = request(gateway.port, "GET", "/api/v1/auth/me", {"X-Request-ID": "trace-me-123"})
    assert problem_of(response)["request_id"] == "trace-me-123"


# Swagger UI offline ----------------------------------------------------------------------


def test_swagger_ui_is_served_by_the_gateway_with_a_self_only_csp(gateway):
    page = request(gateway.port, "GET", "/api/docs")
    assert page.status == 200
    html = page.body.decode()
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    csp = page.header("Content-Security-Policy") or ""
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'none'"
    assert "http" not in csp
    assert "<script>" not in html  # every script is a file: no 'unsafe-inline' needed
    wanted = {
        "/api/docs/static/swagger-ui-bundle.js": "text/javascript",
        "/api/docs/static/swagger-ui.css": "text/css",
        "/api/docs/static/init.js": "text/javascript",
        "/api/docs/static/favicon-32x32.png": "image/png",
    }
    for path, kind in wanted.items():
        assert f'"{path}"' in html
        asset = request(gateway.port, "GET", path)
        assert asset.status == 200 and (asset.header("Content-Type") or "").startswith(kind)
    assert b"SwaggerUIBundle" in request(gateway.port, "GET", "/api/docs/static/init.js").body
    for name in ("index.html", "swagger-ui.js.map", "..%2f__init__.py"):
        unknown = request(gateway.port, "GET", f"/api/docs/static/{name}")
        assert unknown.status in (400, 404), name  # only the page's own files are served
        problem_of(unknown)


def test_the_ui_gets_an_openapi_30_document_it_can_render(gateway):
    original = request(gateway.port, "GET", "/api/openapi.json").json()
    response = request(gateway.port, "GET", "/api/docs/openapi-3.0.json")
    assert response.status == 200
    document = response.json()
    assert original["openapi"].startswith("3.1") and document["openapi"] == "3.0.3"
    text = json.dumps(document)
    assert '"type": "null"' not in text and '"const"' not in text
    assert set(document["paths"]) == set(original["paths"])


# Item 20: a login right after a revocation ------------------------------------------------


def revoke_user_at(db_url: str, user_id: str) -> float:
    """Write a subject revocation as `potok users set-password` does; its time."""

    async def main() -> float:
        database = Database(DatabaseConfig(url=db_url))
        try:
            revoked_at, _ = await RevocationStore(database).add(
                SUBJECT, user_id, time.time() + 7200
            )
            return revoked_at
        finally:
            await database.close()

    return asyncio.run(main())


def user_id(gateway, access: str) -> str:
    return call(gateway.port, "GET", "/api/v1/auth/profile", **bearer(access)).json()["id"]


def test_a_token_issued_in_the_second_of_a_revocation_works_and_older_ones_stay_dead(
    gateway, db_url
):
    for _ in range(3):
        # Just past a whole second: the old login, the revocation and the new login share it.
        time.sleep(1.02 - (time.time() % 1.0))
        before = tokens(gateway, "bob")["access_token"]
        second = math.floor(time.time())
        revoke_user_at(db_url, user_id(gateway, before))
        after = tokens(gateway, "bob")["access_token"]
        assert math.floor(time.time()) == second, "machine too slow for the same-second check"
        eventually(lambda before=before: not works(gateway, before))
        assert works(gateway, after), "a token issued after the revocation must work"
        assert jwt.decode(after, options={"verify_signature": False})["iat"] == second + 1


def test_change_password_then_log_in_at_once(gateway, db_url):
    old = tokens(gateway, "carol")["access_token"]
    result = subprocess.run(
        [*POTOK, "users", "set-password", "carol", "--password-stdin", "--database-url", db_url],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    fresh = tokens(gateway, "carol")["access_token"]
    eventually(lambda: not works(gateway, old))
    assert works(gateway, fresh)


# Item 12: refresh reuse interval (1 s in these tests) --------------------------------------


def test_a_second_refresh_within_the_interval_gets_a_pair_and_revokes_nothing(gateway):
    first = tokens(gateway, "dave")
    winner = refresh(gateway, first["refresh_token"])
    assert winner.status == 200
    again = refresh(gateway, first["refresh_token"])  # a second tab, milliseconds later
    assert again.status == 200, again
    for pair in (winner.json(), again.json()):
        assert works(gateway, pair["access_token"])
    # The family lives on: both successors still rotate.
    assert refresh(gateway, winner.json()["refresh_token"]).status == 200
    assert refresh(gateway, again.json()["refresh_token"]).status == 200


def test_reuse_after_the_interval_revokes_the_family(gateway):
    first = tokens(gateway, "erin")
    successor = refresh(gateway, first["refresh_token"]).json()
    time.sleep(1.3)
    replay = refresh(gateway, first["refresh_token"])
    assert replay.status == 401
    problem_of(replay)
    assert refresh(gateway, successor["refresh_token"]).status == 401
    eventually(lambda: not works(gateway, successor["access_token"]))


@pytest.fixture(scope="module")
def two_gateways(upstream):
    with postgres_database() as url:
        add_user(url, "tabs", PASSWORD)
        config = auth_config(upstream.url, url, public_pem(rsa_private()))
        started = [GatewayProcess(config), GatewayProcess(config)]
        try:
            yield started
        finally:
            for process in started:
                process.stop()


def test_concurrent_refresh_on_two_instances_never_logs_the_user_out(two_gateways):
    first, second = two_gateways
    pair = call(
        first.port, "POST", "/api/v1/auth/login", {"username": "tabs", "password": PASSWORD}
    ).json()
    for _trial in range(15):
        results: dict[int, Any] = {}
        start = threading.Barrier(2)

        def present(
            gateway: GatewayProcess,
            token: str = pair["refresh_token"],
            start: threading.Barrier = start,
            results: dict[int, Any] = results,
        ) -> None:
            start.wait()
            results[gateway.port] = refresh(gateway, token)

        threads = [threading.Thread(target=present, args=(g,)) for g in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = sorted(r.status for r in results.values())
        assert statuses == [200, 200], results
        time.sleep(0.3)  # past the revocation poll (100 ms): a revoked family would show now
        for gateway, response in results.items():
            access = response.json()["access_token"]
            port = first.port if gateway == first.port else second.port
            assert request(port, "GET", "/api/x", bearer(access)).status == 200
        # Carry on with either successor: the family is alive.
        pair = results[first.port].json()


# Item 22: audit names and actors ---------------------------------------------------------


def test_audit_names_reuse_as_the_docs_do_and_by_username(gateway, db_url):
    first = tokens(gateway, "hank")
    refresh(gateway, first["refresh_token"])
    time.sleep(1.3)
    assert refresh(gateway, first["refresh_token"]).status == 401

    def found() -> bool:
        return bool(audit(db_url, "--event", "token.refresh_reused", "--actor", "hank"))

    eventually(found)
    documented = audit(db_url, "--event", "token.refresh_reuse", "--actor", "hank")
    assert [e["event"] for e in documented] == ["token.refresh_reused"]
    events = {e["event"] for e in audit(db_url, "--actor", "hank")}
    assert {"login.succeeded", "token.refreshed", "token.refresh_reused"} <= events


def test_a_never_used_refresh_token_after_a_password_change_is_no_theft_alarm(gateway, db_url):
    pair = tokens(gateway, "gina")
    result = subprocess.run(
        [*POTOK, "users", "set-password", "gina", "--password-stdin", "--database-url", db_url],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert refresh(gateway, pair["refresh_token"]).status == 401
    eventually(lambda: bool(audit(db_url, "--event", "token.refresh_denied", "--actor", "gina")))
    assert not audit(db_url, "--event", "token.refresh_reused", "--actor", "gina")


def test_denied_requests_name_the_user_of_a_revoked_token(gateway, db_url):
    pair = tokens(gateway, "alice")
    access = pair["access_token"]
    assert call(gateway.port, "POST", "/api/v1/auth/logout", **bearer(access)).status == 204
    response = request(gateway.port, "GET", "/api/after-logout", bearer(access))
    assert response.status == 401
    request_id = response.header("X-Request-ID") or problem_of(response)["request_id"]

    def denied() -> list[dict[str, Any]]:
        return [
            e
            for e in audit(db_url, "--event", "request.denied", "--actor", "alice")
            if e["request_id"] == request_id
        ]

    eventually(lambda: bool(denied()))
    assert denied()[0]["detail"]["reason"] == "token revoked"
    assert "token.logout" in {e["event"] for e in audit(db_url, "--actor", "alice")}


def test_ip_filter_refusals_are_audited(gateway, db_url):
    response = request(gateway.port, "GET", "/walled/x")
    assert response.status == 403
    request_id = problem_of(response)["request_id"]

    def found() -> bool:
        return any(
            e["request_id"] == request_id and e["detail"]["policy"] == "ip_filter"
            for e in audit(db_url, "--event", "request.denied")
        )

    eventually(found)


# Item 23: API keys -----------------------------------------------------------------------


def created_key(db_url: str, *extra: str) -> tuple[str, str]:
    result = potok_cli(
        "keys", "create", "--name", "svc", "--scopes", "orders:read", "--database-url", db_url,
        *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    key = result.stdout.splitlines()[0]
    return key, key.split("_")[1]


def listed(db_url: str) -> dict[str, dict[str, Any]]:
    result = potok_cli("keys", "list", "--json", "--database-url", db_url)
    return {row["id"]: row for row in json.loads(result.stdout)}


def test_rotation_renews_for_the_original_lifetime_or_expires(gateway, db_url):
    _, key_id = created_key(db_url, "--expires", "720h")
    rotated = potok_cli("keys", "rotate", key_id, "--overlap", "1h", "--database-url", db_url)
    assert rotated.returncode == 0, rotated.stderr
    new_id = rotated.stdout.splitlines()[0].split("_")[1]
    rows = listed(db_url)
    expected = time.time() + 720 * 3600
    new_expiry = calendar.timegm(time.strptime(rows[new_id]["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(new_expiry - expected) < 120
    chosen = potok_cli("keys", "rotate", new_id, "--expires", "48h", "--database-url", db_url)
    assert chosen.returncode == 0, chosen.stderr
    newest = chosen.stdout.splitlines()[0].split("_")[1]
    newest_expiry = calendar.timegm(
        time.strptime(listed(db_url)[newest]["expires_at"], "%Y-%m-%dT%H:%M:%SZ")
    )
    assert abs(newest_expiry - (time.time() + 48 * 3600)) < 120


def age_key(db_url: str, key_id: str, created_ago: float, expires_in: float) -> None:
    """Make a key look old: created `created_ago` s ago, expiring in `expires_in` s."""

    async def main() -> None:
        database = Database(DatabaseConfig(url=db_url))
        try:
            now = time.time()
            async with database.engine.begin() as conn:
                await conn.execute(
                    update(api_keys)
                    .where(api_keys.c.id == key_id)
                    .values(created_at=now - created_ago, expires_at=now + expires_in)
                )
        finally:
            await database.close()

    asyncio.run(main())


def test_a_key_about_to_expire_is_renewed_by_rotation(gateway, db_url):
    _, key_id = created_key(db_url, "--expires", "720h")
    age_key(db_url, key_id, created_ago=720 * 3600 - 60, expires_in=60)  # a minute left
    rotated = potok_cli("keys", "rotate", key_id, "--database-url", db_url)
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.splitlines()[0]
    eventually(
        lambda: request(gateway.port, "GET", "/machine/n", {"X-API-Key": new_key}).status == 200
    )
    row = listed(db_url)[new_key.split("_")[1]]
    expires = calendar.timegm(time.strptime(row["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    # A full term (720 h) from the rotation, not the minute the old key had left.
    assert abs(expires - (time.time() + 720 * 3600)) < 120


def test_the_api_key_is_not_forwarded_unless_asked(gateway, db_url):
    key, key_id = created_key(db_url)

    def echoed(path: str) -> dict[str, str] | None:
        response = request(gateway.port, "GET", path, {"X-API-Key": key})
        if response.status != 200:
            return None
        return {name.lower(): value for name, value in response.json()["headers"]}

    eventually(lambda: echoed("/machine/x") is not None)
    stripped = echoed("/machine/x")
    assert stripped is not None and "x-api-key" not in stripped
    assert stripped["x-user-id"] == f"key:{key_id}"
    kept = echoed("/machine-forward/x")
    assert kept is not None and kept["x-api-key"] == key


def test_a_revoked_key_is_named_in_the_audit(gateway, db_url):
    key, key_id = created_key(db_url)
    eventually(lambda: request(gateway.port, "GET", "/machine/x", {"X-API-Key": key}).status == 200)
    assert potok_cli("keys", "revoke", key_id, "--database-url", db_url).returncode == 0
    eventually(lambda: request(gateway.port, "GET", "/machine/x", {"X-API-Key": key}).status == 401)
    eventually(lambda: bool(audit(db_url, "--event", "request.denied", "--actor", f"key:{key_id}")))


# Item 5: JWT encoding and JWKS key use through the gateway ----------------------------------


def es256(kid: str, **extra: Any) -> str:
    now = int(time.time())
    claims = {"iss": "https://jwks.test", "sub": "u1", "iat": now, "exp": now + 300, **extra}
    return jwt.encode(claims, JWKS_KEY, algorithm="ES256", headers={"kid": kid})


def test_a_jwks_key_not_for_verifying_is_never_used(gateway):
    assert request(gateway.port, "GET", "/jwks/ok", bearer(es256("ec-sig"))).status == 200
    for kid in ("ec-encrypt", "ec-enc-use"):
        response = request(gateway.port, "GET", f"/jwks/{kid}", bearer(es256(kid)))
        assert response.status == 401, kid


def test_padded_or_non_canonical_tokens_are_refused(gateway):
    token = es256("ec-sig")
    assert request(gateway.port, "GET", "/jwks/ok", bearer(token)).status == 200
    header, payload, signature = token.split(".")
    for mutant in (
        token + "=",
        token + "==",
        f"{header}=.{payload}.{signature}",
        f"{header}.{payload}=.{signature}",
    ):
        response = request(gateway.port, "GET", "/jwks/padded", bearer(mutant))
        assert response.status == 401, mutant
