"""In-process metrics, worker snapshots, and the merged Prometheus exposition."""

from __future__ import annotations

import time

import orjson
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from potok.exchange import Exchange
from potok.observability.metrics import (
    LATENCY_BUCKETS,
    GatewayMetrics,
    MergedCollector,
    MetricsRegistry,
    SnapshotStore,
    build_prometheus_registry,
)


def exposition(registry: MetricsRegistry, store: SnapshotStore | None = None) -> str:
    return generate_latest(build_prometheus_registry(registry, store)).decode()


def samples(registry: MetricsRegistry, store: SnapshotStore | None = None) -> dict:
    """{(sample name, sorted label items): value} from the text exposition."""
    out = {}
    for family in text_string_to_metric_families(exposition(registry, store)):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def gateway_like() -> MetricsRegistry:
    """A counter, a gauge and a histogram (buckets 0.1 and 1.0), as every worker has them."""
    registry = MetricsRegistry()
    registry.counter("requests_total", "Requests.", ("status",))
    registry.gauge("in_flight", "In flight.")
    registry.histogram("latency_seconds", "Latency.", ("route",), (0.1, 1.0))
    return registry


def worker(store_dir, worker_id: str) -> tuple[MetricsRegistry, SnapshotStore]:
    return gateway_like(), SnapshotStore(store_dir, worker_id)


# The registry ----------------------------------------------------------------------------


def test_counter_adds_per_label_set():
    counter = MetricsRegistry().counter("c_total", "C.", ("method",))
    counter.inc(("GET",))
    counter.inc(("GET",), 2.5)
    counter.inc(("POST",))
    assert counter.values == {("GET",): 3.5, ("POST",): 1.0}


def test_the_registry_returns_the_same_metric_for_the_same_name():
    registry = MetricsRegistry()
    assert registry.counter("a_total", "A.") is registry.counter("a_total", "A.")
    assert registry.gauge("g", "G.") is registry.gauge("g", "G.")
    assert registry.histogram("h", "H.", ()) is registry.histogram("h", "H.", ())


def test_gauge_set_and_function():
    gauge = MetricsRegistry().gauge("g", "G.", ("pool",))
    gauge.set(("a",), 3)
    gauge.set(("a",), 5)
    assert gauge.current() == {("a",): 5}
    value = {"now": 7}
    gauge.function = lambda: value["now"]
    assert gauge.current() == {(): 7.0}


@pytest.mark.parametrize(
    ("value", "bucket"),
    [(0.0, 0), (0.05, 0), (0.1, 0), (0.10001, 1), (1.0, 1), (1.5, 2), (1e9, 2)],
)
def test_histogram_bucket_is_the_first_bound_not_below_the_value(value, bucket):
    histogram = MetricsRegistry().histogram("h", "H.", (), (0.1, 1.0))
    histogram.observe((), value)
    expected = [0, 0, 0]
    expected[bucket] = 1
    assert histogram.counts[()] == expected
    assert histogram.sums[()] == value


def test_histogram_default_buckets():
    histogram = MetricsRegistry().histogram("h", "H.", ())
    assert histogram.bounds == LATENCY_BUCKETS
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


def test_snapshot_is_plain_json():
    registry = gateway_like()
    registry.counters["requests_total"].inc(("200",), 2)
    registry.gauges["in_flight"].set((), 4)
    registry.histograms["latency_seconds"].observe(("r",), 0.5)
    snapshot = orjson.loads(orjson.dumps(registry.snapshot()))
    assert snapshot["counters"] == {"requests_total": [[["200"], 2.0]]}
    assert snapshot["gauges"] == {"in_flight": [[[], 4]]}
    assert snapshot["histograms"] == {"latency_seconds": [[["r"], [0, 1, 0], 0.5]]}
    assert abs(snapshot["time"] - time.time()) < 5


# Prometheus text ------------------------------------------------------------------------


