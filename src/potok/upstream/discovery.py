"""DNS discovery: a service's targets given by host name, re-resolved while the gateway runs.

Every A/AAAA record of a name becomes a target (with the name's weight), so the pods
behind a Kubernetes headless Service, or a compose service scaled out, are followed
without a reload. Resolution goes through `loop.getaddrinfo` (a thread of the loop's
pool, never the event loop itself). getaddrinfo gives no TTLs, so the schedule is the
config's: `min_refresh` after anything moved, doubling to `max_refresh` while nothing
does. A name that stops resolving (error, timeout, no records) keeps its last good
addresses and is reported by `describe()` in /api/v1/health until it resolves again.

Targets are swapped in as a new tuple (`Service.use_targets`); an address still present
keeps its `Target` object, so its pool, health and in-flight count carry on.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import structlog

from potok.config.discovery import DnsDiscoveryConfig
from potok.config.models import ServiceConfig, TargetConfig
from potok.upstream.pool import ConnectionPool
from potok.upstream.target import Target

if TYPE_CHECKING:
    from potok.upstream.service import Service

log = structlog.get_logger("potok.discovery")

Resolver = Callable[[str, int, int], Awaitable[list[str]]]
"""(host, port, family) -> the addresses the name has now; raises OSError if it has none."""

_FAMILIES = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}


async def resolve_with_loop(host: str, port: int, family: int) -> list[str]:
    """The system resolver (/etc/hosts, DNS, as nsswitch says), off the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, family=family, type=socket.SOCK_STREAM
    )
    return [str(info[4][0]) for info in infos]


class RefreshSchedule:
    """How long to wait before the next resolution: `min_refresh` after something moved,
    then doubling up to `max_refresh` while the answers stay the same."""

    __slots__ = ("_max", "_min", "interval")

    def __init__(self, min_refresh: float, max_refresh: float) -> None:
        self._min = min_refresh
        self._max = max_refresh
        self.interval = min_refresh

    def next(self, moved: bool) -> float:
        self.interval = self._min if moved else min(self.interval * 2, self._max)
        return self.interval


@dataclass(slots=True)
class NameState:
    """One configured target given by host name, and what it resolved to last."""

    config: TargetConfig
    host: str
    port: int
    addresses: tuple[str, ...] = ()  # last good answer, sorted; () before the first
    resolved_at: float = 0.0  # wall clock of the last good answer
    error: str | None = None  # why the last resolution failed; None when it succeeded
    failing_since: float = 0.0
    failures: int = 0

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


