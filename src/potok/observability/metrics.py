"""Metrics: cheap in-process counters on the hot path, merged across workers at scrape time.

Why not prometheus_client's own values on the hot path: a labelled histogram
observe there walks its buckets in Python under a lock (and in multiprocess
mode writes to an mmap per value), several microseconds per request. Here a
request costs a dict update and a bisect; each worker writes a snapshot file
once a second (off the event loop), and a scrape merges the live local values
with the other workers' snapshots through a prometheus_client custom collector.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from potok.grpc.status import NAMES as GRPC_NAMES

if TYPE_CHECKING:
    from potok.exchange import Exchange

Labels = tuple[str, ...]
# A (method, route, status)'s request counter cell and its duration histogram row.
_Series = tuple[list[float], list[float]]

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class Counter:
    __slots__ = ("cells", "help", "labelnames", "name", "values")

    def __init__(self, name: str, help: str, labelnames: Labels) -> None:
        self.name, self.help, self.labelnames = name, help, labelnames
        self.values: dict[Labels, float] = {}
        self.cells: dict[Labels, list[float]] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def set(self, labels: Labels, value: float) -> None:
        """For a total kept elsewhere (the kernel's CPU time): the value, not an increment."""
        self.values[labels] = value

    def cell(self, labels: Labels) -> list[float]:
        """A one-item list the hot path adds to (`cell[0] += 1`) for labels known in
        advance: no call and no hashing of the label tuple per increment. The same
        labels always get the same cell, so a rebuilt policy counts on where it was."""
        found = self.cells.get(labels)
        if found is None:
            found = self.cells[labels] = [0.0]
        return found

    def current(self) -> dict[Labels, float]:
        if not self.cells:
            return self.values
        merged = dict(self.values)
        for labels, cell in self.cells.items():
            merged[labels] = merged.get(labels, 0.0) + cell[0]
        return merged


class Gauge:
    """A value per worker; the scrape sums the live workers' values, or, for states
    that do not add up (a breaker's 0/1/2), shows each worker's with a `worker` label."""

    __slots__ = ("function", "help", "labelnames", "name", "per_worker", "values")

    def __init__(
        self, name: str, help: str, labelnames: Labels = (), per_worker: bool = False
    ) -> None:
        self.name, self.help, self.labelnames = name, help, labelnames
        self.per_worker = per_worker
        self.values: dict[Labels, float] = {}
        self.function: Callable[[], float] | None = None

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value

    def remove(self, labels: Labels) -> None:
        """Forget a label set that no longer exists (a target DNS discovery dropped)."""
        self.values.pop(labels, None)

    def current(self) -> dict[Labels, float]:
        if self.function is not None:
            return {(): float(self.function())}
        return dict(self.values)


class Histogram:
    __slots__ = ("bounds", "counts", "help", "labelnames", "name", "rows", "sums")

    def __init__(self, name: str, help: str, labelnames: Labels, bounds: tuple[float, ...]) -> None:
        self.name, self.help, self.labelnames = name, help, labelnames
        self.bounds = bounds
        self.counts: dict[Labels, list[int]] = {}  # per bucket (non-cumulative), last is +Inf
        self.sums: dict[Labels, float] = {}
        self.rows: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        counts = self.counts.get(labels)
        if counts is None:
            counts = self.counts[labels] = [0] * (len(self.bounds) + 1)
            self.sums[labels] = 0.0
        counts[bisect_left(self.bounds, value)] += 1
        self.sums[labels] += value

    def row(self, labels: Labels) -> list[float]:
        """For labels known in advance, what Counter.cell is for a counter: a list of
        the per-bucket counts (+Inf last) and then the sum, that the hot path adds to
        itself (`row[bisect_left(bounds, value)] += 1; row[-1] += value`)."""
        found = self.rows.get(labels)
        if found is None:
            found = self.rows[labels] = [0] * (len(self.bounds) + 1) + [0.0]
        return found

    def current(self) -> tuple[dict[Labels, list[int]], dict[Labels, float]]:
        """The counts and sums, rows included."""
        if not self.rows:
            return self.counts, self.sums
        counts = {labels: list(values) for labels, values in self.counts.items()}
        sums = dict(self.sums)
        for labels, row in self.rows.items():
            merged = counts.setdefault(labels, [0] * (len(self.bounds) + 1))
            for index in range(len(merged)):
                merged[index] += int(row[index])
            sums[labels] = sums.get(labels, 0.0) + row[-1]
        return counts, sums


class MetricsRegistry:
    """This worker's metrics, and how to snapshot and merge them."""

    def __init__(self, worker_id: str = "0") -> None:
        self.worker_id = worker_id
        self.counters: dict[str, Counter] = {}
        self.gauges: dict[str, Gauge] = {}
        self.histograms: dict[str, Histogram] = {}
        # Called before every snapshot: values read from elsewhere (ProcessMetrics).
        self.refreshers: list[Callable[[], None]] = []

    def counter(self, name: str, help: str, labelnames: Labels = ()) -> Counter:
        return self.counters.setdefault(name, Counter(name, help, labelnames))

    def gauge(
        self, name: str, help: str, labelnames: Labels = (), per_worker: bool = False
    ) -> Gauge:
        return self.gauges.setdefault(name, Gauge(name, help, labelnames, per_worker))

    def histogram(
        self, name: str, help: str, labelnames: Labels, bounds: tuple[float, ...] = LATENCY_BUCKETS
    ) -> Histogram:
        return self.histograms.setdefault(name, Histogram(name, help, labelnames, bounds))

    def snapshot(self) -> dict[str, Any]:
        """Plain data (JSON-able) of every value."""
        for refresh in self.refreshers:
            refresh()
        return {
            "time": time.time(),
            "worker": self.worker_id,
            "counters": {n: _items(c.current()) for n, c in self.counters.items()},
            "gauges": {n: _items(g.current()) for n, g in self.gauges.items()},
            "histograms": {n: _series(h) for n, h in self.histograms.items()},
        }


def _items(values: dict[Labels, float]) -> list[list[Any]]:
    return [[list(k), v] for k, v in values.items()]


def _series(histogram: Histogram) -> list[list[Any]]:
    counts, sums = histogram.current()
    return [[list(k), list(v), sums[k]] for k, v in counts.items()]


class SnapshotStore:
    """One file per worker in a directory every worker of a gateway shares."""

    # A gauge from a worker that has not written for this long is a dead worker's.
    STALE_AFTER = 5.0

    def __init__(self, directory: Path, worker_id: str) -> None:
        self.directory = directory
        self.path = directory / f"worker-{worker_id}.json"

    def write(self, snapshot: dict[str, Any]) -> None:
        temp = self.path.with_suffix(".tmp")
        temp.write_bytes(orjson.dumps(snapshot))
        os.replace(temp, self.path)

    def others(self) -> Iterator[dict[str, Any]]:
        for path in self.directory.glob("worker-*.json"):
            if path == self.path:
                continue
            try:
                yield orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # a worker replacing its file right now; next scrape sees it


class MergedCollector(Collector):
    """prometheus_client collector: this worker's live values plus the others' snapshots."""

    def __init__(self, registry: MetricsRegistry, store: SnapshotStore | None) -> None:
        self.registry = registry
        self.store = store

    def collect(self) -> Iterable[Any]:
        snapshots = [self.registry.snapshot()]
        if self.store is not None:
            now = time.time()
            for other in self.store.others():
                stale = now - other.get("time", 0) > SnapshotStore.STALE_AFTER
                # A dead worker's counters still count; its gauges do not.
                snapshots.append({**other, "gauges": {}} if stale else other)
        yield from self._counters(snapshots)
        yield from self._gauges(snapshots)
        yield from self._histograms(snapshots)

    def _counters(self, snapshots: list[dict[str, Any]]) -> Iterator[Any]:
        for name, counter in self.registry.counters.items():
            total: dict[Labels, float] = {}
            for snap in snapshots:
                for labels, value in snap["counters"].get(name, ()):
                    key = tuple(labels)
                    total[key] = total.get(key, 0.0) + value
            family = CounterMetricFamily(
                name.removesuffix("_total"), counter.help, labels=counter.labelnames
            )
            for labels, value in sorted(total.items()):
                family.add_metric(list(labels), value)
            yield family

    def _gauges(self, snapshots: list[dict[str, Any]]) -> Iterator[Any]:
        for name, gauge in self.registry.gauges.items():
            total: dict[Labels, float] = {}
            for snap in snapshots:
                worker = str(snap.get("worker", "0"))
                for labels, value in snap["gauges"].get(name, ()):
                    key = (*labels, worker) if gauge.per_worker else tuple(labels)
                    total[key] = total.get(key, 0.0) + value
            labelnames = (*gauge.labelnames, "worker") if gauge.per_worker else gauge.labelnames
            family = GaugeMetricFamily(name, gauge.help, labels=labelnames)
            for labels, value in sorted(total.items()):
                family.add_metric(list(labels), value)
            yield family

    def _histograms(self, snapshots: list[dict[str, Any]]) -> Iterator[Any]:
        for name, histogram in self.registry.histograms.items():
            counts: dict[Labels, list[int]] = {}
            sums: dict[Labels, float] = {}
            for snap in snapshots:
                for labels, bucket_counts, total in snap["histograms"].get(name, ()):
                    key = tuple(labels)
                    merged = counts.setdefault(key, [0] * len(bucket_counts))
                    for index, count in enumerate(bucket_counts):
                        merged[index] += count
                    sums[key] = sums.get(key, 0.0) + total
            family = HistogramMetricFamily(name, histogram.help, labels=histogram.labelnames)
            bounds = [*(repr(b) for b in histogram.bounds), "+Inf"]
            for labels, bucket_counts in sorted(counts.items()):
                cumulative, running = [], 0
                for bound, count in zip(bounds, bucket_counts, strict=True):
                    running += count
                    cumulative.append((bound, running))
                family.add_metric(list(labels), cumulative, sums[labels])
            yield family


class GatewayMetrics:
    """The metrics every request touches, with the labels bounded by config (route names)."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self.registry = registry
        self.requests = registry.counter(
            "http_requests_total",
            "Requests answered, by method, route and status.",
            ("method", "route", "status"),
        )
        self.duration = registry.histogram(
            "http_request_duration_seconds",
            "Time from request head to response end.",
            ("method", "route"),
        )
        self.upstream_duration = registry.histogram(
            "upstream_request_duration_seconds",
            "Time from request sent upstream to response end.",
            ("service",),
        )
        self.in_flight = registry.gauge("http_requests_in_flight", "Requests being answered now.")
        self.inflight_count = 0
        self.in_flight.function = lambda: self.inflight_count
        self.refused = registry.counter(
            "http_requests_refused_total",
            "Requests refused before routing (malformed, too large).",
            ("status",),
        )
        self.grpc_calls = registry.counter(
            "grpc_calls_total",
            "gRPC calls on gRPC routes, by route and gRPC status code (OK, UNAVAILABLE, ...): "
            "the upstream's, or the gateway's own answer's.",
            ("route", "grpc_code"),
        )
        # Per (method, route, status): its request counter cell and duration row (the
        # same row for every status). Per service: its upstream duration row.
        self._series: dict[tuple[bytes, str, int], _Series] = {}
        self._upstream_rows: dict[str, list[float]] = {}
        self._bounds = self.duration.bounds
        self._upstream_bounds = self.upstream_duration.bounds

    def observe(self, exchange: Exchange, seconds: float) -> None:
        """A finished request: counted by method, route and status, its duration and its
        upstream's observed. The counter cell and the histogram rows are found by one
        dict lookup, not by label tuples built, hashed and looked up in each metric."""
        series = self._series.get((exchange.method, exchange.route_name, exchange.status))
        if series is None:
            series = self._new_series(exchange)
        cell, duration = series
        cell[0] += 1
        duration[bisect_left(self._bounds, seconds)] += 1
        duration[-1] += seconds
        upstream = exchange.upstream_duration
        if upstream is not None:
            row = self._upstream_rows.get(exchange.service_name)
            if row is None:
                row = self._upstream_rows[exchange.service_name] = self.upstream_duration.row(
                    (exchange.service_name,)
                )
            row[bisect_left(self._upstream_bounds, upstream)] += 1
            row[-1] += upstream

    def observe_grpc(self, route: str, code: int) -> None:
        """A finished gRPC call's status (0-16, or a number an upstream made up)."""
        # An upstream's code outside 0-16 is UNKNOWN (as a client reads it): bounded labels.
        label = GRPC_NAMES[code] if 0 <= code < len(GRPC_NAMES) else "UNKNOWN"
        self.grpc_calls.inc((route or "unmatched", label))

    def _new_series(self, exchange: Exchange) -> _Series:
        method, route, status = exchange.method, exchange.route_name, exchange.status
        labels = (method.decode("latin-1"), route or "unmatched")
        # Methods are llhttp's fixed list, routes the config's, statuses three digits:
        # a bounded set of keys, as bounded as the metrics' own label sets.
        series = self._series[(method, route, status)] = (
            self.requests.cell((*labels, str(status))),
            self.duration.row(labels),
        )
        return series


class ProcessMetrics:
    """This worker process's CPU time, memory, open descriptors and garbage collections.

    Each worker reports its own, labelled `worker`, read when a snapshot is taken (once
    a second, and at a scrape): prometheus_client's default process collector would
    describe only the process that answers the scrape, whichever worker that is.
    """

    def __init__(self, registry: MetricsRegistry) -> None:
        self._labels = (registry.worker_id,)
        self._collector = ProcessCollector(registry=None)
        self._cpu = registry.counter(
            "process_cpu_seconds_total", "User and system CPU time, per worker.", ("worker",)
        )
        self._gauges = {
            f"process_{name}": registry.gauge(f"process_{name}", text, per_worker=True)
            for name, text in (
                ("resident_memory_bytes", "Resident memory (RSS), per worker."),
                ("virtual_memory_bytes", "Virtual memory size, per worker."),
                ("open_fds", "Open file descriptors, per worker."),
                ("max_fds", "The worker's limit on open file descriptors."),
                ("start_time_seconds", "When the worker started, in seconds since the epoch."),
            )
        }
        self._gc = {
            key: registry.counter(f"python_gc_{name}_total", text, ("generation", "worker"))
            for key, name, text in (
                ("collections", "collections", "Garbage collections, per generation and worker."),
                ("collected", "objects_collected", "Objects the collector freed."),
                ("uncollectable", "objects_uncollectable", "Objects the collector could not free."),
            )
        }
        registry.refreshers.append(self.refresh)

    def refresh(self) -> None:
        labels = self._labels
        for family in self._collector.collect():
            for sample in family.samples:
                if sample.name == "process_cpu_seconds_total":
                    self._cpu.set(labels, sample.value)
                elif sample.name in self._gauges:
                    self._gauges[sample.name].set((), sample.value)
        for generation, stats in enumerate(gc.get_stats()):
            for key, counter in self._gc.items():
                counter.set((str(generation), *labels), float(stats[key]))


def build_prometheus_registry(
    metrics: MetricsRegistry, store: SnapshotStore | None
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MergedCollector(metrics, store))
    return registry


async def write_snapshots(
    metrics: MetricsRegistry, store: SnapshotStore, interval: float = 1.0
) -> None:
    """At once, then every `interval`, hand this worker's snapshot to a thread to write
    (at once: a scrape answered by another worker sees a new worker from its start)."""
    loop = asyncio.get_running_loop()
    while True:
        await loop.run_in_executor(None, store.write, metrics.snapshot())
        await asyncio.sleep(interval)
