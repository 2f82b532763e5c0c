"""JWT keys: loading PEM/secret material and pinning each key to exactly one algorithm.

A key knows its algorithm; verification passes only that one algorithm to
PyJWT, so `alg: none` and RS/HS confusion (an HS256 token "signed" with an RSA
public key) are refused before any signature check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from potok.identity.config import HMAC_ALGORITHMS, SigningKeyConfig
from potok.identity.key_checks import (
    KeyMaterialError,
    check_key_type,
    load_private,
    load_public,
    read_pem,
)

__all__ = ["KeyMaterialError", "SigningKey", "VerifyKey", "check_key_type", "read_pem"]


@dataclass(frozen=True, slots=True)
class VerifyKey:
    kid: str | None
    algorithm: str
    key: Any  # bytes for HMAC, a cryptography public key otherwise


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    algorithm: str
    key: Any  # bytes for HMAC, a cryptography private key otherwise
    verify: VerifyKey


def public_key(algorithm: str, pem: bytes, kid: str | None = None) -> VerifyKey:
    return VerifyKey(kid, algorithm, load_public(algorithm, pem))


def hmac_key(algorithm: str, secret: str, kid: str | None = None) -> VerifyKey:
    if algorithm not in HMAC_ALGORITHMS:
        raise KeyMaterialError(f"{algorithm} is not an HMAC algorithm")
    return VerifyKey(kid, algorithm, secret.encode())


def signing_key(config: SigningKeyConfig) -> SigningKey:
    if config.algorithm in HMAC_ALGORITHMS:
        assert config.secret is not None
        secret = config.secret.encode()
        return SigningKey(
            config.key_id,
            config.algorithm,
            secret,
            VerifyKey(config.key_id, config.algorithm, secret),
        )
    private = load_private(config.algorithm, read_pem(config.private_key, config.private_key_file))
    public = private.public_key()
    return SigningKey(
        config.key_id, config.algorithm, private, VerifyKey(config.key_id, config.algorithm, public)
    )
