"""The running config as the admin API shows it: every secret masked, and its digest.

Masked: `secret`, `password`, `private_key`, `client_secret` anywhere; a service's
injected `api_key.value`; an event publishing key (`keys[].key`); the password in any
URL's user info (`redis://:***@host`, `postgresql://user:***@db/x`). A rate limit's
`key: ip` is a setting, not a secret, and stays. The digest is the one
/api/v1/health and the reload log line show (a hash: it reveals nothing).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig

MASK = "***"
_ALWAYS = frozenset({"secret", "password", "private_key", "client_secret"})


def masked(config: GatewayConfig) -> dict[str, Any]:
    document: dict[str, Any] = _mask(config.model_dump(mode="json"), ())
    return document


def _mask(value: Any, path: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _masked_field(k, v, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(item, (*path, "[]")) for item in value]
    if isinstance(value, str) and "://" in value:
        return _mask_url(value)
    return value


def _masked_field(name: str, value: Any, path: tuple[str, ...]) -> Any:
    if value is None:
        return None
    secret = (
        name in _ALWAYS
        or (name == "value" and path[-1:] == ("api_key",))
        or (name == "key" and path[-2:] == ("keys", "[]"))
    )
    if secret:
        return MASK
    return _mask(value, (*path, name))


def _mask_url(text: str) -> str:
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if parts.password is None:
        return text
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:{MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def file_digest(text: bytes) -> str:
    """The config file's ETag: what `If-Match` on an apply compares."""
    return hashlib.sha256(text).hexdigest()