def test_exposition_of_one_worker():
    registry = gateway_like()
    registry.counters["requests_total"].inc(("200",), 3)
    registry.counters["requests_total"].inc(("500",))
    registry.gauges["in_flight"].set((), 2)
    for value in (0.05, 0.1, 0.5, 3.0):
        registry.histograms["latency_seconds"].observe(("r",), value)
    assert samples(registry) == {
        ("requests_total", (("status", "200"),)): 3.0,
        ("requests_total", (("status", "500"),)): 1.0,
        ("in_flight", ()): 2.0,
        ("latency_seconds_bucket", (("le", "0.1"), ("route", "r"))): 2.0,
        ("latency_seconds_bucket", (("le", "1.0"), ("route", "r"))): 3.0,
        ("latency_seconds_bucket", (("le", "+Inf"), ("route", "r"))): 4.0,
        ("latency_seconds_count", (("route", "r"),)): 4.0,
        ("latency_seconds_sum", (("route", "r"),)): pytest.approx(3.65),
    }


def test_exposition_text_has_help_and_type():
    registry = gateway_like()
    registry.counters["requests_total"].inc(("200",))
    text = exposition(registry)
    assert "# HELP requests_total Requests.\n# TYPE requests_total counter\n" in text
    assert "# TYPE in_flight gauge\n" in text
    assert "# TYPE latency_seconds histogram\n" in text
    assert 'requests_total{status="200"} 1.0\n' in text


def test_an_empty_registry_exposes_nothing():
    assert exposition(MetricsRegistry()) == ""


class _Peer:
    peer_ip = "127.0.0.1"


def _finished(method: bytes, route: str, status: int, upstream: float | None) -> Exchange:
    exchange = Exchange(_Peer(), 0.0)  # type: ignore[arg-type]
    exchange.method, exchange.route_name, exchange.status = method, route, status
    exchange.service_name, exchange.upstream_duration = "api", upstream
    return exchange


def test_gateway_metrics():
    metrics = GatewayMetrics(MetricsRegistry())
    metrics.observe(_finished(b"GET", "users", 200, 0.001), 0.003)
    metrics.observe(_finished(b"GET", "users", 200, None), 0.02)
    metrics.observe(_finished(b"GET", "", 404, None), 0.0001)
    metrics.observe(_finished(b"POST", "users", 503, 0.7), 1.0)
    metrics.refused.inc(("431",))
    metrics.inflight_count = 5
    found = samples(metrics.registry)
    labels = (("method", "GET"), ("route", "users"), ("status", "200"))
    assert found[("http_requests_total", labels)] == 2.0
    assert found[("http_requests_refused_total", (("status", "431"),))] == 1.0
    assert found[("http_requests_in_flight", ())] == 5.0
    duration = (("method", "GET"), ("route", "users"))
    assert found[("http_request_duration_seconds_count", duration)] == 2.0
    assert found[("http_request_duration_seconds_sum", duration)] == pytest.approx(0.023)
    assert found[("http_request_duration_seconds_bucket", (("le", "0.005"), *duration))] == 1.0
    assert found[("http_request_duration_seconds_bucket", (("le", "0.025"), *duration))] == 2.0
    unmatched = (("method", "GET"), ("route", "unmatched"), ("status", "404"))
    assert found[("http_requests_total", unmatched)] == 1.0
    posts = (("method", "POST"), ("route", "users"), ("status", "503"))
    assert found[("http_requests_total", posts)] == 1.0
    upstream = (("service", "api"),)
    assert found[("upstream_request_duration_seconds_count", upstream)] == 2.0
    assert found[("upstream_request_duration_seconds_sum", upstream)] == pytest.approx(0.701)
    assert found[("upstream_request_duration_seconds_bucket", (("le", "0.001"), *upstream))] == 1.0


def test_histogram_rows_and_observations_of_the_same_labels_add_up():
    registry = MetricsRegistry()
    histogram = registry.histogram("latency_seconds", "Latency.", ("route",), (0.1, 1.0))
    histogram.observe(("r",), 0.05)
    row = histogram.row(("r",))
    row[1] += 1  # 0.5: the second bucket
    row[-1] += 0.5
    assert histogram.row(("r",)) is row
    counts, sums = histogram.current()
    assert counts == {("r",): [1, 1, 0]} and sums[("r",)] == pytest.approx(0.55)
    assert histogram.counts[("r",)] == [1, 0, 0]  # observe()'s own, unchanged
    found = samples(registry)
    assert found[("latency_seconds_count", (("route", "r"),))] == 2.0


