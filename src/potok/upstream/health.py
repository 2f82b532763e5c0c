"""Target health: passive ejection from live traffic and active checks in the background."""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from potok.config.resilience import HealthCheckConfig, PassiveEjectionConfig

if TYPE_CHECKING:
    from potok.upstream.target import Target

log = structlog.get_logger("potok.health")


class TargetHealth:
    """Whether a target should get traffic: a pure state machine with an injected clock.

    A target is out while ejected (too many failures in a row on live traffic,
    for a backoff that doubles per repeat) or while active checks call it
    unhealthy. With active checks on, an ejected target comes back only after
    they pass again.
    """

    __slots__ = (
        "_active_checks",
        "_changed",
        "_check_failures",
        "_check_passes",
        "_clock",
        "_consecutive",
        "_ejection",
        "_passive",
        "checks_healthy",
        "ejected_until",
        "ejections",
    )

    def __init__(
        self,
        passive: PassiveEjectionConfig | None,
        active: HealthCheckConfig | None,
        changed: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._passive = passive
        self._active_checks = active
        self._changed = changed
        self._clock = clock
        self._consecutive = 0
        self._check_passes = 0
        self._check_failures = 0
        self._ejection = passive.base_ejection if passive else 0.0
        self.ejections = 0
        self.ejected_until = 0.0
        self.checks_healthy = True

    def available(self) -> bool:
        return self.checks_healthy and (
            self.ejected_until == 0.0 or self._clock() >= self.ejected_until
        )

    # Live traffic ---------------------------------------------------------------

    def record_success(self) -> None:
        self._consecutive = 0
        if self.ejections and self.ejected_until and self._clock() >= self.ejected_until:
            # Served well after coming back: the next ejection starts short again.
            self.ejections = 0
            self.ejected_until = 0.0
            if self._passive is not None:
                self._ejection = self._passive.base_ejection

    def record_failure(self) -> None:
        passive = self._passive
        if passive is None or not self.available():
            return
        self._consecutive += 1
        if self._consecutive >= passive.consecutive_failures:
            self._eject(passive, f"{passive.consecutive_failures} failures in a row")

    def eject_now(self, why: str) -> None:
        """Out at once, no second opinion: a refused connect means nothing listens there."""
        passive = self._passive
        if passive is not None and self.available():
            self._eject(passive, why)

    def _eject(self, passive: PassiveEjectionConfig, why: str) -> None:
        self._consecutive = 0
        self.ejections += 1
        self.ejected_until = self._clock() + self._ejection
        reason = f"{why}; out for {self._ejection:g}s"
        self._ejection = min(self._ejection * 2, passive.max_ejection)
        if self._active_checks is not None:
            self.checks_healthy = False  # back only after the checks pass again
            self._check_passes = 0
        self._changed(f"ejected: {reason}")

    # Active checks --------------------------------------------------------------

    def check_passed(self) -> None:
        config = self._active_checks
        self._check_failures = 0
        if config is None or self.checks_healthy:
            return
        if self.ejected_until and self._clock() < self.ejected_until:
            return  # still serving its ejection time
        self._check_passes += 1
        if self._check_passes >= config.healthy_threshold:
            self.checks_healthy = True
            self.ejected_until = 0.0
            self._changed(f"healthy: {self._check_passes} checks passed")

    def check_failed(self, why: str) -> None:
        config = self._active_checks
        self._check_passes = 0
        if config is None or not self.checks_healthy:
            return
        self._check_failures += 1
        if self._check_failures >= config.unhealthy_threshold:
            self.checks_healthy = False
            self._changed(f"unhealthy: {self._check_failures} checks failed ({why})")


async def probe(target: Target, path: str, limit: float) -> str | None:
    """GET `path` on the target; None if it answered 2xx/3xx, else what went wrong."""
    writer = None
    try:
        async with asyncio.timeout(limit):
            tls = target.tls
            if tls is None:
                reader, writer = await asyncio.open_connection(target.host, target.port)
            else:  # verified as requests are: a target whose certificate fails is not healthy
                reader, writer = await asyncio.open_connection(
                    target.host,
                    target.port,
                    ssl=tls.context,
                    server_hostname=target.server_hostname,
                    ssl_handshake_timeout=limit,
                )
            writer.write(
                b"GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: potok-health-check\r\n"
                b"Connection: close\r\n\r\n" % (path.encode(), target.host_header)
            )
            status_line = await reader.readline()
    except TimeoutError:
        return f"no answer within {limit:g}s"
    except ssl.SSLCertVerificationError as exc:
        return f"TLS: {exc.verify_message}"
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        if writer is not None:
            writer.close()
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return "not an HTTP response"
    status = int(parts[1])
    return None if 200 <= status < 400 else f"status {status}"


async def run_checks(targets: tuple[Target, ...], config: HealthCheckConfig) -> None:
    """Forever: check each target every `interval` (first round spread over the interval)."""

    async def check_forever(target: Target) -> None:
        health = target.health
        assert health is not None
        await asyncio.sleep(random.uniform(0, min(config.interval, 1.0)))
        while True:
            problem = await probe(target, config.path, config.timeout)
            if problem is None:
                health.check_passed()
            else:
                health.check_failed(problem)
            await asyncio.sleep(config.interval)

    await asyncio.gather(*(check_forever(t) for t in targets))
