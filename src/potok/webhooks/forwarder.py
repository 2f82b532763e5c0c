"""The forwarder: claims due deliveries from the outbox, sends each to its service and/or
publishes it on the bus, and records the outcome (delivered, retry later, dead-letter).

One loop per worker claims as many as it has free slots (`delivery.concurrency`); each
claimed delivery is leased, so another worker or instance does not take it while it is
in flight. Outcomes are written in batches (one transaction for many). A delivery that
reached its service but whose outcome was not written before a crash is sent again
after its lease ends: at least once, with the same id (Idempotency-Key) every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson
import structlog

from potok.realtime.bus.base import BusUnavailable
from potok.realtime.events import EVENT_TYPE, make_event
from potok.webhooks.backoff import RetrySchedule
from potok.webhooks.outbox.base import DEAD, DELIVERED, PENDING, Delivery, Outcome
from potok.webhooks.upstream_call import CallFailed, post

if TYPE_CHECKING:
    from potok.realtime.service import Realtime
    from potok.upstream.service import Service
    from potok.webhooks.config import WebhooksConfig
    from potok.webhooks.metrics import WebhookMetrics
    from potok.webhooks.outbox.base import Outbox
    from potok.webhooks.signing import DeliverySigner
    from potok.webhooks.sources import Source

log = structlog.get_logger("potok.webhooks")

HOUSEKEEPING_INTERVAL = 5.0  # depth gauges
PURGE_INTERVAL = 60.0


class Forwarder:
    def __init__(
        self,
        outbox: Outbox,
        metrics: WebhookMetrics,
        realtime: Realtime | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._metrics = metrics
        self._realtime = realtime
        self._clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._outcomes: list[Outcome] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._sources: dict[str, Source] = {}
        self._services: dict[str, Service] = {}
        self._config: WebhooksConfig | None = None
        self._signer: DeliverySigner | None = None
        self._schedule: RetrySchedule | None = None
        self._ordered: tuple[str, ...] = ()

    def configure(
        self,
        config: WebhooksConfig,
        sources: dict[str, Source],
        services: dict[str, Service],
        signer: DeliverySigner | None,
    ) -> None:
        """The current snapshot's sources and services (called on every config load)."""
        delivery = config.delivery
        self._config = config
        self._sources = sources
        self._services = services
        self._signer = signer
        self._ordered = tuple(name for name, s in sources.items() if s.config.ordered)
        self._schedule = RetrySchedule(
            delivery.initial_backoff, delivery.max_backoff, delivery.max_age, delivery.max_attempts
        )
        self._wake.set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._claim_forever()),
            loop.create_task(self._settle_forever()),
            loop.create_task(self._housekeeping_forever()),
        ]

    def wake(self) -> None:
        """Something was stored: look now rather than at the next poll."""
        self._wake.set()

    async def close(self) -> None:
        for task in (*self._tasks, *self._inflight):
            task.cancel()
        for task in (*self._tasks, *self._inflight):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        # Outcomes already known are written; unfinished sends keep their lease and are
        # taken again once it ends.
        with contextlib.suppress(Exception):
            await self._flush_outcomes()

    # Claiming ----------------------------------------------------------------------

    async def _claim_forever(self) -> None:
        while True:
            config = self._config
            assert config is not None
            free = config.delivery.concurrency - len(self._inflight)
            claimed: list[Delivery] = []
            self._wake.clear()
            if free > 0:
                try:
                    claimed = await self._outbox.claim(
                        self.owner,
                        self._clock(),
                        min(free, config.outbox.batch),
                        config.outbox.lease,
                        self._ordered,
                    )
                except Exception as exc:
                    log.warning("outbox claim failed", error=str(exc))
                    await asyncio.sleep(1.0)
                    continue
            loop = asyncio.get_running_loop()
            for delivery in claimed:
                task = loop.create_task(self._deliver(delivery))
                self._inflight.add(task)
                task.add_done_callback(self._finished)
            if claimed and len(claimed) == free:
                continue  # full: more may be due; go on once a slot frees (the wake below)
            if claimed and not self._ordered:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(config.delivery.poll_interval):
                    await self._wake.wait()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()

    # One delivery ------------------------------------------------------------------

    async def _deliver(self, delivery: Delivery) -> None:
        source = self._sources.get(delivery.source)
        try:
            if source is None:
                raise CallFailed("config", f"no source {delivery.source!r} in the config")
            await self._send(source, delivery)
        except CallFailed as exc:
            if exc.kind == "breaker_open":
                self._held_back(delivery, str(exc), exc.retry_after)
            else:
                self._failed(delivery, str(exc))
            return
        except BusUnavailable as exc:
            self._failed(delivery, str(exc) or "the event bus is unavailable")
            return
        self._metrics.attempts.inc((delivery.source, "delivered"))
        self._metrics.delivery_seconds.observe(
            (delivery.source,), max(0.0, self._clock() - delivery.received_at)
        )
        self._record(Outcome(delivery.id, DELIVERED))

    async def _send(self, source: Source, delivery: Delivery) -> None:
        config = source.config
        if config.publish:
            await self._publish(source, delivery)
        if config.service is None:
            return
        service = self._services.get(config.service)
        if service is None:
            raise CallFailed("config", f"no service {config.service!r} in the config")
        assert self._config is not None
        status = await post(
            service,
            source.upstream_path,
            self._headers(source, delivery),
            delivery.body,
            within=self._config.delivery.timeout,
        )
        if not 200 <= status < 300:
            raise CallFailed("status", f"{service.name} answered {status}")

    def _headers(self, source: Source, delivery: Delivery) -> list[tuple[bytes, bytes]]:
        headers = [(k.encode(), v.encode("latin-1")) for k, v in delivery.headers]
        headers += (
            (b"Idempotency-Key", delivery.id.encode()),
            (b"Potok-Webhook-Source", source.name.encode()),
            (b"Potok-Webhook-Attempt", b"%d" % (delivery.attempts + 1)),
        )
        if self._signer is not None:
            headers += self._signer.headers(delivery.id, delivery.body, self._clock())
        return headers

    async def _publish(self, source: Source, delivery: Delivery) -> None:
        realtime = self._realtime
        if realtime is None:
            raise CallFailed("config", "publish needs the realtime section")
        event_type = delivery.event_type if EVENT_TYPE.match(delivery.event_type) else "webhook"
        try:
            body = orjson.loads(delivery.body)
        except orjson.JSONDecodeError:
            body = delivery.body.decode("utf-8", "replace")
        data = {"source": source.name, "received_at": delivery.received_at, "body": body}
        # The delivery id is the event id: a publish repeated after a failed forward is
        # dropped by subscribers' de-duplication window.
        event = make_event(source.channel, event_type, data, delivery.id)
        await realtime.publish(event, "webhook")

    def _failed(self, delivery: Delivery, error: str) -> None:
        schedule = self._schedule
        assert schedule is not None
        attempts = delivery.attempts + 1
        now = self._clock()
        next_at = schedule.next_at(attempts, delivery.received_at, now)
        if next_at is None:
            self._metrics.attempts.inc((delivery.source, "dead"))
            self._metrics.dead.inc((delivery.source,))
            log.warning("webhook dead-lettered", id=delivery.id, source=delivery.source,
                        attempts=attempts, error=error)  # fmt: skip
            self._record(Outcome(delivery.id, DEAD, error[:500]))
            return
        self._metrics.attempts.inc((delivery.source, "failed"))
        self._record(Outcome(delivery.id, PENDING, error[:500], next_at))

    def _held_back(self, delivery: Delivery, error: str, wait: float) -> None:
        """The service's breaker is open: nothing was sent, so no attempt is spent; tried
        again when the breaker lets a probe through (or dead once past max_age)."""
        schedule = self._schedule
        assert schedule is not None
        now = self._clock()
        next_at = now + max(wait, schedule.delay(max(1, delivery.attempts)))
        if next_at > delivery.received_at + schedule.max_age:
            self._failed(delivery, error)
            return
        self._metrics.attempts.inc((delivery.source, "held_back"))
        self._record(Outcome(delivery.id, PENDING, error[:500], next_at, attempted=False))

    # Outcomes, written in batches ----------------------------------------------------

    def _record(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        self._settled.set()

    async def _settle_forever(self) -> None:
        while True:
            await self._settled.wait()
            self._settled.clear()
            try:
                await self._flush_outcomes()
            except Exception as exc:
                # Kept for the next round; their leases hold them meanwhile.
                log.warning("writing delivery outcomes failed", error=str(exc))
                await asyncio.sleep(1.0)
                self._settled.set()

    async def _flush_outcomes(self) -> None:
        outcomes, self._outcomes = self._outcomes, []
        if not outcomes:
            return
        try:
            await self._outbox.settle(self.owner, outcomes, self._clock())
        except Exception:
            self._outcomes = outcomes + self._outcomes
            raise
        self._wake.set()  # an ordered source's next delivery may be due now

    # Housekeeping ------------------------------------------------------------------

    async def _housekeeping_forever(self) -> None:
        last_purge = 0.0
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            config = self._config
            if config is None:
                continue
            try:
                await self._measure_depth()
                now = self._clock()
                if now - last_purge >= PURGE_INTERVAL:
                    last_purge = now
                    await self._outbox.purge(DELIVERED, now - config.outbox.retention)
            except Exception as exc:
                log.warning("outbox housekeeping failed", error=str(exc))

    async def _measure_depth(self) -> None:
        depths = {d.source: d for d in await self._outbox.depth()}
        now = self._clock()
        for name in self._sources:
            depth = depths.get(name)
            self._metrics.depth.set((name,), depth.pending if depth else 0)
            oldest = depth.oldest if depth is not None else None
            self._metrics.oldest.set((name,), max(0.0, now - oldest) if oldest else 0.0)
