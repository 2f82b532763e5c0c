"""One builder for every response the gateway makes itself: RFC 9457 problem+json."""

from __future__ import annotations

from http import HTTPStatus

import orjson

PROBLEM_CONTENT_TYPE = b"application/problem+json"


class GatewayError(Exception):
    """An error that becomes a problem+json response with `status`."""

    status = 500
    title: str | None = None

    def __init__(
        self, detail: str | None = None, *, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        super().__init__(detail or self.title or HTTPStatus(self.status).phrase)
        self.detail = detail
        self.headers = headers


class PayloadTooLarge(GatewayError):
    status = 413


class ServiceUnavailable(GatewayError):
    status = 503


def problem_body(
    status: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    instance: str | None = None,
    request_id: str | None = None,
    extra: dict[str, object] | None = None,
) -> bytes:
    """The JSON document of a problem response (type is about:blank: the status says it all)."""
    doc: dict[str, object] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        doc["detail"] = detail
    if instance:
        doc["instance"] = instance
    if request_id:
        doc["request_id"] = request_id
    if extra:
        doc.update(extra)
    return orjson.dumps(doc)
