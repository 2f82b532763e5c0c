"""JWT verification without a gateway: algorithms, pinning, claims, the policy's cache."""

from __future__ import annotations

import json
import time
import timeit
from types import SimpleNamespace

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from potok.config.loader import load_config_text
from potok.errors import GatewayError
from potok.identity.config import IdentityHeadersConfig
from potok.identity.forwarding import IdentityHeaders
from potok.identity.jwks import keys_from_document
from potok.identity.jwt_config import ClaimNamesConfig
from potok.identity.keys import KeyMaterialError, hmac_key, public_key
from potok.identity.verifier import TokenRejected, TokenVerifier, TrustedIssuer
from potok.policies.auth_jwt import policy as auth_jwt
from potok.runtime import Runtime
from tests.support.identity_gateway import (
    EXTERNAL_AUDIENCE,
    EXTERNAL_ISSUER,
    claims,
    ec_private,
    public_pem,
    rsa_private,
    sign,
)

SECRET = "verifier-unit-test-secret-" + "0123456789abcdefghijklmnopqrstuvwxyzABCDEF"
RSA = rsa_private()
EC = ec_private()
ED = ed25519.Ed25519PrivateKey.generate()


def verifier(*keys, audiences=(EXTERNAL_AUDIENCE,), leeway=0.0) -> TokenVerifier:
    issuer = TrustedIssuer(EXTERNAL_ISSUER, audiences, {k.kid: k for k in keys})
    return TokenVerifier(
        [issuer], leeway, ClaimNamesConfig(), IdentityHeaders(IdentityHeadersConfig())
    )


@pytest.mark.parametrize(
    ("algorithm", "signing", "verify_key"),
    [
        ("HS256", SECRET, hmac_key("HS256", SECRET, "k")),
        ("HS384", SECRET, hmac_key("HS384", SECRET, "k")),
        ("HS512", SECRET, hmac_key("HS512", SECRET, "k")),
        ("RS256", RSA, public_key("RS256", public_pem(RSA).encode(), "k")),
        ("ES256", EC, public_key("ES256", public_pem(EC).encode(), "k")),
        ("EdDSA", ED, public_key("EdDSA", public_pem(ED).encode(), "k")),
    ],
)
def test_every_supported_algorithm(algorithm, signing, verify_key):
    token = sign(claims(scope="a b"), signing, algorithm, kid="k")
    principal = verifier(verify_key).verify(token)
    assert principal.subject == "user-1"
    assert principal.roles == frozenset({"reader"})
    assert principal.scopes == frozenset({"a", "b"})
    assert principal.org == "acme"
    assert b"X-User-Id: user-1\r\n" in principal.upstream_lines


def test_a_key_accepts_only_its_own_algorithm():
    key = hmac_key("HS256", SECRET, "k")
    with pytest.raises(TokenRejected, match="algorithm not allowed"):
        verifier(key).verify(sign(claims(), SECRET, "HS512", kid="k"))
    rsa_key = public_key("RS256", public_pem(RSA).encode(), "k")
    with pytest.raises(TokenRejected, match="algorithm not allowed"):
        verifier(rsa_key).verify(sign(claims(), SECRET, "HS256", kid="k"))


def test_key_material_must_fit_the_algorithm():
    with pytest.raises(KeyMaterialError):
        public_key("ES256", public_pem(RSA).encode())
    with pytest.raises(KeyMaterialError):
        public_key("RS256", public_pem(EC).encode())
    with pytest.raises(KeyMaterialError):
        hmac_key("RS256", SECRET)


def test_leeway_applies_to_exp_and_nbf():
    key = hmac_key("HS256", SECRET, "k")
    now = int(time.time())
    late = sign(claims(exp=now - 5), SECRET, "HS256", "k")
    early = sign(claims(nbf=now + 5), SECRET, "HS256", "k")
    with pytest.raises(TokenRejected, match="expired"):
        verifier(key).verify(late)
    with pytest.raises(TokenRejected, match="not yet valid"):
        verifier(key).verify(early)
    assert verifier(key, leeway=30).verify(late).subject == "user-1"
    assert verifier(key, leeway=30).verify(early).subject == "user-1"


def test_required_claims():
    key = hmac_key("HS256", SECRET, "k")
    for missing in ("exp", "sub", "iss"):
        with pytest.raises(TokenRejected):
            verifier(key).verify(sign(claims(**{missing: None}), SECRET, "HS256", "k"))
    # Without configured audiences `aud` is not checked.
    assert verifier(key, audiences=()).verify(sign(claims(aud="x"), SECRET, "HS256", "k"))


def test_garbage_tokens():
    key = hmac_key("HS256", SECRET, "k")
    for token in ("", "a", "a.b", "a.b.c", "....", "x" * 10000, "eyJhbGciOiJIUzI1NiJ9.e30."):
        with pytest.raises(TokenRejected):
            verifier(key).verify(token)


