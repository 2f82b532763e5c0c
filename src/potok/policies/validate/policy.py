"""The `validate` policy: refuse bad bodies and queries at the edge, naming each field.

Order of checks for a body: content type (415), announced size (413), then the
body is read whole (bounded: the parser refuses anything past the limit with 413
while it streams), parsed (400 if not JSON) and validated (422 by default). The
body stays in place for the upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from potok.errors import GatewayError, PayloadTooLarge
from potok.observability.metrics import MetricsRegistry
from potok.policies.base import BuildContext, Policy, Stage
from potok.policies.validate.config import ValidateConfig
from potok.policies.validate.schema import CompiledSchema, FieldError

if TYPE_CHECKING:
    from potok.exchange import Exchange

_BODYLESS_METHODS = frozenset({b"GET", b"HEAD", b"DELETE", b"OPTIONS"})


class InvalidRequest(GatewayError):
    """A body or query that breaks its schema; `extra` carries `errors` for the problem body."""

    title = "Request validation failed"

    def __init__(self, status: int, detail: str, errors: list[FieldError]) -> None:
        super().__init__(detail)
        self.status = status
        self.extra: dict[str, object] = {"errors": errors}


class UnsupportedMediaType(GatewayError):
    status = 415


def query_converter(schema: dict[str, Any]) -> Callable[[bytes], dict[str, Any]]:
    """A function from the raw query (without '?') to the object the schema sees."""
    kinds: dict[str, tuple[str, str]] = {}
    for name, prop in (schema.get("properties") or {}).items():
        if isinstance(prop, dict):
            kind = prop.get("type")
            items = prop.get("items")
            item_kind = items.get("type") if isinstance(items, dict) else None
            kinds[name] = (
                kind if isinstance(kind, str) else "",
                item_kind if isinstance(item_kind, str) else "",
            )

    def convert(raw: bytes) -> dict[str, Any]:
        values: dict[str, list[str]] = {}
        for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            values.setdefault(name, []).append(value)
        out: dict[str, Any] = {}
        for name, found in values.items():
            kind, item_kind = kinds.get(name, ("", ""))
            if kind == "array":
                out[name] = [_scalar(v, item_kind) for v in found]
            elif len(found) > 1:
                out[name] = [_scalar(v, kind) for v in found]
            else:
                out[name] = _scalar(found[0], kind)
        return out

    return convert


def _scalar(value: str, kind: str) -> Any:
    """The value as the schema's type wants it, when it reads as one (else the string)."""
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
    except ValueError:
        return value
    if kind == "boolean" and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    return value


class RequestValidator:
    def __init__(self, config: ValidateConfig, route: str, registry: MetricsRegistry) -> None:
        self.body = CompiledSchema(config.body, "body") if config.body is not None else None
        self.query = CompiledSchema(config.query, "query") if config.query is not None else None
        self.convert_query = query_converter(config.query) if config.query is not None else None
        self.max_body = config.max_body_bytes
        self.content_types = frozenset(config.content_types)
        self.status = config.status
        self.max_errors = config.max_errors
        failures = registry.counter(
            "validation_failures_total",
            "Requests refused by the validate policy, by route and part "
            "(body, query, json, content_type, size).",
            ("route", "part"),
        )
        self._count = failures.inc
        self._labels = {
            part: (route, part) for part in ("body", "query", "json", "content_type", "size")
        }

    def fail(self, part: str, error: GatewayError) -> GatewayError:
        self._count(self._labels[part])
        return error

    def check_query(self, exchange: Exchange) -> None:
        if self.query is None or self.convert_query is None:
            return
        document = self.convert_query(exchange.query[1:])
        errors = self.query.errors(document, self.max_errors)
        if errors:
            raise self.fail(
                "query", InvalidRequest(self.status, "the query parameters are not valid", errors)
            )

    def needs_body(self, exchange: Exchange) -> bool:
        if self.body is None:
            return False
        has_body = bool(exchange.content_length) or (
            exchange.content_length is None and exchange.header(b"transfer-encoding") is not None
        )
        return has_body or exchange.method not in _BODYLESS_METHODS

    def check_head(self, exchange: Exchange) -> None:
        """Everything decidable before reading the body: type and announced size."""
        content_type = exchange.header(b"content-type")
        media = (
            content_type.split(b";", 1)[0].strip().lower().decode("latin-1") if content_type else ""
        )
        if media not in self.content_types and not (
            media.startswith("application/") and media.endswith("+json")
        ):
            raise self.fail(
                "content_type",
                UnsupportedMediaType(
                    f"this route takes a JSON body ({', '.join(sorted(self.content_types))}), "
                    f"not {media or 'a body without Content-Type'}"
                ),
            )
        body = exchange.body
        limit = min(body.max_bytes, self.max_body)
        body.max_bytes = limit  # the parser now refuses anything longer while it streams
        announced = exchange.content_length
        if (announced is not None and announced > limit) or body.received > limit:
            raise self.fail("size", PayloadTooLarge(f"a body to validate is at most {limit} bytes"))

    def check_body(self, raw: bytes) -> None:
        assert self.body is not None
        if not raw:
            errors: list[FieldError] = [{"field": "body", "message": "a JSON body is required"}]
            raise self.fail("body", InvalidRequest(self.status, "the body is missing", errors))
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            errors = [{"field": "body", "message": f"not valid JSON: {exc}"}]
            error = InvalidRequest(400, "the body is not valid JSON", errors)
            raise self.fail("json", error) from None
        errors = self.body.errors(document, self.max_errors)
        if errors:
            raise self.fail("body", InvalidRequest(self.status, "the body is not valid", errors))


async def _read_body(exchange: Exchange) -> bytes:
    """The whole body; if the client leaves or the deadline passes meanwhile, this task is
    cancelled rather than left waiting for bytes that will never come."""
    task = asyncio.current_task()
    previous = exchange.on_cancel
    if task is not None:

        def cancel() -> None:
            task.cancel()

        exchange.on_cancel = cancel
    try:
        return await exchange.body.peek_all()
    finally:
        exchange.on_cancel = previous


def build(config: ValidateConfig | None, context: BuildContext) -> Policy | None:
    if config is None or (config.body is None and config.query is None):
        return None
    registry = context.metrics if context.metrics is not None else MetricsRegistry()
    validator = RequestValidator(config, context.route_name, registry)
    if validator.body is None:
        return Policy(name="validate", stage=Stage.VALIDATE, on_request=validator.check_query)

    async def check(exchange: Exchange) -> None:
        validator.check_query(exchange)
        if not validator.needs_body(exchange):
            return
        validator.check_head(exchange)
        validator.check_body(await _read_body(exchange))

    return Policy(name="validate", stage=Stage.VALIDATE, on_request_async=check)
