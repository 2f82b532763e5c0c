"""The OTLP/HTTP exporter (observability/tracing/exporter.py) against a real local
receiver that decodes the protobuf: batching by size and by time, the OTLP/HTTP retry
rules (Retry-After honoured), drops counted in the metrics, and a collector that is
down costing the loop nothing and growing nothing."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from potok.config.models import GatewayConfig
from potok.observability.metrics import MetricsRegistry
from potok.observability.tracing import otlp
from potok.observability.tracing.config import TracingConfig
from potok.observability.tracing.exporter import TraceExporter
from tests.support.net import free_port
from tests.support.otlp import OtlpReceiver

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    yield server
    server.stop()


def exporter_for(
    endpoint: str, metrics: MetricsRegistry | None = None, **config: Any
) -> TraceExporter:
    batch = config.pop("batch", {})
    tracing = TracingConfig.model_validate(
        {"enabled": True, "endpoint": endpoint, "batch": batch, **config}
    )
    return TraceExporter(tracing, metrics)


def trace(number: int, spans: int = 1) -> list[bytes]:
    """A trace's encoded spans: span ids number*16 + i, names 'n<number>'."""
    return [
        otlp.span(TRACE, f"{number * 16 + i + 1:016x}", None, f"n{number}", otlp.SERVER, 1, 2, {})
        for i in range(spans)
    ]


def counter(metrics: MetricsRegistry, name: str, labels: tuple[str, ...] = ()) -> float:
    return metrics.counters[name].current().get(labels, 0.0)


async def eventually(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_full_batch_goes_at_once_and_a_partial_one_after_the_interval(receiver):
    metrics = MetricsRegistry()
    exporter = exporter_for(receiver.endpoint, metrics, batch={"max_spans": 4, "interval": "600ms"})
    started = time.monotonic()
    for number in range(4):
        exporter.submit(trace(number))
    await eventually(lambda: len(receiver.spans) == 4)
    assert time.monotonic() - started < 0.5  # size-bounded: not waiting for the interval
    assert receiver.batch_sizes == [4]
    exporter.submit(trace(10, spans=2))
    submitted = time.monotonic()
    await eventually(lambda: len(receiver.spans) == 6)
    assert time.monotonic() - submitted >= 0.5  # time-bounded
    assert receiver.batch_sizes == [4, 2]
    assert [s.name for s in receiver.spans] == ["n0", "n1", "n2", "n3", "n10", "n10"]
    await eventually(lambda: counter(metrics, "tracing_spans_exported_total") == 6)
    assert len(receiver.connections) == 1  # one kept-alive connection
    assert receiver.content_types == ["application/x-protobuf"] * 2
    assert receiver.spans[0].resource["service.name"] == "potok"
    await exporter.close()


async def test_a_backlog_goes_in_full_batches_back_to_back(receiver):
    exporter = exporter_for(receiver.endpoint, batch={"max_spans": 10, "interval": "10s"})
    for number in range(25):
        exporter.submit(trace(number))
    await eventually(lambda: len(receiver.spans) == 20)
    assert receiver.batch_sizes == [10, 10]  # the last 5 wait for the interval ...
    await exporter.close()  # ... or for shutdown, which sends them
    assert receiver.batch_sizes == [10, 10, 5]
    assert exporter.exported_spans == 25


async def test_503_with_retry_after_is_retried_after_that_delay(receiver):
    receiver.replies.append((503, {"Retry-After": "1"}))
    metrics = MetricsRegistry()
    exporter = exporter_for(receiver.endpoint, metrics, batch={"max_spans": 2})
    exporter.submit(trace(1, spans=2))
    await eventually(lambda: len(receiver.spans) == 2)
    first, second = receiver.arrivals
    assert 0.9 <= second - first < 3.0
    assert receiver.batch_sizes == [2]  # the 503 body was not counted: one copy arrived
    await eventually(lambda: counter(metrics, "tracing_spans_exported_total") == 2)
    assert counter(metrics, "tracing_spans_dropped_total", ("export_failed",)) == 0
    await exporter.close()


async def test_retry_after_as_an_http_date(receiver):
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 2))
    receiver.replies.append((429, {"Retry-After": when}))
    exporter = exporter_for(receiver.endpoint, batch={"max_spans": 1})
    exporter.submit(trace(1))
    await eventually(lambda: len(receiver.spans) == 1)
    first, second = receiver.arrivals
    assert 0.9 <= second - first < 4.0  # a whole-second date: between 1 and 2 s away
    await exporter.close()


