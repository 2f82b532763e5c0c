"""Encrypted config values: `enc:v1:<key id>:<base64url(nonce | ciphertext | tag)>`, AES-256-GCM.

Keys come from `POTOK_SECRET_KEY`: one or more entries separated by commas,
each `[id=]key` with the key as 64 hex digits or base64 of 32 bytes. The first
entry encrypts; every entry decrypts, so keys can be rotated: add the new key
in front, re-encrypt, then drop the old one. An entry without an id gets the
first 8 hex digits of the key's SHA-256 as its id. The key id and version are
bound to the ciphertext as associated data, so neither can be swapped.

A key also answers to that derived id when it is given a name: values encrypted
while the key was a bare `POTOK_SECRET_KEY=<key>` stay readable after it becomes
`old=<key>` in the rotation the docs describe (`new=<key2>,old=<key1>`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "enc:v1:"
ENV_VAR = "POTOK_SECRET_KEY"
_KID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_NONCE = 12


class SecretError(ValueError):
    """A key or an encrypted value that cannot be used, with a message saying which."""


@dataclass(frozen=True)
class SecretKey:
    kid: str
    key: bytes

    @property
    def derived_kid(self) -> str:
        """The id the key has when it is given without one."""
        return derived_kid(self.key)

    def answers_to(self, kid: str) -> bool:
        return kid in (self.kid, self.derived_kid)


def derived_kid(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def _key_bytes(text: str) -> bytes:
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    try:
        padded = text + "=" * (-len(text) % 4)
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError("a key is 64 hex digits or base64 of 32 bytes") from None
    if len(raw) != 32:
        raise SecretError(f"a key must be 32 bytes (got {len(raw)})")
    return raw


def parse_keys(text: str) -> list[SecretKey]:
    """The keys of a POTOK_SECRET_KEY value, the encrypting one first."""
    keys: list[SecretKey] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        kid, sep, material = entry.partition("=")
        if sep and _KID.match(kid) and len(material) >= 40:
            key = _key_bytes(material)
        else:
            key = _key_bytes(entry)
            kid = derived_kid(key)
        if any(k.answers_to(kid) or k.key == key for k in keys):
            raise SecretError(f"key id {kid!r} (or its key) appears twice in {ENV_VAR}")
        keys.append(SecretKey(kid, key))
    if not keys:
        raise SecretError(f"{ENV_VAR} holds no key")
    return keys


def keys_from(env: Mapping[str, str] | None = None) -> list[SecretKey]:
    environment = os.environ if env is None else env
    value = environment.get(ENV_VAR)
    if not value:
        raise SecretError(f"{ENV_VAR} is not set (generate one with `potok secrets new-key`)")
    return parse_keys(value)


def _aad(kid: str) -> bytes:
    return f"{PREFIX}{kid}".encode()


def encrypt(plaintext: str, keys: list[SecretKey]) -> str:
    key = keys[0]
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(key.key).encrypt(nonce, plaintext.encode(), _aad(key.kid))
    body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
    return f"{PREFIX}{key.kid}:{body}"


def decrypt(value: str, keys: list[SecretKey]) -> str:
    if not value.startswith(PREFIX):
        raise SecretError(f"not an encrypted value (expected {PREFIX}...)")
    kid, sep, body = value[len(PREFIX) :].partition(":")
    if not sep or not _KID.match(kid):
        raise SecretError("malformed encrypted value (expected enc:v1:<key id>:<data>)")
    key = next((k for k in keys if k.kid == kid), None) or next(
        (k for k in keys if k.answers_to(kid)), None
    )
    if key is None:
        known = ", ".join(
            k.kid if k.kid == k.derived_kid else f"{k.kid} ({k.derived_kid})" for k in keys
        )
        raise SecretError(f"encrypted with key {kid!r}, which {ENV_VAR} lacks (has: {known})")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise SecretError("malformed encrypted value (bad base64)") from None
    if len(raw) < _NONCE + 16:
        raise SecretError("malformed encrypted value (too short)")
    try:
        plain = AESGCM(key.key).decrypt(raw[:_NONCE], raw[_NONCE:], _aad(kid))
    except InvalidTag:
        raise SecretError(f"cannot decrypt with key {kid!r}: wrong key or tampered value") from None
    return plain.decode()


def new_key() -> str:
    return os.urandom(32).hex()


def open_config_value(
    value: str, env: Mapping[str, str], path: str, problems: list[tuple[str, str]]
) -> str:
    """Decrypt a config string at load; a problem is recorded against `path` on failure."""
    try:
        return decrypt(value, keys_from(env))
    except SecretError as exc:
        problems.append((path, str(exc)))
        return ""
