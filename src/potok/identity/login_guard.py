"""Login brute-force protection: failures per username and per client IP, lock-out with backoff.

A pure state machine with an injected clock. A key (a username or an IP) that
fails `max_failures` times within `window` is locked for `lockout`; every
further lock-out of the same key doubles it, up to `max_lockout`. A success
clears the username's failures (not the IP's: one good password must not
reset an attacker's count). Usernames are tracked whether or not they exist,
so locking reveals nothing about which accounts are real.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from potok.identity.config import LoginProtectionConfig


@dataclass
class _Track:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0
    lockouts: int = 0


class _Counter:
    def __init__(
        self, limit: int, config: LoginProtectionConfig, clock: Callable[[], float]
    ) -> None:
        self.limit = limit
        self.config = config
        self.clock = clock
        self.tracks: OrderedDict[str, _Track] = OrderedDict()

    def retry_after(self, key: str) -> float:
        track = self.tracks.get(key)
        if track is None:
            return 0.0
        return max(0.0, track.locked_until - self.clock())

    def fail(self, key: str) -> None:
        now = self.clock()
        track = self.tracks.get(key)
        if track is None:
            track = self.tracks[key] = _Track()
            while len(self.tracks) > self.config.tracked:
                self.tracks.popitem(last=False)
        else:
            self.tracks.move_to_end(key)
        failures = track.failures
        failures.append(now)
        while failures and failures[0] <= now - self.config.window:
            failures.popleft()
        if len(failures) >= self.limit:
            lockout = min(self.config.lockout * (2**track.lockouts), self.config.max_lockout)
            track.locked_until = now + lockout
            track.lockouts += 1
            failures.clear()

    def clear(self, key: str) -> None:
        self.tracks.pop(key, None)


class LoginGuard:
    def __init__(
        self, config: LoginProtectionConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._users = _Counter(config.max_failures_per_user, config, clock)
        self._ips = _Counter(config.max_failures_per_ip, config, clock)

    def retry_after(self, username: str, ip: str) -> float:
        """Seconds until this username and IP may try again (0: now)."""
        return max(self._users.retry_after(username.lower()), self._ips.retry_after(ip))

    def failed(self, username: str, ip: str) -> None:
        self._users.fail(username.lower())
        self._ips.fail(ip)

    def succeeded(self, username: str) -> None:
        self._users.clear(username.lower())