async def test_429_502_504_without_retry_after_back_off_and_retry(receiver):
    for status in (429, 502, 504):
        receiver.replies.append((status, {}))
    exporter = exporter_for(receiver.endpoint, batch={"max_spans": 1})
    exporter.submit(trace(1))
    await eventually(lambda: len(receiver.spans) == 1)
    gaps = [b - a for a, b in zip(receiver.arrivals, receiver.arrivals[1:], strict=False)]
    assert len(gaps) == 3
    # Exponential backoff, jittered into [50 %, 100 %] of 0.5 s, 1 s, 2 s.
    assert 0.2 <= gaps[0] <= 0.7 and 0.45 <= gaps[1] <= 1.2 and 0.95 <= gaps[2] <= 2.3
    await eventually(lambda: exporter.exported_spans == 1)
    await exporter.close()


async def test_a_status_that_is_not_retryable_fails_the_batch_once(receiver):
    receiver.replies.append((400, {}))
    metrics = MetricsRegistry()
    exporter = exporter_for(receiver.endpoint, metrics, batch={"max_spans": 3})
    exporter.submit(trace(1, spans=3))
    await eventually(
        lambda: counter(metrics, "tracing_spans_dropped_total", ("export_failed",)) == 3
    )
    await asyncio.sleep(0.7)
    assert len(receiver.arrivals) == 1 and receiver.spans == []
    exporter.submit(trace(2))  # the next batch is not held up
    await exporter.close()
    assert [s.name for s in receiver.spans] == ["n2"]


async def test_a_full_queue_drops_whole_traces_and_counts_them_in_the_metrics():
    metrics = MetricsRegistry()
    dead = f"http://127.0.0.1:{free_port()}/v1/traces"
    exporter = exporter_for(
        dead, metrics, retry_for="60s", batch={"max_spans": 100, "max_queue": 10, "interval": "5s"}
    )
    for number in range(4):
        exporter.submit(trace(number, spans=3))  # 3 fit (9 spans), the 4th does not
    assert exporter.queued_spans == 9
    assert counter(metrics, "tracing_spans_dropped_total", ("queue_full",)) == 3
    exporter.submit(trace(9))  # the 10th span still fits
    assert exporter.queued_spans == 10
    registry_text = metrics.snapshot()
    assert "tracing_spans_dropped_total" in str(registry_text)
    await exporter.close()


async def test_a_collector_that_is_down_neither_blocks_nor_grows_memory():
    metrics = MetricsRegistry()
    dead = f"http://127.0.0.1:{free_port()}/v1/traces"
    exporter = exporter_for(
        dead,
        metrics,
        timeout="200ms",
        retry_for="1s",
        batch={"max_spans": 50, "max_queue": 200, "interval": "10ms"},
    )
    tracemalloc.start()
    try:
        submitting = 0.0
        baseline = 0
        for round_ in range(30):
            for number in range(100):
                spans = trace(number, spans=2)
                before = time.perf_counter()
                exporter.submit(spans)
                submitting += time.perf_counter() - before
            await asyncio.sleep(0.05)  # the loop runs the exporter's connects and backoffs
            if round_ == 5:
                baseline = tracemalloc.get_traced_memory()[0]
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert exporter.queued_spans <= 200
    # A submit never waits for the network: 3,000 take a few ms (1 s: a loaded machine).
    assert submitting < 1.0
    assert grown < 200_000, grown  # bounded by max_queue, not by the spans offered
    dropped = counter(metrics, "tracing_spans_dropped_total", ("queue_full",))
    assert dropped > 5000
    await eventually(lambda: exporter.failed_spans > 0, within=5)  # gave up after retry_for
    started = time.monotonic()
    await exporter.close()
    assert time.monotonic() - started < 2


async def test_gzip_and_auth_headers(receiver):
    exporter = exporter_for(
        receiver.endpoint,
        compression="gzip",
        headers={"Authorization": "Bearer s3cret", "X-Scope-OrgID": "team-a"},
        batch={"max_spans": 2},
    )
    exporter.submit(trace(1, spans=2))
    await eventually(lambda: len(receiver.spans) == 2)
    [headers] = receiver.headers
    assert headers["content-encoding"] == "gzip"
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["x-scope-orgid"] == "team-a"
    assert headers["content-type"] == "application/x-protobuf"
    await exporter.close()


async def test_a_collector_that_closes_idle_connections_costs_no_batch(receiver):
    receiver.close_silently = True
    exporter = exporter_for(receiver.endpoint, batch={"max_spans": 1})
    for number in range(3):
        exporter.submit(trace(number))
        await eventually(lambda: exporter.exported_spans == number + 1)  # noqa: B023
    assert exporter.failed_spans == 0 and exporter.exported_spans == 3
    assert len(receiver.connections) == 3  # reconnected, no backoff, nothing lost
    await exporter.close()


def test_headers_that_would_split_the_request_are_refused():
    with pytest.raises(ValueError, match=r"tracing\.headers"):
        GatewayConfig.model_validate({"tracing": {"headers": {"X-A": "ok\r\nX-Injected: 1"}}})
