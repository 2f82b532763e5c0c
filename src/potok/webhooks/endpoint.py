"""The ingress: POST /api/v1/webhooks/{source} (and each source's `path` aliases), the
terminal of the gateway's own webhook routes.

Per request: the source by name (a dict lookup), the allow-list, the size limit before
a byte of the body is read, the signature over the raw bytes, then the outbox write. The
2xx is sent only once the outbox has committed the delivery (durable); a replay of an
accepted delivery id gets 200 and nothing is stored again. No task is created when the
body has already arrived with the head (the usual webhook): the outbox's commit resolves
a future whose callback answers. A replay is a delivery whose id OR signed content
(both per source) is already stored.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import orjson
import structlog

from potok.identity.audit import WEBHOOK_REJECTED
from potok.webhooks.outbox.base import NewDelivery, new_delivery_id
from potok.webhooks.verification import IP_DENIED, TOO_LARGE, Rejected

if TYPE_CHECKING:
    from potok.exchange import Exchange
    from potok.identity.audit import AuditLog
    from potok.webhooks.service import Webhooks
    from potok.webhooks.sources import Source

log = structlog.get_logger("potok.webhooks")

_JSON = b"application/json"
_ALLOW_POST = ((b"Allow", b"POST"),)
_RETRY_LATER = ((b"Retry-After", b"5"),)


class WebhookEndpoint:
    """The terminal for one route: the templated one (source from the path parameter) or
    an alias (`source` bound)."""

    def __init__(
        self,
        webhooks: Webhooks,
        sources: dict[str, Source],
        audit: AuditLog | None,
        bound: Source | None = None,
    ) -> None:
        self._webhooks = webhooks
        self._sources = sources
        self._audit = audit
        self._bound = bound
        self._metrics = webhooks.metrics

    def __call__(self, exchange: Exchange) -> None:
        source = self._bound
        if source is None:
            params = exchange.params
            source = self._sources.get(params.get("source", "")) if params else None
            if source is None:
                exchange.body.detach()
                exchange.problem(404, "no webhook source by this name", title="Not Found")
                return
        if exchange.method != b"POST":
            exchange.body.detach()
            exchange.problem(405, "webhooks are delivered with POST", headers=_ALLOW_POST)
            return
        self._metrics.received.inc((source.name,))
        if source.networks and not source.allows(exchange.client_ip):
            self._reject(exchange, source, Rejected(IP_DENIED, 403, "this address may not deliver"))
            return
        limit = source.config.max_body
        length = exchange.content_length
        if length is not None and length > limit:
            self._reject(
                exchange, source, Rejected(TOO_LARGE, 413, f"the body is larger than {limit} bytes")
            )
            return
        body = exchange.body
        body.max_bytes = min(body.max_bytes, limit)  # a chunked body is cut off there too
        data = body.buffered_bytes()
        if data is not None:
            self._verify(exchange, source, data)
        else:
            asyncio.get_running_loop().create_task(self._read(exchange, source))

    async def _read(self, exchange: Exchange, source: Source) -> None:
        try:
            data = await exchange.body.read_all()
        except Exception:  # the client left or the server refused the body (413)
            return
        if exchange.is_current():
            self._verify(exchange, source, data)

    def _verify(self, exchange: Exchange, source: Source, data: bytes) -> None:
        now = time.time()
        try:
            verified = source.verifier.verify(exchange.header, data, now)
        except Rejected as rejection:
            self._reject(exchange, source, rejection)
            return
        self._metrics.verified.inc((source.name,))
        delivery = NewDelivery(
            id=new_delivery_id(),
            source=source.name,
            replay_key=verified.key,
            signature_key=verified.signature,
            event_type=verified.event_type,
            received_at=now,
            headers=_kept_headers(exchange, source.kept),
            body=data,
        )
        try:
            future = self._webhooks.outbox.accept(delivery)
        except Exception as exc:  # not started, shutting down
            self._store_failed(exchange, source, exc)
            return
        future.add_done_callback(lambda done: self._stored(exchange, source, delivery, done))

    def _stored(
        self,
        exchange: Exchange,
        source: Source,
        delivery: NewDelivery,
        done: asyncio.Future[bool],
    ) -> None:
        error = done.exception() if not done.cancelled() else asyncio.CancelledError()
        if error is not None:
            self._store_failed(exchange, source, error)
            return
        metrics = self._metrics
        if done.result():
            metrics.accepted.inc((source.name,))
            metrics.accept_seconds.observe((), time.perf_counter() - exchange.started)
            self._webhooks.delivery_stored()
            answer = {"id": delivery.id, "status": "accepted"}
        else:
            metrics.duplicates.inc((source.name,))
            answer = {"status": "duplicate"}
        if exchange.is_current():
            exchange.respond(200, orjson.dumps(answer), _JSON)

    def _store_failed(self, exchange: Exchange, source: Source, error: BaseException) -> None:
        self._metrics.store_failures.inc((source.name,))
        log.error("webhook not stored", source=source.name, error=str(error))
        if exchange.is_current():
            exchange.problem(
                503, "the delivery could not be stored; send it again", headers=_RETRY_LATER
            )

    def _reject(self, exchange: Exchange, source: Source, rejection: Rejected) -> None:
        self._metrics.rejected.inc((source.name, rejection.reason))
        if self._audit is not None:
            self._audit.record(
                WEBHOOK_REJECTED,
                "denied",
                ip=exchange.client_ip,
                route=exchange.route_name,
                request_id=exchange.request_id,
                detail={"source": source.name, "reason": rejection.reason},
            )
        exchange.body.detach()
        exchange.problem(rejection.status, rejection.detail, extra={"reason": rejection.reason})


def _kept_headers(exchange: Exchange, kept: tuple[bytes, ...]) -> tuple[tuple[str, str], ...]:
    found = []
    for name in kept:
        value = exchange.header(name)
        if value is not None:
            found.append((name.decode(), value.decode("latin-1")))
    return tuple(found)
