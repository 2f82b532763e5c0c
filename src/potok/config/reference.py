"""The configuration reference (docs/configuration.md) and JSON Schema, from the models."""

from __future__ import annotations

import json
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from potok.config.models import GatewayConfig

HEADER = """# Configuration reference

Generated from the pydantic models by `potok config-docs`; do not edit by hand
(a test fails when this file and the models disagree).

Durations take `250ms`, `10s`, `5m`, `1h` or a number of seconds; sizes take `16KiB`,
`5MiB`, `1MB` or a number of bytes. Any string value may use `${VAR}` or `${VAR:-default}`.
"""


def json_schema() -> str:
    schema = GatewayConfig.model_json_schema(mode="validation")
    # A target may be written as a bare URL string (the model's before-validator).
    targets = schema["$defs"]["ServiceConfig"]["properties"]["targets"]
    targets["items"] = {"anyOf": [{"type": "string", "format": "uri"}, targets["items"]]}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Potok gateway configuration"
    return json.dumps(schema, indent=2) + "\n"


def markdown() -> str:
    sections: list[str] = [HEADER]
    seen: set[type[BaseModel]] = set()
    _model_section(GatewayConfig, "(top level)", sections, seen)
    return "\n".join(sections)


def _model_section(
    model: type[BaseModel], where: str, out: list[str], seen: set[type[BaseModel]]
) -> None:
    if model in seen:
        return
    seen.add(model)
    doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
    out.append(f"## `{model.__name__}` — {where}\n")
    if doc:
        out.append(f"{doc}\n")
    out.append("| field | type | default | description |")
    out.append("|---|---|---|---|")
    nested: list[tuple[type[BaseModel], str]] = []
    for name, field in model.model_fields.items():
        out.append(
            f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} "
            f"| {field.description or ''} |"
        )
        for sub in _models_in(field.annotation):
            nested.append((sub, f"`{name}` of `{model.__name__}`"))
    out.append("")
    for sub, sub_where in nested:
        _model_section(sub, sub_where, out, seen)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found.extend(_models_in(arg))
    return found


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(annotation))
    if (
        origin is not None
        and get_origin(annotation) is not None
        and hasattr(annotation, "__metadata__")
    ):
        return _type_name(get_args(annotation)[0])
    if origin in (tuple, list):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        key, value = get_args(annotation)
        return f"map {_type_name(key)} → {_type_name(value)}"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return f"[`{annotation.__name__}`](#{annotation.__name__.lower()}--)"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _default(field: FieldInfo) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
        if value is None:
            return "—"
        if isinstance(value, tuple) and not value:
            return "`[]`"
        return f"`{value}`"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(defaults)"
        return (
            f"`{value}`"
            if value not in ({}, [], ())
            else "`{}`"
            if isinstance(value, dict)
            else "`[]`"
        )
    return "**required**"
