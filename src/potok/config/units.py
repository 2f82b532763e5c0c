"""Human-friendly units in configuration: durations ("250ms", "10s") and sizes ("5MiB")."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_SIZE_SCALE = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
    None: 1,
}


def parse_duration(value: Any) -> Any:
    """Accept seconds as a number or a string with a unit (ms, s, m, h)."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as '250ms' or '10s'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"bad duration {value!r}: use a number with ms, s, m or h, e.g. '10s'")
        number, unit = match.groups()
        return float(number) * _DURATION_SCALE[unit]
    return value


def parse_size(value: Any) -> Any:
    """Accept bytes as an integer or a string with a unit (KiB, MiB, KB, MB ...)."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string such as '5MiB'")
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match is None:
            raise ValueError(f"bad size {value!r}: use bytes or a unit such as KiB or MiB")
        number, unit = match.groups()
        return int(number) * _SIZE_SCALE[unit.lower() if unit else None]
    return value


_DURATION_TEXT = {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"}
_SIZE_TEXT = {"type": "string", "pattern": r"^\s*\d+\s*([KMG]i?B|B)?\s*$"}

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(gt=0),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0}, _DURATION_TEXT]}),
]
"""A positive duration in seconds; YAML may say 10, 10.5, '250ms', '10s', '5m' or '1h'."""

OptionalDuration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(ge=0),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0}, _DURATION_TEXT]}),
]
"""A duration that may be zero (zero switches the feature off)."""

ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    Field(gt=0),
    WithJsonSchema({"anyOf": [{"type": "integer", "exclusiveMinimum": 0}, _SIZE_TEXT]}),
]
"""A positive size in bytes; YAML may say 5242880, '5MiB', '16KiB' or '1MB'."""


def check_cidr(value: str) -> str:
    """`value` if it is an IP address or network (v4 or v6, host bits allowed)."""
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP address or CIDR") from exc
    return value


Cidr = Annotated[str, AfterValidator(check_cidr)]
"""An IP address or network in CIDR notation (v4 or v6); checked item by item."""
