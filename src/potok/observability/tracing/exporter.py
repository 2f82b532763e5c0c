"""Finished traces to the collector: a bounded queue, a thread, OTLP/HTTP batches.

The loop only appends (trace id, server span, children) to a deque; the thread
wakes every `batch.interval` (or when a batch is full), converts the records to the
SDK's `ReadableSpan`s and calls the SDK's `OTLPSpanExporter`, which encodes the
protobuf and posts it (with its own retries). A full queue drops new traces and
counts them: a collector that is down never slows a request or grows memory.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections import deque
from typing import TYPE_CHECKING

import structlog
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

if TYPE_CHECKING:
    from potok.observability.tracing.config import TracingConfig
    from potok.observability.tracing.trace import SpanRecord

log = structlog.get_logger("potok.tracing")

QueuedTrace = tuple[str, "SpanRecord", list["SpanRecord"]]


class TraceExporter:
    """One per worker (a shared resource): survives reloads that keep its settings."""

    def __init__(self, config: TracingConfig) -> None:
        self._config = config
        self._queue: deque[QueuedTrace] = deque()
        self._max_queue = config.batch.max_queue
        self._batch = config.batch.max_spans
        self._wake = threading.Event()
        self._stopping = False
        self.dropped_traces = 0
        self.exported_spans = 0
        self.failed_spans = 0
        self._thread = threading.Thread(target=self._run, name="potok-tracing", daemon=True)
        self._thread.start()

    def submit(self, trace_id: str, server: SpanRecord, children: list[SpanRecord]) -> None:
        queue = self._queue
        if len(queue) >= self._max_queue:
            self.dropped_traces += 1
            return
        queue.append((trace_id, server, children))
        if len(queue) == self._batch:
            self._wake.set()

    async def close(self) -> None:
        """Send what is queued and stop the thread (at shutdown)."""
        self._stopping = True
        self._wake.set()
        await asyncio.to_thread(self._thread.join, self._config.timeout + 1)

    # The thread --------------------------------------------------------------------

    def _run(self) -> None:
        exporter, resource, scope = self._sdk()
        interval = self._config.batch.interval
        while True:
            self._wake.wait(interval)
            self._wake.clear()
            while self._queue:
                self._export(exporter, resource, scope)
            if self._stopping:
                exporter.shutdown()  # type: ignore[no-untyped-call]
                return

    def _sdk(self) -> tuple[OTLPSpanExporter, Resource, InstrumentationScope]:
        config = self._config
        exporter = OTLPSpanExporter(
            endpoint=config.endpoint, headers=dict(config.headers), timeout=config.timeout
        )
        resource = Resource.create(
            {
                "service.name": config.service_name,
                "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
            }
        )
        return exporter, resource, InstrumentationScope("potok")

    def _export(
        self, exporter: OTLPSpanExporter, resource: Resource, scope: InstrumentationScope
    ) -> None:
        spans: list[ReadableSpan] = []
        queue = self._queue
        while queue and len(spans) < self._batch:
            trace_id, server, children = queue.popleft()
            tid = int(trace_id, 16)
            spans.append(_readable(tid, server, resource, scope, remote_parent=True))
            spans.extend(
                _readable(tid, child, resource, scope, remote_parent=False) for child in children
            )
        try:
            result = exporter.export(spans)
        except Exception as exc:  # the SDK logs and returns FAILURE; be sure anyway
            log.warning("trace export failed", error=str(exc), spans=len(spans))
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.exported_spans += len(spans)
        else:
            self.failed_spans += len(spans)


def _readable(
    trace_id: int,
    record: SpanRecord,
    resource: Resource,
    scope: InstrumentationScope,
    *,
    remote_parent: bool,
) -> ReadableSpan:
    name, kind, span_id, parent_id, start, end, attributes, error = record
    flags = TraceFlags(TraceFlags.SAMPLED)
    context = SpanContext(trace_id, int(span_id, 16), is_remote=False, trace_flags=flags)
    parent = (
        SpanContext(trace_id, int(parent_id, 16), is_remote=remote_parent, trace_flags=flags)
        if parent_id is not None
        else None
    )
    status = Status(StatusCode.ERROR, error) if error is not None else Status(StatusCode.UNSET)
    return ReadableSpan(
        name=name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=attributes,
        kind=SpanKind(kind),
        status=status,
        start_time=start,
        end_time=end,
        instrumentation_scope=scope,
    )
