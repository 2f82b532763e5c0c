"""A service as the data plane sees it: targets and their health, balancer, breaker,
retry rules, bulkhead, timeouts and the injected key."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog

from potok.config.models import ServiceConfig
from potok.upstream.balancer import Balancer, make_balancer
from potok.upstream.bulkhead import Bulkhead
from potok.upstream.circuit_breaker import CLOSED, STATE_NAMES, CircuitBreaker
from potok.upstream.dial import ConnectTimer, TlsFailure
from potok.upstream.discovery import DnsDiscovery
from potok.upstream.h2_client import H2Pool
from potok.upstream.health import TargetHealth, run_checks
from potok.upstream.metrics import UpstreamMetrics
from potok.upstream.pool import ConnectionPool
from potok.upstream.retry import RetryBudget, RetryPolicy
from potok.upstream.target import Target

log = structlog.get_logger("potok.upstream")


class Service:
    __slots__ = (
        "_health_task",
        "_metrics",
        "api_key_header",
        "balancer",
        "breaker",
        "bulkhead",
        "config",
        "connect_timeout",
        "connect_timer",
        "discovery",
        "failure_on",
        "h2_pools",
        "name",
        "response_timeout",
        "retry",
        "retry_budget",
        "serving",
        "targets",
        "tracks_health",
    )

    def __init__(
        self, name: str, config: ServiceConfig, metrics: UpstreamMetrics | None = None
    ) -> None:
        self.name = name
        self.config = config
        self._metrics = metrics
        self.targets = tuple(
            Target(
                t.url,
                t.weight,
                ConnectionPool(config.pool.max_idle, config.pool.idle_timeout),
                config.tls_context,
            )
            for t in config.targets
        )
        self.balancer: Balancer = make_balancer(config.balancer, self.targets)
        self.serving = self.targets  # the targets not drained: what the balancer chooses from
        self.connect_timeout = config.timeouts.connect
        self.response_timeout = config.timeouts.response
        self.api_key_header: tuple[bytes, bytes] | None = (
            (config.api_key.header.encode(), config.api_key.value.encode())
            if config.api_key
            else None
        )
        self.tracks_health = config.passive_ejection is not None or config.health_check is not None
        if self.tracks_health:
            for target in self.targets:
                target.health = TargetHealth(
                    config.passive_ejection, config.health_check, self._health_listener(target)
                )
        self.breaker = (
            CircuitBreaker(config.circuit_breaker, on_transition=self._breaker_moved)
            if config.circuit_breaker is not None
            else None
        )
        self.failure_on = frozenset(
            config.circuit_breaker.failure_on if config.circuit_breaker else ()
        )
        self.retry_budget = RetryBudget(config.retry.budget)
        self.retry = (
            RetryPolicy(config.retry, self.retry_budget) if config.retry.attempts > 1 else None
        )
        self.bulkhead = (
            Bulkhead(
                config.bulkhead.max_concurrent,
                config.bulkhead.max_queued,
                config.bulkhead.queue_timeout,
            )
            if config.bulkhead is not None
            else None
        )
        # Told the time of each phase of a new connection (none for a reused one).
        self.connect_timer: ConnectTimer | None = (
            self._observe_connect if metrics is not None else None
        )
        tls = config.tls_context
        if tls is not None and not tls.verifies:
            log.warning(
                "upstream TLS verification is OFF (insecure_skip_verify): any certificate is "
                "accepted, so the connection to the service is not authenticated",
                service=name,
            )
        self._health_task: asyncio.Task[None] | None = None
        # HTTP/2 connections per target, for the gRPC routes (opened on first use).
        self.h2_pools: dict[Target, H2Pool] = {}
        self.discovery = DnsDiscovery(self, config, config.dns) if config.dns else None
        if metrics is not None:
            breaker = self.breaker
            metrics.breaker_state.watch(
                (name,), breaker.reported_state if breaker is not None else _closed
            )
            for target in self.targets:
                metrics.target_healthy.watch((name, target.name), target.in_rotation)

    def choose(self, tried: Sequence[Target] = ()) -> Target:
        """A target for the next attempt: a healthy one not tried yet, if there is one."""
        first = self.balancer.choose()
        if not self.tracks_health and not tried:
            return first
        candidate = first
        for _ in range(len(self.targets)):
            healthy = candidate.health is None or candidate.health.available()
            if healthy and candidate not in tried:
                return candidate
            candidate = self.balancer.choose()
        # Everything is down or tried: take a healthy one even if tried, else the first pick
        # (the breaker decides whether anything goes out at all).
        for target in self.serving:
            if target.health is None or target.health.available():
                return target
        return first

    def h2_pool(self, target: Target) -> H2Pool:
        """The target's HTTP/2 connections (h2c, or TLS with ALPN h2 for https://)."""
        pool = self.h2_pools.get(target)
        if pool is None:
            tls = target.tls
            pool = self.h2_pools[target] = H2Pool(
                target.host,
                target.port,
                ssl=tls.h2_context if tls is not None else None,
                server_hostname=target.server_hostname,
                connect_timeout=self.connect_timeout,
                idle_timeout=self.config.pool.idle_timeout,
                connect_timer=self.connect_timer,
            )
        return pool

    def has_healthy_untried(self, tried: Sequence[Target]) -> bool:
        """Whether a target the call did not try gets traffic and last served well.

        A call that failed while such a target exists failed on its targets, not on
        the service: one dead or hung target of several must not open the breaker.
        """
        for target in self.serving:
            if (
                not target.failing
                and target not in tried
                and (target.health is None or target.health.available())
            ):
                return True
        return False

    def count_failure(self, kind: str, status: int = 0) -> bool:
        """Whether a failure of this kind counts against the breaker and target health."""
        failure_on = self.failure_on
        if status:
            return "5xx" in failure_on or str(status) in failure_on
        return kind in failure_on or not failure_on

    # Verdicts: how an attempt and a whole call went (the proxy, gRPC and buffered calls) --

    def judge_attempt(self, target: Target, ok: bool, kind: str = "", status: int = 0) -> None:
        """Tell `target`'s health how one attempt went (passive ejection)."""
        # Any failed attempt, whatever `failure_on` says: a target whose last answer was
        # worth a retry is not one a retry should count on.
        target.failing = not ok
        health = target.health
        if health is None:
            return
        if ok:
            health.record_success()
        elif self.count_failure(kind, status):
            health.record_failure()

    def judge_call(
        self, tried: Sequence[Target], ok: bool, kind: str = "", status: int = 0
    ) -> None:
        """Tell the breaker how a whole call went, retries included (once per admitted call).

        The breaker judges what the client gets: a dead target whose requests are
        retried onto a healthy one is the target's failure (ejection), not the service's.
        """
        breaker = self.breaker
        if breaker is None:
            return
        if ok or not self.count_failure(kind, status):
            breaker.record_success()
        elif self.has_healthy_untried(tried):
            # Failed on the targets it tried (no retry left, or not safe to retry) while
            # another target serves well: theirs to answer for (ejection), not the service's.
            breaker.record_cancelled()
        else:
            breaker.record_failure()

    # Counting (metrics are optional: tests build services without them) -------------

    @property
    def metrics(self) -> UpstreamMetrics | None:
        return self._metrics

    def note_retry(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.retries.inc((self.name, reason))

    def note_budget_exhausted(self) -> None:
        if self._metrics is not None:
            self._metrics.budget_exhausted.inc((self.name,))

    def note_bulkhead_rejection(self) -> None:
        if self._metrics is not None:
            self._metrics.bulkhead_rejected.inc((self.name,))

    def note_breaker_rejection(self) -> None:
        if self._metrics is not None:
            self._metrics.breaker_rejected.inc((self.name,))

    def _observe_connect(self, phase: str, seconds: float) -> None:
        assert self._metrics is not None
        self._metrics.connect_duration.observe((self.name, phase), seconds)

    def note_tls_failure(self, target: Target, failure: TlsFailure) -> None:
        log.warning(
            "upstream TLS handshake failed",
            service=self.name,
            target=target.name,
            server_name=target.server_hostname,
            reason=failure.reason,
            error=failure.detail,
        )
        if self._metrics is not None:
            self._metrics.tls_failures.inc((self.name, target.name, failure.reason))

    # Background and bookkeeping -----------------------------------------------------

    def start(self) -> None:
        """Begin active health checks (needs a running loop)."""
        if self.config.health_check is not None and self._health_task is None:
            self._health_task = asyncio.get_running_loop().create_task(
                run_checks(self.targets, self.config.health_check)
            )
        if self.discovery is not None:
            self.discovery.start()

    def use_targets(self, targets: tuple[Target, ...]) -> None:
        """A new target set from DNS discovery (upstream/discovery.py). Targets still present
        are the same objects; those that left close their pools as their requests end."""
        old, self.targets = self.targets, targets
        self._rebalance()
        for target in targets:
            if self.tracks_health and target.health is None:
                target.health = TargetHealth(
                    self.config.passive_ejection,
                    self.config.health_check,
                    self._health_listener(target),
                )
            if self._metrics is not None and target not in old:
                self._metrics.target_healthy.watch((self.name, target.name), target.in_rotation)
        for target in old:
            if target not in targets:
                target.pool.retire()
                if self._metrics is not None:
                    self._metrics.target_healthy.remove((self.name, target.name))
        if self._health_task is not None:  # check the new set from now on
            self._health_task.cancel()
            self._health_task = None
            self.start()

    def drain(self, name: str, drained: bool) -> Target:
        """Take a target out of the balancer (in-flight requests finish) or put it back.

        KeyError for an unknown target; ValueError when it would leave nothing to serve
        (hold the breaker open for that: the answer is then the breaker's, not a 502)."""
        target = next((t for t in self.targets if t.name == name), None)
        if target is None:
            raise KeyError(name)
        if drained and not target.drained and len(self.serving) <= 1:
            raise ValueError(f"{name} is the last target serving {self.name}")
        target.drained = drained
        self._rebalance()
        return target

    def _rebalance(self) -> None:
        """A new balancer over the targets not drained: choosing stays as cheap as before."""
        serving = tuple(t for t in self.targets if not t.drained) or self.targets
        self.serving = serving
        self.balancer = make_balancer(self.config.balancer, serving)

    def close(self) -> None:
        if self.discovery is not None:
            self.discovery.stop()
        if self._health_task is not None:
            self._health_task.cancel()
            self._health_task = None
        for target in self.targets:
            target.pool.close_all()
        self._close_h2()

    def retire(self) -> None:
        """Replaced by a config reload: stop checking, let in-flight requests finish on
        their connections, keep no idle ones."""
        if self.discovery is not None:
            self.discovery.stop()
        if self._health_task is not None:
            self._health_task.cancel()
            self._health_task = None
        for target in self.targets:
            target.pool.retire()
        pools, self.h2_pools = self.h2_pools, {}
        for pool in pools.values():
            pool.retire()  # calls in flight finish on their connections

    def _close_h2(self) -> None:
        pools, self.h2_pools = self.h2_pools, {}
        for pool in pools.values():
            pool.close()

    def prune_pools(self) -> None:
        for target in self.targets:
            target.pool.prune()
        for pool in self.h2_pools.values():
            pool.prune()

    def _breaker_moved(self, old: int, new: int, reason: str) -> None:
        log.warning(
            "circuit breaker",
            service=self.name,
            transition=f"{STATE_NAMES[old]} -> {STATE_NAMES[new]}",
            reason=reason,
        )
        if self._metrics is not None:
            self._metrics.breaker_transitions.inc((self.name, STATE_NAMES[new]))

    def _health_listener(self, target: Target) -> Callable[[str], None]:
        return lambda reason: self._target_changed(target, reason)

    def _target_changed(self, target: Target, reason: str) -> None:
        # upstream_target_healthy reads target.in_rotation when scraped: nothing to set.
        log.warning("target health", service=self.name, target=target.name, change=reason)

    def describe(self) -> dict[str, object]:
        """State for /api/v1/health."""
        breaker = self.breaker
        return {
            "breaker": STATE_NAMES[breaker.reported_state()] if breaker is not None else "disabled",
            "breaker_retry_after_s": round(breaker.retry_after(), 3) if breaker is not None else 0,
            "bulkhead": (
                {"in_use": self.bulkhead.in_use, "queued": self.bulkhead.queued}
                if self.bulkhead is not None
                else None
            ),
            "targets": [target.describe() for target in self.targets],
            "dns": self.discovery.describe() if self.discovery is not None else None,
        }


def _closed() -> int:
    return CLOSED
