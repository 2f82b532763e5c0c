"""Helpers for identity tests: keys, tokens signed by hand, users created in the database."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from potok.identity.config import DatabaseConfig, PasswordHashingConfig
from potok.identity.database import Database
from potok.identity.passwords import PasswordHasher
from potok.identity.schema import migrate
from potok.identity.users import User, UserStore
from tests.support.net import request

HS_SECRET = "test-token-service-secret-0123456789abcdef"
CHEAP_ARGON2 = {"time_cost": 1, "memory_kib": 64, "parallelism": 1}
EXTERNAL_ISSUER = "https://idp.test"
EXTERNAL_AUDIENCE = "potok-api"
# Short, so tests can step past it: a spent refresh token presented again within it gets a new
# pair (two tabs refreshing at once); after it, reuse revokes the family.
REUSE_INTERVAL = "1s"


def rsa_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_private() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(private: Any) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def private_pem(private: Any) -> str:
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": EXTERNAL_ISSUER,
        "aud": EXTERNAL_AUDIENCE,
        "sub": "user-1",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "roles": ["reader"],
        "org": "acme",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], key: Any, algorithm: str, kid: str | None = None) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def add_user(
    database_url: str,
    username: str,
    password: str,
    roles: tuple[str, ...] = (),
    org: str | None = None,
) -> User:
    """Create a user straight in the database (cheap argon2 parameters)."""

    async def main() -> User:
        database = Database(DatabaseConfig(url=database_url))
        try:
            await migrate(database)
            hasher = PasswordHasher(PasswordHashingConfig(**CHEAP_ARGON2))
            return await UserStore(database).add(username, await hasher.hash(password), roles, org)
        finally:
            await database.close()

    return asyncio.run(main())


def call(port: int, method: str, path: str, body: Any = None, **headers: str) -> Any:
    payload = json.dumps(body).encode() if body is not None else b""
    all_headers = {k.replace("_", "-"): v for k, v in headers.items()}
    if body is not None:
        all_headers["Content-Type"] = "application/json"
    return request(port, method, path, all_headers, payload)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def auth_config(
    upstream_url: str, database_url: str, external_public_pem: str, jwks_url: str | None = None
) -> dict[str, Any]:
    """A gateway with the token service, an external RS256 issuer and every identity policy."""
    token_service = {"token_service": True}
    external = {
        "issuer": EXTERNAL_ISSUER,
        "audiences": [EXTERNAL_AUDIENCE],
        "keys": [{"kid": "rsa-1", "algorithm": "RS256", "public_key": external_public_pem}],
    }
    routes: list[dict[str, Any]] = [
        {"name": "open", "match": {"prefix": "/open"}, "service": "up"},
        {
            "name": "api",
            "match": {"prefix": "/api"},
            "service": "up",
            "policies": {"auth_jwt": {**token_service, "issuers": [external]}},
        },
        {
            "name": "sealed",
            "match": {"prefix": "/sealed"},
            "service": "up",
            "policies": {"auth_jwt": {**token_service, "forward_token": False}},
        },
        {
            "name": "own-header",
            "match": {"prefix": "/own-header"},
            "service": "up",
            "policies": {"auth_jwt": {**token_service, "header": "X-Access-Token"}},
        },
        {
            "name": "tenant",
            "match": {"prefix": "/orgs/{org_id}"},
            "service": "up",
            "policies": {
                "auth_jwt": {**token_service, "issuers": [external]},
                "authorize": {
                    "tenant": {
                        "param": "org_id",
                        "claim": "org",
                        "inject": {"query": "org", "header": "X-Tenant"},
                    }
                },
            },
        },
        {
            "name": "admin",
            "match": {"prefix": "/admin"},
            "service": "up",
            "policies": {
                "auth_jwt": token_service,
                "authorize": {"roles": ["admin"]},
            },
        },
        {
            "name": "machine",
            "match": {"prefix": "/machine"},
            "service": "up",
            "policies": {
                "auth_api_key": {},
                "authorize": {"scopes": ["orders:read"]},
            },
        },
        {
            "name": "browser",
            "match": {"prefix": "/browser"},
            "service": "up",
            "policies": {"auth_jwt": {**token_service, "cookie": "session", "query": "token"}},
        },
    ]
    if jwks_url is not None:
        routes.append(
            {
                "name": "jwks",
                "match": {"prefix": "/jwks"},
                "service": "up",
                "policies": {
                    "auth_jwt": {
                        "issuers": [
                            {
                                "issuer": "https://jwks.test",
                                "jwks": {"url": jwks_url, "min_refresh_interval": "30s"},
                            }
                        ]
                    }
                },
            }
        )
    return {
        "services": {"up": {"targets": [upstream_url]}},
        "routes": routes,
        "database": {"url": database_url},
        "auth": {
            "token_service": {
                "enabled": True,
                "access_ttl": "1h",
                "refresh_ttl": "2h",
                "refresh_reuse_interval": REUSE_INTERVAL,
                "signing": {"algorithm": "HS256", "secret": HS_SECRET},
            },
            "passwords": CHEAP_ARGON2,
            "login_protection": {"max_failures_per_user": 3, "lockout": "2s"},
            "revocation": {"poll_interval": "100ms"},
            "api_keys": {"sync_interval": "100ms", "last_used_flush": "200ms"},
            "audit": {"flush_interval": "100ms"},
        },
    }
