"""DNS discovery in memory: a resolver function stands in for DNS (the real resolver, through
/etc/hosts, is driven in tests/integration/test_dns_discovery.py)."""

from __future__ import annotations

import asyncio
import socket

import pytest
import yaml

from potok.config.loader import ConfigError, load_config_text
from potok.config.models import ServiceConfig
from potok.observability.metrics import MetricsRegistry
from potok.upstream.discovery import RefreshSchedule, resolve_with_loop
from potok.upstream.metrics import UpstreamMetrics
from potok.upstream.service import Service


class FakeDns:
    """Answers from a dict; a missing name fails as getaddrinfo does."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records
        self.asked: list[tuple[str, int, int]] = []

    async def __call__(self, host: str, port: int, family: int) -> list[str]:
        self.asked.append((host, port, family))
        if host not in self.records:
            raise OSError(f"[Errno -2] Name or service not known: {host!r}")
        return list(self.records[host])


def service(
    resolver: FakeDns,
    targets: list[object],
    dns: dict[str, str] | None = None,
    metrics: UpstreamMetrics | None = None,
    **extra: object,
) -> Service:
    settings = {"min_refresh": "1s", "max_refresh": "8s", **(dns or {})}
    config = ServiceConfig.model_validate({"targets": targets, "dns": settings, **extra})
    built = Service("api", config, metrics)
    assert built.discovery is not None
    built.discovery._resolver = resolver
    return built


def names(svc: Service) -> list[str]:
    return [t.name for t in svc.targets]


def test_schedule_backs_off_while_nothing_moves_and_resets_on_a_change():
    schedule = RefreshSchedule(1.0, 8.0)
    waits = [schedule.next(moved) for moved in (True, False, False, False, False, True, False)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 1.0, 2.0]


async def test_every_address_of_a_name_becomes_a_target_with_the_name_as_host_header():
    svc = service(
        FakeDns({"api.internal": ["10.0.0.2", "10.0.0.1", "fd00::1"]}), ["http://api.internal:8000"]
    )
    assert names(svc) == ["api.internal:8000"]  # before the first resolution: the name itself
    assert await svc.discovery.refresh() is True
    assert names(svc) == ["10.0.0.1:8000", "10.0.0.2:8000", "[fd00::1]:8000"]
    assert {t.host_header for t in svc.targets} == {b"api.internal:8000"}
    assert [svc.balancer.choose().name for _ in range(3)] == names(svc)


async def test_ip_targets_stay_and_weights_carry_over():
    dns = FakeDns({"b.internal": ["10.0.0.5", "10.0.0.6"]})
    svc = service(
        dns,
        ["http://10.0.0.9:80", {"url": "http://b.internal", "weight": 3}],
        balancer="weighted",
    )
    first = svc.targets[0]
    await svc.discovery.refresh()
    assert names(svc) == ["10.0.0.9:80", "10.0.0.5:80", "10.0.0.6:80"]
    assert svc.targets[0] is first
    assert [t.weight for t in svc.targets] == [1, 3, 3]
    assert svc.targets[1].host_header == b"b.internal"


async def test_an_address_that_stays_keeps_its_target_and_one_that_leaves_retires_its_pool():
    dns = FakeDns({"api.internal": ["10.0.0.1", "10.0.0.2"]})
    svc = service(dns, ["http://api.internal:8000"])
    await svc.discovery.refresh()
    kept, leaving = svc.targets
    kept.inflight = 4
    dns.records["api.internal"] = ["10.0.0.1", "10.0.0.3"]
    assert await svc.discovery.refresh() is True
    assert names(svc) == ["10.0.0.1:8000", "10.0.0.3:8000"]
    assert svc.targets[0] is kept and kept.inflight == 4
    assert leaving.pool.max_idle == 0  # retired: busy connections close when released
    assert await svc.discovery.refresh() is False  # same answer: nothing moved


async def test_new_targets_get_health_tracking_and_metrics_and_gone_ones_lose_their_gauge():
    dns = FakeDns({"api.internal": ["10.0.0.1", "10.0.0.2"]})
    metrics = UpstreamMetrics(MetricsRegistry())
    svc = service(dns, ["http://api.internal:8000"], metrics=metrics)
    assert set(metrics.target_healthy.current()) == {("api", "api.internal:8000")}
    await svc.discovery.refresh()
    assert all(t.health is not None for t in svc.targets)  # passive ejection is on by default
    assert set(metrics.target_healthy.current()) == {
        ("api", "10.0.0.1:8000"),
        ("api", "10.0.0.2:8000"),
    }
    dns.records["api.internal"] = ["10.0.0.2"]
    await svc.discovery.refresh()
    assert set(metrics.target_healthy.current()) == {("api", "10.0.0.2:8000")}
    name = ("api", "api.internal:8000")
    assert metrics.dns_resolving.current() == {name: 1}
    assert metrics.dns_addresses.current() == {name: 1}
    del dns.records["api.internal"]
    await svc.discovery.refresh()
    assert metrics.dns_resolving.current() == {name: 0}
    assert metrics.dns_addresses.current() == {name: 1}  # the last good address is kept


async def test_an_unexpected_error_does_not_end_discovery():
    calls = 0

    async def flaky(host: str, port: int, family: int) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return ["10.0.0.7"]

    svc = service(FakeDns({}), ["http://api.internal:8000"], dns={"min_refresh": "10ms"})
    svc.discovery._resolver = flaky
    svc.start()
    try:
        for _ in range(100):
            if names(svc) == ["10.0.0.7:8000"]:
                break
            await asyncio.sleep(0.01)
    finally:
        svc.close()
    assert names(svc) == ["10.0.0.7:8000"]


async def test_a_name_that_stops_resolving_keeps_its_last_targets_and_says_so():
    dns = FakeDns({"api.internal": ["10.0.0.1", "10.0.0.2"]})
    svc = service(dns, ["http://api.internal:8000"])
    await svc.discovery.refresh()
    before = svc.targets
    del dns.records["api.internal"]
    assert await svc.discovery.refresh() is True  # failing is news: refresh soon
    assert svc.targets is before
    state = svc.describe()["dns"]["names"]["api.internal:8000"]
    assert state["resolves"] is False
    assert "Name or service not known" in state["error"]
    assert state["addresses"] == ["10.0.0.1", "10.0.0.2"]
    assert await svc.discovery.refresh() is False  # still failing: back off
    dns.records["api.internal"] = ["10.0.0.2"]
    assert await svc.discovery.refresh() is True
    assert names(svc) == ["10.0.0.2:8000"]
    assert svc.describe()["dns"]["names"]["api.internal:8000"]["resolves"] is True


async def test_an_empty_answer_or_a_slow_resolver_counts_as_a_failure():
    dns = FakeDns({"api.internal": ["10.0.0.1"]})
    svc = service(dns, ["http://api.internal:8000"], dns={"timeout": "50ms"})
    await svc.discovery.refresh()
    dns.records["api.internal"] = []
    await svc.discovery.refresh()
    assert "no address records" in svc.describe()["dns"]["names"]["api.internal:8000"]["error"]

    async def hang(host: str, port: int, family: int) -> list[str]:
        await asyncio.sleep(10)
        return []

    svc.discovery._resolver = hang
    svc.discovery._names[0].error = None
    await svc.discovery.refresh()
    assert svc.describe()["dns"]["names"]["api.internal:8000"]["error"].startswith("no answer")
    assert names(svc) == ["10.0.0.1:8000"]


async def test_family_restricts_the_records():
    dns = FakeDns({"api.internal": ["10.0.0.1"]})
    svc = service(dns, ["http://api.internal:8000"], dns={"family": "ipv6"})
    await svc.discovery.refresh()
    assert dns.asked == [("api.internal", 8000, socket.AF_INET6)]


async def test_the_default_resolver_asks_getaddrinfo_on_the_loop():
    assert "127.0.0.1" in await resolve_with_loop("localhost", 80, 0)
    with pytest.raises(OSError):
        await resolve_with_loop("no-such-name.invalid", 80, 0)


@pytest.mark.parametrize(
    ("service_config", "message"),
    [
        ({"targets": ["http://10.0.0.1:80"], "dns": {}}, "no target is given by a host name"),
        (
            {"targets": ["http://a:80"], "dns": {"min_refresh": "5s", "max_refresh": "1s"}},
            "max_refresh must be at least min_refresh",
        ),
        ({"targets": ["http://a:80"], "dns": {"min_refresh": 0}}, "greater than 0"),
    ],
)
def test_bad_dns_config_names_the_field(service_config, message):
    with pytest.raises(ConfigError) as caught:
        load_config_text(yaml.safe_dump({"services": {"api": service_config}}))
    assert any(
        field.startswith("services.api") and message in text
        for field, text in caught.value.problems
    ), caught.value.problems