class DnsDiscovery:
    """Resolves a service's named targets in the background and hands it the result."""

    def __init__(
        self,
        service: Service,
        config: ServiceConfig,
        dns: DnsDiscoveryConfig,
        resolver: Resolver = resolve_with_loop,
    ) -> None:
        self._service = service
        self._config = config
        self._dns = dns
        self._resolver = resolver
        self._family = _FAMILIES[dns.family]
        self._schedule = RefreshSchedule(dns.min_refresh, dns.max_refresh)
        self._names = [
            NameState(t, urlsplit(t.url).hostname or "", t.port)
            for t in config.targets
            if t.by_name
        ]
        # Targets by (address, port): kept across refreshes so pools and health carry on.
        self._known: dict[tuple[str, int], Target] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Resolve now, then on the schedule (needs a running loop; a second call is a no-op)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                moved = await self.refresh()
            except Exception:  # a bug here must not end discovery for the process's life
                log.exception("dns discovery failed", service=self._service.name)
                moved = True
            await asyncio.sleep(self._schedule.next(moved))

    async def refresh(self) -> bool:
        """Resolve every name once and apply the result; whether anything moved."""
        before = [name.addresses for name in self._names]
        results = await asyncio.gather(*(self._resolve(name) for name in self._names))
        if before != [name.addresses for name in self._names]:
            self._service.use_targets(self._targets())
        self._count()
        return any(results)

    def _count(self) -> None:
        metrics = self._service.metrics
        if metrics is None:
            return
        for name in self._names:
            labels = (self._service.name, name.label)
            metrics.dns_addresses.set(labels, len(name.addresses))
            metrics.dns_resolving.set(labels, 0 if name.error else 1)

    async def _resolve(self, name: NameState) -> bool:
        """Update one name; whether its addresses or its resolving state changed."""
        try:
            async with asyncio.timeout(self._dns.timeout):
                found = await self._resolver(name.host, name.port, self._family)
            if not found:
                raise OSError(f"{name.host} has no address records")
        except (OSError, TimeoutError, UnicodeError) as exc:  # UnicodeError: a bad IDNA label
            return self._failed(name, str(exc) or f"no answer within {self._dns.timeout:g}s")
        addresses = tuple(sorted(set(found)))
        recovered = name.error is not None
        changed = addresses != name.addresses
        if recovered:
            log.warning("dns name resolves again", service=self._service.name, name=name.label)
        if changed:
            log.info(
                "dns targets changed",
                service=self._service.name,
                name=name.label,
                addresses=list(addresses),
            )
        name.addresses = addresses
        name.resolved_at = time.time()
        name.error = None
        name.failing_since = 0.0
        name.failures = 0
        return recovered or changed

    def _failed(self, name: NameState, why: str) -> bool:
        first = name.error is None
        name.error = why
        name.failures += 1
        if first:
            name.failing_since = time.time()
            log.warning(
                "dns name does not resolve; keeping its last targets",
                service=self._service.name,
                name=name.label,
                error=why,
                kept=list(name.addresses),
            )
        return first

    def _targets(self) -> tuple[Target, ...]:
        """The service's targets now: IP targets as configured, each name's addresses, in
        config order; a name never resolved yet stays a target by name."""
        wanted: dict[tuple[str, int], Target] = {}
        names = iter(self._names)
        for target_config in self._config.targets:
            if not target_config.by_name:
                key = (urlsplit(target_config.url).hostname or "", target_config.port)
                wanted.setdefault(key, self._target(key, target_config, None))
                continue
            name = next(names)
            if not name.addresses:
                key = (name.host, name.port)
                wanted.setdefault(key, self._target(key, target_config, None))
            for address in name.addresses:
                key = (address, name.port)
                wanted.setdefault(key, self._target(key, target_config, name))
        self._known = wanted
        return tuple(wanted.values())

    def _target(self, key: tuple[str, int], config: TargetConfig, name: NameState | None) -> Target:
        known = self._known.get(key)
        if known is not None:
            return known
        for existing in self._service.targets:  # the service's first, config-built targets
            if (existing.host, existing.port) == key:
                return existing
        address, port = key
        literal = f"[{address}]" if ":" in address else address
        pool = self._config.pool
        scheme = "https" if config.https else "http"
        target = Target(
            f"{scheme}://{literal}:{port}",
            config.weight,
            ConnectionPool(pool.max_idle, pool.idle_timeout),
            self._config.tls_context,
            # Connect to the address, but check the certificate for the name (and send it
            # in SNI): the address alone is not what the service is certified as.
            name.host if name is not None else None,
        )
        if name is not None:
            # Connect to the address, but tell the service the name it is known by.
            default_port = 443 if config.https else 80
            target.host_header = (name.host if port == default_port else name.label).encode()
        return target

    def describe(self) -> dict[str, object]:
        """Each name's addresses and state, for /api/v1/health."""
        now = time.time()
        return {
            "next_refresh_s": round(self._schedule.interval, 3),
            "names": {
                name.label: {
                    "addresses": list(name.addresses),
                    "resolves": name.error is None and bool(name.addresses),
                    "error": name.error,
                    "failing_for_s": round(now - name.failing_since, 1) if name.error else 0,
                    "last_resolved_s_ago": (
                        round(now - name.resolved_at, 1) if name.resolved_at else None
                    ),
                }
                for name in self._names
            },
        }