def test_only_canonical_base64url_is_accepted():
    """Wycheproof JWS 367/370: `=` padding appended to a valid token; and spare bits set."""
    key = hmac_key("HS256", SECRET, "k")
    token = sign(claims(), SECRET, "HS256", "k")
    assert verifier(key).verify(token)
    header, payload, signature = token.split(".")
    mutants = [
        token + "=",
        f"{header}=.{payload}.{signature}",
        f"{header}.{payload}==.{signature}",
        f"{header}.{payload}.{signature}=",
        f"{header}.{payload}.{signature}\n",
        f"{header}.{payload}.{signature.replace('-', '+').replace('_', '/')}",
    ]
    # Flip a spare bit of the signature's last character: same bytes, another spelling.
    last = signature[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    if len(signature) % 4 in (2, 3):
        mutants.append(f"{header}.{payload}.{signature[:-1]}{alphabet[alphabet.index(last) | 1]}")
    for mutant in mutants:
        if mutant == token:
            continue
        with pytest.raises(TokenRejected):
            verifier(key).verify(mutant)


def test_jwks_documents_are_filtered():
    rsa_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(RSA.public_key(), as_dict=True)
    ec_jwk = jwt.algorithms.ECAlgorithm.to_jwk(EC.public_key(), as_dict=True)
    document = {
        "keys": [
            {**rsa_jwk, "kid": "rsa"},
            {**ec_jwk, "kid": "ec", "alg": "ES256"},
            {**ec_jwk, "kid": "ec-as-rs", "alg": "RS256"},  # wrong type for its alg
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
            {**rsa_jwk, "kid": "../etc/passwd"},
            {**rsa_jwk, "kid": "enc", "use": "enc"},
            # Wycheproof JWS 355/356: a key whose key_ops exclude verify must not verify.
            {**rsa_jwk, "kid": "ops-encrypt", "key_ops": ["encrypt"]},
            {**rsa_jwk, "kid": "ops-verify", "key_ops": ["verify"]},
        ]
    }
    keys, skipped = keys_from_document(document, ("RS256", "ES256", "HS256"))
    assert set(keys) == {"rsa", "ec", "ops-verify"}
    assert keys["rsa"].algorithm == "RS256" and keys["ec"].algorithm == "ES256"
    assert len(skipped) == 5
    assert any("ops-encrypt" in reason and "verify" in reason for reason in skipped)


def _policy_check(algorithm: str, cache_size: int, parts: bool = False):
    """The auth_jwt hook of a real route, and a token it accepts."""
    if algorithm == "HS256":
        key = {"kid": "k", "algorithm": "HS256", "secret": SECRET}
        token = sign(claims(), SECRET, "HS256", "k")
    else:
        key = {"kid": "k", "algorithm": "RS256", "public_key": public_pem(RSA)}
        token = sign(claims(), RSA, "RS256", "k")
    config = load_config_text(
        f"""
services: {{up: {{targets: ["http://127.0.0.1:9"]}}}}
routes:
  - name: r
    match: {{prefix: /}}
    service: up
    policies:
      auth_jwt:
        cache_size: {cache_size}
        issuers: [{{issuer: "{EXTERNAL_ISSUER}", audiences: [{EXTERNAL_AUDIENCE}], keys: [KEY]}}]
""".replace("KEY", json.dumps(key))
    )
    runtime = Runtime(config)
    policy = auth_jwt.build(config.routes[0].policies.auth_jwt, runtime._context("r"))
    assert policy is not None and policy.on_request is not None
    hooks = [policy.on_request]
    authorization = f"Bearer {token}".encode()
    exchange = SimpleNamespace(
        headers=[(b"Host", b"x"), (b"Authorization", authorization)],
        authorization=authorization,  # noted by the connection while parsing
        identity=None,
        query=b"",
        client_ip="127.0.0.1",
        request_id="r",
    )

    def check() -> None:
        exchange.identity = None
        for hook in hooks:
            hook(exchange)
        assert exchange.identity is not None

    return (check, runtime, token) if parts else check


@pytest.mark.parametrize("algorithm", ["HS256", "RS256"])
def test_verified_token_cache_skips_the_crypto(algorithm):
    cached = _policy_check(algorithm, cache_size=100)
    uncached = _policy_check(algorithm, cache_size=0)
    rounds = 300
    with_cache = min(timeit.repeat(cached, number=rounds, repeat=3)) / rounds
    without = min(timeit.repeat(uncached, number=rounds, repeat=3)) / rounds
    print(f"{algorithm}: {without * 1e6:.1f} us verified, {with_cache * 1e6:.1f} us cached")
    assert with_cache * 3 < without


def test_a_revoked_token_is_refused_even_from_the_cache():
    check, runtime, token = _policy_check("HS256", cache_size=100, parts=True)
    check()
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    runtime.identity.denylist.add("jti", jti, time.time(), time.time() + 60)
    with pytest.raises(GatewayError) as refused:
        check()
    assert refused.value.status == 401
