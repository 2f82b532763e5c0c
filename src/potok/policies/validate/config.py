"""Config of the `validate` policy: JSON Schemas for the body and the query of a route."""

from __future__ import annotations

from typing import Any, Literal

import jsonschema
from pydantic import Field, field_validator

from potok.config.base import ConfigModel
from potok.config.units import ByteSize

_MEDIA_TYPE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$&-^_.+/*")


def check_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Refuse a schema its own meta-schema rejects (draft-07 unless `$schema` says otherwise)."""
    if value is None:
        return value
    declared = value.get("$schema")
    validator = (
        jsonschema.validators.validator_for(value)
        if isinstance(declared, str)
        else jsonschema.Draft7Validator
    )
    try:
        validator.check_schema(value)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        raise ValueError(f"invalid JSON Schema at {where}: {exc.message}") from None
    return value


class ValidateConfig(ConfigModel):
    """Requests are checked at the edge, before they reach the service: the body against
    `body`, the query parameters against `query`. Schemas are compiled once at load."""

    body: dict[str, Any] | None = Field(
        None,
        description=(
            "JSON Schema for the request body (draft-07 unless `$schema` names another). "
            "Requests with a body must then be JSON (else 415); GET, HEAD, DELETE and OPTIONS "
            "without a body are let through."
        ),
    )
    query: dict[str, Any] | None = Field(
        None,
        description=(
            "JSON Schema for the query, seen as an object of parameter -> string. Parameters "
            "whose schema type is integer, number or boolean are converted first; a repeated "
            "parameter, or one whose type is array, becomes a list."
        ),
    )
    max_body_bytes: ByteSize = Field(
        1024 * 1024,
        description=(
            "Largest body parsed for validation; bigger gets 413 before any parsing (also "
            "capped by request_size)."
        ),
    )
    content_types: tuple[str, ...] = Field(
        ("application/json",),
        description=(
            "Media types accepted for the body; any `application/*+json` is accepted too. "
            "Others get 415."
        ),
    )
    status: Literal[400, 422] = Field(
        422, description="Status for a body or query that breaks its schema (malformed JSON: 400)."
    )
    max_errors: int = Field(
        20, ge=1, le=1000, description="At most this many failing fields listed per answer."
    )

    @field_validator("body", "query")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_schema(value)

    @field_validator("content_types")
    @classmethod
    def _types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        lowered = tuple(item.strip().lower() for item in value)
        for item in lowered:
            if item.count("/") != 1 or not set(item) <= _MEDIA_TYPE_CHARS:
                raise ValueError(f"{item!r} is not a media type such as application/json")
        return lowered