# Merging workers --------------------------------------------------------------------------


def test_snapshot_store_round_trip(tmp_path):
    registry, store = worker(tmp_path, "a")
    registry.counters["requests_total"].inc(("200",))
    store.write(registry.snapshot())
    assert store.path == tmp_path / "worker-a.json"
    assert not list(tmp_path.glob("*.tmp"))
    _, other = worker(tmp_path, "b")
    [seen] = list(other.others())
    assert seen["counters"] == {"requests_total": [[["200"], 1.0]]}
    assert list(store.others()) == []  # a worker does not read its own file


def test_merged_collector_adds_live_values_and_other_workers(tmp_path):
    live, live_store = worker(tmp_path, "1")
    live_store.write(
        {"time": time.time(), "counters": {}, "gauges": {}, "histograms": {}}
    )  # ignored
    for worker_id, status_count in (("2", 5), ("3", 7)):
        other, store = worker(tmp_path, worker_id)
        other.counters["requests_total"].inc(("200",), status_count)
        other.counters["requests_total"].inc(("404",))
        other.gauges["in_flight"].set((), 1)
        other.histograms["latency_seconds"].observe(("r",), 0.5)
        other.histograms["latency_seconds"].observe(("r",), 2.0)
        store.write(other.snapshot())
    live.counters["requests_total"].inc(("200",), 100)
    live.gauges["in_flight"].set((), 10)
    live.histograms["latency_seconds"].observe(("r",), 0.01)

    found = samples(live, live_store)
    assert found[("requests_total", (("status", "200"),))] == 112.0
    assert found[("requests_total", (("status", "404"),))] == 2.0
    assert found[("in_flight", ())] == 12.0
    route = (("route", "r"),)
    assert found[("latency_seconds_bucket", (("le", "0.1"), *route))] == 1.0
    assert found[("latency_seconds_bucket", (("le", "1.0"), *route))] == 3.0
    assert found[("latency_seconds_bucket", (("le", "+Inf"), *route))] == 5.0
    assert found[("latency_seconds_count", route)] == 5.0
    assert found[("latency_seconds_sum", route)] == pytest.approx(5.01)


def test_a_stale_workers_gauges_are_dropped_but_its_counters_kept(tmp_path):
    live, live_store = worker(tmp_path, "1")
    dead, dead_store = worker(tmp_path, "dead")
    dead.counters["requests_total"].inc(("200",), 9)
    dead.gauges["in_flight"].set((), 50)
    dead.histograms["latency_seconds"].observe(("r",), 0.5)
    snapshot = dead.snapshot()
    snapshot["time"] = time.time() - SnapshotStore.STALE_AFTER - 1
    dead_store.write(snapshot)
    live.gauges["in_flight"].set((), 2)

    found = samples(live, live_store)
    assert found[("requests_total", (("status", "200"),))] == 9.0
    assert found[("in_flight", ())] == 2.0
    assert found[("latency_seconds_count", (("route", "r"),))] == 1.0


def test_a_fresh_workers_gauges_are_kept(tmp_path):
    live, live_store = worker(tmp_path, "1")
    other, other_store = worker(tmp_path, "2")
    other.gauges["in_flight"].set((), 3)
    snapshot = other.snapshot()
    snapshot["time"] = time.time() - SnapshotStore.STALE_AFTER + 2
    other_store.write(snapshot)
    assert samples(live, live_store)[("in_flight", ())] == 3.0


def test_an_unreadable_snapshot_is_skipped(tmp_path):
    live, live_store = worker(tmp_path, "1")
    (tmp_path / "worker-broken.json").write_bytes(b"{not json")
    live.counters["requests_total"].inc(("200",))
    assert samples(live, live_store)[("requests_total", (("status", "200"),))] == 1.0


def test_the_collector_without_a_store_is_the_live_registry_only():
    registry = gateway_like()
    registry.counters["requests_total"].inc(("200",))
    families = {f.name: f for f in MergedCollector(registry, None).collect()}
    assert families["requests"].samples[0].value == 1.0  # counter family name drops _total
