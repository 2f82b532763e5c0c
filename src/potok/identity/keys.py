"""JWT keys: loading PEM/secret material and pinning each key to exactly one algorithm.

A key knows its algorithm; verification passes only that one algorithm to
PyJWT, so `alg: none` and RS/HS confusion (an HS256 token "signed" with an RSA
public key) are refused before any signature check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from potok.identity.config import HMAC_ALGORITHMS, SigningKeyConfig


class KeyMaterialError(ValueError):
    """Key material that does not fit its algorithm."""


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


def read_pem(inline: str | None, path: str | None) -> bytes:
    if inline:
        return inline.encode()
    assert path is not None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyMaterialError(f"cannot read {path}: {exc.strerror or exc}") from exc


def check_key_type(algorithm: str, key: Any) -> None:
    """Refuse a key whose type does not belong to `algorithm`."""
    if algorithm == "RS256":
        ok = isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey)
        if ok and key.key_size < 2048:
            raise KeyMaterialError("RS256 keys need at least 2048 bits")
    elif algorithm == "ES256":
        ok = isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and (
            key.curve.name == "secp256r1"
        )
    elif algorithm == "EdDSA":
        ok = isinstance(
            key,
            ed25519.Ed25519PublicKey
            | ed25519.Ed25519PrivateKey
            | ed448.Ed448PublicKey
            | ed448.Ed448PrivateKey,
        )
    else:
        ok = isinstance(key, bytes)
    if not ok:
        raise KeyMaterialError(f"the key does not fit {algorithm}")


def public_key(algorithm: str, pem: bytes, kid: str | None = None) -> VerifyKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise KeyMaterialError(f"not a PEM public key: {exc}") from exc
    check_key_type(algorithm, key)
    return VerifyKey(kid, algorithm, key)


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
    pem = read_pem(config.private_key, config.private_key_file)
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyMaterialError(f"not an unencrypted PEM private key: {exc}") from exc
    check_key_type(config.algorithm, private)
    public = private.public_key()
    return SigningKey(
        config.key_id, config.algorithm, private, VerifyKey(config.key_id, config.algorithm, public)
    )
