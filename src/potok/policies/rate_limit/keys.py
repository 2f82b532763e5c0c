"""What a limit counts by: a function from the request to a key string.

`user` and `api_key` read `exchange.identity`, set by the authentication policies
(which run before the limit stage). The identity is read by duck typing with
None defaults, so any identity object works:

- `user`: `identity.subject`, unless `identity.kind == "api_key"`;
- `api_key`: `identity.api_key_id` if present, else `identity.subject` when
  `identity.kind == "api_key"`.

A request without that identity (anonymous, or a user on an api_key limit) is
counted by its client IP, under a different prefix so an IP never collides with
a user name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from potok.exchange import Exchange

KeyFunction = Callable[["Exchange"], str]

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

KEY_KINDS = ("ip", "user", "api_key", "route")


def check_key(value: str) -> str:
    if value in KEY_KINDS:
        return value
    if value.startswith("header:"):
        name = value.removeprefix("header:")
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        return "header:" + name.lower()
    raise ValueError("use ip, user, api_key, route or header:<Header-Name>")


# Longer values (a header, an odd subject) are hashed so a key stays small.
_MAX_VALUE = 96


def _bounded(value: str) -> str:
    if len(value) <= _MAX_VALUE:
        return value
    return "#" + hashlib.blake2b(value.encode(), digest_size=16).hexdigest()


def by_ip(exchange: Exchange) -> str:
    return "ip:" + exchange.client_ip


def by_user(exchange: Exchange) -> str:
    identity = exchange.identity
    if identity is not None and getattr(identity, "kind", None) != "api_key":
        subject = getattr(identity, "subject", None)
        if subject:
            return "user:" + _bounded(str(subject))
    return "ip:" + exchange.client_ip


def by_api_key(exchange: Exchange) -> str:
    identity = exchange.identity
    if identity is not None:
        key_id = getattr(identity, "api_key_id", None)
        if key_id is None and getattr(identity, "kind", None) == "api_key":
            key_id = getattr(identity, "subject", None)
        if key_id:
            return "key:" + _bounded(str(key_id))
    return "ip:" + exchange.client_ip


def by_route(exchange: Exchange) -> str:
    return "route"


def by_header(lower_name: str) -> KeyFunction:
    name = lower_name.encode()
    prefix = "h:" + lower_name + ":"

    def key(exchange: Exchange) -> str:
        for header, value in exchange.headers:
            if header.lower() == name:
                return prefix + _bounded(value.decode("latin-1"))
        return "ip:" + exchange.client_ip

    return key


def key_function(spec: str) -> KeyFunction:
    """The function for a validated `key` setting (see config.check_key)."""
    if spec.startswith("header:"):
        return by_header(spec.removeprefix("header:"))
    return {"ip": by_ip, "user": by_user, "api_key": by_api_key, "route": by_route}[spec]
