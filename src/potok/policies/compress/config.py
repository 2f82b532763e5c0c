"""Config of the `compress` policy: which encodings, how hard, and for which answers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from potok.config.base import ConfigModel
from potok.config.units import ByteSize

Encoding = Literal["zstd", "br", "gzip"]

DEFAULT_TYPES = (
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "+json",
    "+xml",
    "image/svg+xml",
)


class CompressConfig(ConfigModel):
    """gzip, br or zstd of proxied answers the client accepts and the upstream did not encode.

    Not for HEAD, 204, 206, 304, a `Content-Range`, an upstream `Cache-Control:
    no-transform`, or other content types. Compressed answers lose their
    `Content-Length` (sent chunked), get `Vary: Accept-Encoding` and a weak `ETag`.
    The gateway's own answers (errors, fallbacks) are never compressed."""

    encodings: tuple[Encoding, ...] = Field(
        ("zstd", "br", "gzip"),
        description=(
            "Encodings offered, in the gateway's order of preference: the client's highest "
            "q-value wins, ties go to the one listed first here. zstd is the cheapest in CPU "
            "for its ratio, br the smallest, gzip what every client takes."
        ),
    )
    gzip_level: int = Field(5, ge=1, le=9, description="gzip (zlib) level, 1 fastest to 9.")
    br_level: int = Field(
        4, ge=0, le=11, description="Brotli quality, 0 fastest to 11 (11 is for static files)."
    )
    zstd_level: int = Field(3, ge=1, le=19, description="Zstandard level, 1 fastest to 19.")
    min_bytes: ByteSize = Field(
        1024,
        description=(
            "Answers announcing a smaller Content-Length are sent as they are (compressing "
            "them saves little and costs a chunked frame); streamed answers are compressed."
        ),
    )
    content_types: tuple[str, ...] = Field(
        DEFAULT_TYPES,
        description=(
            "Media types compressed: exact (`application/json`), a whole type (`text/*`) or "
            "a structured suffix (`+json` matches `application/problem+json`)."
        ),
    )

    @field_validator("encodings")
    @classmethod
    def _encodings(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one encoding")
        if len(set(value)) != len(value):
            raise ValueError("each encoding once")
        return value

    @field_validator("content_types")
    @classmethod
    def _types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if not _valid_type_pattern(pattern):
                raise ValueError(f"{pattern!r}: use type/subtype, type/* or +suffix (e.g. +json)")
        return tuple(pattern.lower() for pattern in value)


def _valid_type_pattern(pattern: str) -> bool:
    if pattern.startswith("+"):
        return len(pattern) > 1 and "/" not in pattern and ";" not in pattern
    kind, slash, sub = pattern.partition("/")
    plain = ";" not in pattern and " " not in pattern
    return bool(slash and kind and sub and kind != "*" and plain)
