"""Key material judged at config load: type and curve against the algorithm, RSA size,
HMAC secret length and strength.

`potok check` and `potok run` refuse a bad key with the field named, before any
worker starts, instead of failing later inside a worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}  # RFC 7518 §3.2: at least the hash size
MIN_RSA_BITS = 2048
_CURVES = {"ES256": "secp256r1"}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
MIN_DISTINCT_BYTES = 8


class KeyMaterialError(ValueError):
    """Key material that does not fit its algorithm."""


def check_key_type(algorithm: str, key: Any) -> None:
    """Refuse a key whose type (or curve, or size) does not belong to `algorithm`."""
    if algorithm == "RS256":
        if not isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
            raise KeyMaterialError(f"{_kind(key)} does not fit RS256 (needs an RSA key)")
        if key.key_size < MIN_RSA_BITS:
            raise KeyMaterialError(
                f"a {key.key_size}-bit RSA key is too weak (RS256 needs at least {MIN_RSA_BITS})"
            )
    elif algorithm in _CURVES:
        if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
            raise KeyMaterialError(f"{_kind(key)} does not fit {algorithm} (needs an EC key)")
        if key.curve.name != _CURVES[algorithm]:
            wanted = _CURVE_NAMES[_CURVES[algorithm]]
            raise KeyMaterialError(f"{_kind(key)} does not fit {algorithm} (needs {wanted})")
    elif algorithm == "EdDSA":
        eddsa = (
            ed25519.Ed25519PublicKey,
            ed25519.Ed25519PrivateKey,
            ed448.Ed448PublicKey,
            ed448.Ed448PrivateKey,
        )
        if not isinstance(key, eddsa):
            raise KeyMaterialError(f"{_kind(key)} does not fit EdDSA (needs Ed25519 or Ed448)")
    elif algorithm in HMAC_MIN_BYTES:
        if not isinstance(key, bytes):
            raise KeyMaterialError(f"{algorithm} takes a secret, not {_kind(key)}")
    else:
        raise KeyMaterialError(f"unknown algorithm {algorithm}")


def _kind(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"a {key.key_size}-bit RSA key"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"a {_CURVE_NAMES.get(key.curve.name, key.curve.name)} EC key"
    if isinstance(key, bytes):
        return "a secret"
    name = type(key).__name__.removeprefix("_")
    return f"an {name.replace('PublicKey', '').replace('PrivateKey', '')} key"


def check_hmac_secret(algorithm: str, secret: bytes) -> None:
    """At least the hash size (RFC 7518 §3.2), and not trivially guessable."""
    need = HMAC_MIN_BYTES[algorithm]
    if len(secret) < need:
        raise KeyMaterialError(
            f"{algorithm} needs a secret of at least {need} bytes (got {len(secret)})"
        )
    if len(set(secret)) < MIN_DISTINCT_BYTES or _repeats(secret):
        raise KeyMaterialError(
            "the secret is trivially weak (a repeated pattern or too few distinct bytes); "
            "use `potok secrets new-key` or 32+ random bytes"
        )


def _repeats(secret: bytes) -> bool:
    """Whether the secret is a shorter unit repeated (`abcd` * 8)."""
    size = len(secret)
    units = (unit for unit in range(1, size // 2 + 1) if size % unit == 0)
    return any(secret == secret[:unit] * (size // unit) for unit in units)


def read_pem(inline: str | None, path: str | None) -> bytes:
    if inline:
        return inline.encode()
    assert path is not None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyMaterialError(f"cannot read {path}: {exc.strerror or exc}") from exc


def load_public(algorithm: str, pem: bytes) -> Any:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise KeyMaterialError(f"not a PEM public key: {exc}") from exc
    check_key_type(algorithm, key)
    return key


def load_private(algorithm: str, pem: bytes) -> Any:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyMaterialError(f"not an unencrypted PEM private key: {exc}") from exc
    check_key_type(algorithm, key)
    return key


def check_config_key(
    algorithm: str, secret: str | None, key: str | None, key_file: str | None, kind: str
) -> None:
    """Load and judge the key a config names; ValueError (naming the field) if it is bad."""
    if algorithm in HMAC_MIN_BYTES:
        field = "secret"
    else:
        field = f"{kind}_key" if key else f"{kind}_key_file"
    try:
        if algorithm in HMAC_MIN_BYTES:
            check_hmac_secret(algorithm, (secret or "").encode())
        elif kind == "public":
            load_public(algorithm, read_pem(key, key_file))
        else:
            load_private(algorithm, read_pem(key, key_file))
    except KeyMaterialError as exc:
        raise ValueError(f"{field}: {exc}") from None
