"""Attacks on identity and access: each refused, and the upstream never reached.

Every attack uses a path of its own, so `upstream.hits[path] == 0` proves the
request stopped at the gateway.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import jwt
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.identity_gateway import (
    EXTERNAL_ISSUER,
    HS_SECRET,
    add_user,
    auth_config,
    bearer,
    call,
    claims,
    ec_private,
    public_pem,
    rsa_private,
    sign,
)
from tests.support.jwks_server import JwksServer
from tests.support.net import ResponseReader, build_request, connect, request

PASSWORD = "attack tests password"
RSA_KEY = rsa_private()
JWKS_KEY = ec_private()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.fixture(scope="module")
def jwks_server():
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(JWKS_KEY.public_key()))
    server = JwksServer({"keys": [{**jwk, "kid": "ec-1", "alg": "ES256", "use": "sig"}]})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def db_url():
    return f"sqlite:///{tempfile.mkdtemp(prefix='potok-attacks-')}/identity.db"


@pytest.fixture(scope="module")
def gateway(upstream, db_url, jwks_server):
    add_user(db_url, "alice", PASSWORD, ("reader",), "acme")
    add_user(db_url, "mallory", PASSWORD, ("reader",), "evil")
    add_user(db_url, "victor", PASSWORD, (), "acme")
    config = auth_config(upstream.url, db_url, public_pem(RSA_KEY), jwks_server.url)
    process = GatewayProcess(config)
    yield process
    process.stop()


def refused(gateway, upstream, path: str, token: str | None, status: int = 401, **headers: str):
    all_headers = dict(headers)
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    response = request(gateway.port, "GET", path, all_headers)
    assert response.status == status, response
    assert upstream.hits[path] == 0, f"{path} reached the upstream"
    return response


def login(gateway, username: str = "alice") -> dict:
    response = call(
        gateway.port, "POST", "/api/v1/auth/login", {"username": username, "password": PASSWORD}
    )
    assert response.status == 200, response
    return response.json()


def potok_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "POTOK_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "potok", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        cwd=tempfile.gettempdir(),
    )


def test_a_valid_external_token_is_accepted(gateway, upstream):
    token = sign(claims(), RSA_KEY, "RS256", kid="rsa-1")
    assert request(gateway.port, "GET", "/api/valid-external", bearer(token)).status == 200
    assert upstream.hits["/api/valid-external"] == 1


def test_alg_none(gateway, upstream):
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps(claims()).encode())
    refused(gateway, upstream, "/api/attack/alg-none", f"{header}.{body}.")
    refused(gateway, upstream, "/api/attack/alg-none-2", f"{header}.{body}.c2ln")


def test_hs256_signed_with_the_rsa_public_key(gateway, upstream):
    """Key confusion: the public key (which anyone has) used as an HMAC secret."""
    pem = public_pem(RSA_KEY).encode()
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = b64(json.dumps(claims(roles=["admin"])).encode())
    import hashlib
    import hmac

    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{b64(signature)}"
    refused(gateway, upstream, "/api/attack/key-confusion", forged)


def test_expired_token(gateway, upstream):
    now = int(time.time())
    token = sign(claims(iat=now - 7200, nbf=now - 7200, exp=now - 3600), RSA_KEY, "RS256", "rsa-1")
    response = refused(gateway, upstream, "/api/attack/expired", token)
    assert response.json()["detail"] == "token expired"


def test_token_not_yet_valid(gateway, upstream):
    now = int(time.time())
    token = sign(claims(nbf=now + 3600, iat=now), RSA_KEY, "RS256", "rsa-1")
    refused(gateway, upstream, "/api/attack/nbf", token)
    issued_later = sign(claims(iat=now + 3600), RSA_KEY, "RS256", "rsa-1")
    refused(gateway, upstream, "/api/attack/iat", issued_later)


def test_wrong_issuer_and_audience(gateway, upstream):
    wrong_iss = sign(claims(iss="https://evil.test"), RSA_KEY, "RS256", "rsa-1")
    refused(gateway, upstream, "/api/attack/iss", wrong_iss)
    wrong_aud = sign(claims(aud="someone-else"), RSA_KEY, "RS256", "rsa-1")
    assert refused(gateway, upstream, "/api/attack/aud", wrong_aud).json()["detail"] == (
        "wrong audience"
    )
    no_aud = sign(claims(aud=None), RSA_KEY, "RS256", "rsa-1")
    refused(gateway, upstream, "/api/attack/no-aud", no_aud)


def test_tampered_payload(gateway, upstream):
    token = sign(claims(roles=["reader"]), RSA_KEY, "RS256", "rsa-1")
    header, _, signature = token.split(".")
    forged_payload = b64(json.dumps(claims(roles=["admin"], sub="root")).encode())
    refused(gateway, upstream, "/api/attack/tampered", f"{header}.{forged_payload}.{signature}")
    own = login(gateway)["access_token"]
    h, p, s = own.split(".")
    doc = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    doc["org"] = "globex"
    refused(
        gateway, upstream, "/api/attack/tampered-own", f"{h}.{b64(json.dumps(doc).encode())}.{s}"
    )


def test_unknown_kid(gateway, upstream):
    other = rsa_private()
    token = sign(claims(), other, "RS256", kid="rsa-2")
    refused(gateway, upstream, "/api/attack/unknown-kid", token)
    # The right kid, the wrong key.
    refused(gateway, upstream, "/api/attack/wrong-key", sign(claims(), other, "RS256", "rsa-1"))


@pytest.mark.parametrize(
    "kid",
    [
        "../../../../etc/passwd",
        "/dev/null",
        "' OR '1'='1",
        "rsa-1'; DROP TABLE potok_users; --",
        "rsa-1\x00",
        "x" * 500,
    ],
)
def test_hostile_kid(gateway, upstream, jwks_server, kid):
    before = jwks_server.fetches
    path = f"/api/attack/kid-{uuid.uuid4().hex}"
    response = refused(gateway, upstream, path, sign(claims(), RSA_KEY, "RS256", kid=kid))
    assert response.json()["detail"] == "malformed key id"
    jwks_path = f"/jwks/attack/kid-{uuid.uuid4().hex}"
    refused(
        gateway,
        upstream,
        jwks_path,
        sign(claims(iss="https://jwks.test"), JWKS_KEY, "ES256", kid=kid),
    )
    assert jwks_server.fetches == before


def test_other_tenant(gateway, upstream):
    acme = login(gateway)["access_token"]
    assert request(gateway.port, "GET", "/orgs/acme/tasks/1", bearer(acme)).status == 200
    refused(gateway, upstream, "/orgs/globex/tasks/1", acme, status=403)
    refused(gateway, upstream, "/orgs/ACME/tasks/1", acme, status=403)
    # An encoded '/' is refused before any policy looks at the path (test_attacks_edge.py).
    refused(gateway, upstream, "/orgs/acme%2F..%2Fglobex/tasks", acme, status=400)
    evil = login(gateway, "mallory")["access_token"]
    refused(gateway, upstream, "/orgs/acme/tasks/2", evil, status=403)
    # An external token for another org is refused the same way.
    external = sign(claims(org="globex"), RSA_KEY, "RS256", "rsa-1")
    refused(gateway, upstream, "/orgs/acme/tasks/3", external, status=403)


def test_spoofed_identity_headers_are_stripped(gateway, upstream):
    spoof = {
        "X-User-Id": "admin",
        "x-user-roles": "admin",
        "X-Org-Id": "globex",
        "X-User-Scopes": "everything",
    }
    # On an open route (no auth at all) the client's copies never reach the upstream.
    open_response = request(gateway.port, "GET", "/open/spoof", spoof)
    assert open_response.status == 200
    seen = {k.lower() for k, _ in open_response.json()["headers"]}
    assert not seen & {"x-user-id", "x-user-roles", "x-org-id", "x-user-scopes"}
    # On an authenticated route the upstream sees exactly the gateway's values.
    access = login(gateway)["access_token"]
    response = request(gateway.port, "GET", "/api/spoof", {**spoof, **bearer(access)})
    values: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        values.setdefault(name.lower(), []).append(value)
    assert values["x-org-id"] == ["acme"]
    assert values["x-user-roles"] == ["reader"]
    assert values["x-user-id"] != ["admin"] and len(values["x-user-id"]) == 1
    # Without a token, a spoofed identity does not open a protected route.
    refused(gateway, upstream, "/api/attack/spoof-no-token", None, **spoof)


def test_reused_refresh_token_revokes_the_family(gateway, upstream):
    first = login(gateway)
    second = call(
        gateway.port, "POST", "/api/v1/auth/refresh", {"refresh_token": first["refresh_token"]}
    ).json()
    assert (
        request(gateway.port, "GET", "/api/family-ok", bearer(second["access_token"])).status == 200
    )
    time.sleep(1.2)  # past the reuse interval (1 s): a replay now is theft, not a second tab
    replay = call(
        gateway.port, "POST", "/api/v1/auth/refresh", {"refresh_token": first["refresh_token"]}
    )
    assert replay.status == 401
    # The whole family is revoked: the newest refresh token and its access token too.
    newest = call(
        gateway.port, "POST", "/api/v1/auth/refresh", {"refresh_token": second["refresh_token"]}
    )
    assert newest.status == 401
    refused(gateway, upstream, "/api/attack/family-access", second["access_token"])
    refused(gateway, upstream, "/api/attack/family-first", first["access_token"])


def test_revoked_access_token(gateway, upstream):
    pair = login(gateway)
    assert (
        request(gateway.port, "GET", "/api/pre-revoke", bearer(pair["access_token"])).status == 200
    )
    out = call(gateway.port, "POST", "/api/v1/auth/logout", **bearer(pair["access_token"]))
    assert out.status == 204
    refused(gateway, upstream, "/api/attack/revoked", pair["access_token"])
    profile = call(gateway.port, "GET", "/api/v1/auth/profile", **bearer(pair["access_token"]))
    assert profile.status == 401


def test_revoked_api_key(gateway, upstream, db_url):
    created = potok_cli(
        "keys", "create", "--name", "doomed", "--scopes", "orders:read", "--database-url", db_url
    )
    key = created.stdout.splitlines()[0]
    key_id = key.split("_")[1]
    deadline = time.monotonic() + 5
    while request(gateway.port, "GET", "/machine/ok", {"X-API-Key": key}).status != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert potok_cli("keys", "revoke", key_id, "--database-url", db_url).returncode == 0
    time.sleep(0.5)  # sync_interval is 100ms
    refused(gateway, upstream, "/machine/attack/revoked-key", None, **{"X-API-Key": key})
    # A made-up key of the right shape, and a right id with the wrong secret.
    refused(
        gateway,
        upstream,
        "/machine/attack/fake-key",
        None,
        **{"X-API-Key": "pk_" + "0" * 16 + "_" + "A" * 43},
    )
    wrong = f"pk_{key_id}_{'B' * 43}"
    refused(gateway, upstream, "/machine/attack/wrong-secret", None, **{"X-API-Key": wrong})


def test_disabled_user(gateway, upstream, db_url):
    pair = login(gateway, "victor")
    assert (
        request(gateway.port, "GET", "/api/victor-ok", bearer(pair["access_token"])).status == 200
    )
    result = potok_cli("users", "disable", "victor", "--database-url", db_url)
    assert result.returncode == 0, result.stderr
    time.sleep(0.5)  # poll_interval is 100ms
    refused(gateway, upstream, "/api/attack/disabled", pair["access_token"])
    relogin = call(
        gateway.port, "POST", "/api/v1/auth/login", {"username": "victor", "password": PASSWORD}
    )
    assert relogin.status == 401
    refresh = call(
        gateway.port, "POST", "/api/v1/auth/refresh", {"refresh_token": pair["refresh_token"]}
    )
    assert refresh.status == 401


# The alg-switch attack signs HS384 with the HS256 secret: PyJWT warns it is short for SHA384.
@pytest.mark.filterwarnings("ignore:The HMAC key is .* below the minimum")
def test_token_service_key_confusion_with_other_secret(gateway, upstream):
    """A token for the token service signed with some other secret."""
    now = int(time.time())
    payload = {
        "iss": "potok",
        "aud": "potok",
        "sub": "x",
        "iat": now,
        "exp": now + 60,
        "roles": ["admin"],
    }
    forged = jwt.encode(payload, "x" * 40, algorithm="HS256", headers={"kid": "potok-1"})
    refused(gateway, upstream, "/admin/attack/forged", forged)
    real = jwt.encode(payload, HS_SECRET, algorithm="HS384", headers={"kid": "potok-1"})
    refused(gateway, upstream, "/admin/attack/alg-switch", real)


def test_random_kids_do_not_hammer_the_jwks_endpoint(gateway, upstream, jwks_server):
    valid = sign(claims(iss="https://jwks.test"), JWKS_KEY, "ES256", kid="ec-1")
    assert request(gateway.port, "GET", "/jwks/ok", bearer(valid)).status == 200
    before = jwks_server.fetches
    other = ec_private()
    total = 10_000
    statuses: dict[int, int] = {}
    path = "/jwks/attack/random-kid"
    with connect(gateway.port, timeout=30) as sock:
        reader = ResponseReader(sock)
        batch = 200
        for start in range(0, total, batch):
            payload = b"".join(
                build_request(
                    "GET",
                    path,
                    bearer(
                        sign(
                            claims(iss=f"{EXTERNAL_ISSUER}-x", jti=str(i)),
                            other,
                            "ES256",
                            kid=uuid.uuid4().hex,
                        )
                        if i % 2
                        else sign(
                            claims(iss="https://jwks.test"), other, "ES256", kid=uuid.uuid4().hex
                        )
                    ),
                )
                for i in range(start, start + batch)
            )
            sock.sendall(payload)
            for _ in range(batch):
                status = reader.read().status
                statuses[status] = statuses.get(status, 0) + 1
    assert statuses == {401: total}
    assert upstream.hits[path] == 0
    fetches = jwks_server.fetches - before
    assert fetches <= 2, f"{fetches} JWKS fetches for {total} random kids"


def test_database_url_never_logged_with_password(gateway):
    log = Path(gateway.stderr_path).read_text() + Path(gateway.stdout_path).read_text()
    assert HS_SECRET not in log
