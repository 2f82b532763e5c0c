"""Config of the `headers` policy: add or remove headers on the way in and out."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from potok.config.base import ConfigModel

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_PROTECTED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"}
)


def _check_names(names: list[str]) -> None:
    for name in names:
        if not _TOKEN.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in _PROTECTED:
            raise ValueError(f"{name!r} is managed by the gateway and cannot be changed here")


def _check_value(value: str) -> None:
    if any(ch in value for ch in "\r\n\x00"):
        raise ValueError("header values may not contain CR, LF or NUL")


class HeaderChanges(ConfigModel):
    """Headers to set (replacing any incoming value) and headers to drop."""

    set: dict[str, str] = Field(default_factory=dict, description="Header name -> value to set.")
    remove: tuple[str, ...] = Field((), description="Header names to drop (case-insensitive).")

    @field_validator("set")
    @classmethod
    def _set(cls, value: dict[str, str]) -> dict[str, str]:
        _check_names(list(value))
        for item in value.values():
            _check_value(item)
        return value

    @field_validator("remove")
    @classmethod
    def _remove(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _check_names(list(value))
        return value


class HeadersConfig(ConfigModel):
    """Header changes for requests sent upstream and responses sent to clients."""

    request: HeaderChanges = Field(default_factory=HeaderChanges, description="On the request.")
    response: HeaderChanges = Field(default_factory=HeaderChanges, description="On the response.")
