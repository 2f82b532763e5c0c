"""Login brute-force protection: failures per username and per client IP, lock-out with backoff.

A key (a username or an IP) that fails `max_failures` times within `window` is
locked for `lockout`; every further lock-out of the same key doubles it, up to
`max_lockout`. A success clears the username's failures (not the IP's: one good
password must not reset an attacker's count). Usernames are tracked whether or
not they exist, so locking reveals nothing about which accounts are real.

The counters live in the identity database (login_failures.py), shared by every
worker of every instance. An attempt's answer is decided *after* its password
has been checked, in the transaction that counts it: a wrong password is
counted and answered 401 only if neither key is locked at that moment, a right
one is answered 200 only if neither key is locked; otherwise 429, uncounted.
However many attempts run at once on however many workers, exactly
`max_failures` of them learn anything before the lock-out.

`check`, before the expensive password hash, refuses keys already locked: first
from this worker's memory of the lock-outs it has seen (no I/O, so a flood
against a locked account or from a locked IP never reaches the database), then
from a plain read of the database. It only ever refuses, never admits. The
memory is exact, not a guess: a lock-out is never lifted early (a success while
locked is refused), so a lock seen once holds until its end.

`LoginRules` is the state machine (pure: `now` is passed in); `LoginGuard`
adds the clock, the store and the memory.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

import structlog

from potok.identity.config import LoginProtectionConfig
from potok.identity.login_failures import EMPTY, Changes, LoginFailureStore, Track

log = structlog.get_logger("potok.identity.login_guard")

PRUNE_INTERVAL = 60.0  # seconds between two prunes of expired rows, per worker
_MAX_DOUBLINGS = 32  # beyond it the lock-out is max_lockout anyway; keeps 2**n finite


class LoginLocked(Exception):
    """The username or the client IP is locked out for `retry_after` more seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"locked for {retry_after:.1f} s")
        self.retry_after = retry_after


class LoginRules:
    """The state machine of one kind of key (usernames, or IPs) with its limit."""

    def __init__(self, limit: int, config: LoginProtectionConfig) -> None:
        self.limit = limit
        self.config = config

    def retry_after(self, track: Track, now: float) -> float:
        return max(0.0, track.locked_until - now)

    def fail(self, track: Track, now: float) -> Track:
        """One more failure at `now`: drop those out of the window, lock at the limit."""
        cutoff = now - self.config.window
        failures = (*(t for t in track.failures if t > cutoff), now)
        locked_until, lockouts = track.locked_until, track.lockouts
        if len(failures) >= self.limit:
            doubled = self.config.lockout * 2 ** min(lockouts, _MAX_DOUBLINGS)
            locked_until = now + min(doubled, self.config.max_lockout)
            lockouts += 1
            failures = ()
        return Track(failures, locked_until, lockouts, self.expires_at(failures, locked_until))

    def expires_at(self, failures: tuple[float, ...], locked_until: float) -> float:
        """When the row may go: its failures have left the window, and a whole window has
        passed since its lock-out ended (until then a new lock-out doubles)."""
        return max(max(failures, default=0.0), locked_until) + self.config.window


class LoginGuard:
    def __init__(
        self,
        config: LoginProtectionConfig,
        store: LoginFailureStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Wall-clock time: the rows are compared by every instance, not just this process.
        self._config = config
        self._store = store
        self._clock = clock
        self._users = LoginRules(config.max_failures_per_user, config)
        self._ips = LoginRules(config.max_failures_per_ip, config)
        self._locks: OrderedDict[str, float] = OrderedDict()  # key -> locked until
        self._next_prune = 0.0

    @staticmethod
    def keys(username: str, ip: str) -> tuple[str, str]:
        """The rows of an attempt: its username (case-insensitive) and its client IP."""
        return "user:" + username.lower(), "ip:" + ip

    async def check(self, username: str, ip: str) -> None:
        """Raise `LoginLocked` if the username or IP is known to be locked (cheap first look)."""
        user_key, ip_key = self.keys(username, ip)
        now = self._clock()
        wait = max(self._remembered(user_key, now), self._remembered(ip_key, now))
        if wait <= 0:
            tracks = await self._store.read((user_key, ip_key))
            self._remember(tracks, now)
            wait = self._wait(tracks, user_key, ip_key, now)
        if wait > 0:
            raise LoginLocked(wait)

    async def failed(self, username: str, ip: str) -> None:
        """Count a wrong password, or raise `LoginLocked` (uncounted) if a lock-out began
        while it was being checked."""
        user_key, ip_key = self.keys(username, ip)

        def decide(tracks: dict[str, Track]) -> tuple[Changes, tuple[float, Mapping[str, Track]]]:
            now = self._clock()
            wait = self._wait(tracks, user_key, ip_key, now)
            if wait > 0:
                return {}, (wait, tracks)
            changes = {
                user_key: self._users.fail(tracks.get(user_key, EMPTY), now),
                ip_key: self._ips.fail(tracks.get(ip_key, EMPTY), now),
            }
            return changes, (0.0, changes)

        wait, seen = await self._store.change((user_key, ip_key), decide, create=True)
        now = self._clock()
        self._remember(seen, now)
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_INTERVAL
            await self.prune()
        if wait > 0:
            raise LoginLocked(wait)

    async def succeeded(self, username: str, ip: str) -> None:
        """Clear the username's failures (the IP's stay), or raise `LoginLocked` if a
        lock-out began while the password was being checked: a right password is not
        let through a lock-out, so it cannot be told from a wrong one."""
        user_key, ip_key = self.keys(username, ip)

        def decide(tracks: dict[str, Track]) -> tuple[Changes, tuple[float, Mapping[str, Track]]]:
            wait = self._wait(tracks, user_key, ip_key, self._clock())
            if wait > 0:
                return {}, (wait, tracks)
            return {user_key: None} if user_key in tracks else {}, (0.0, {})

        wait, seen = await self._store.change((user_key, ip_key), decide, create=False)
        self._remember(seen, self._clock())
        if wait > 0:
            raise LoginLocked(wait)
        self._locks.pop(user_key, None)

    async def prune(self) -> int:
        """Delete the rows whose failures and lock-out no longer matter (every worker does
        it at most once per `PRUNE_INTERVAL`, after a failure); never fails a login."""
        try:
            return await self._store.prune(self._clock())
        except Exception as exc:
            log.warning("pruning login failures failed", error=str(exc))
            return 0

    def _wait(self, tracks: Mapping[str, Track], user_key: str, ip_key: str, now: float) -> float:
        return max(
            self._users.retry_after(tracks.get(user_key, EMPTY), now),
            self._ips.retry_after(tracks.get(ip_key, EMPTY), now),
        )

    def _remembered(self, key: str, now: float) -> float:
        locked_until = self._locks.get(key)
        if locked_until is None:
            return 0.0
        if locked_until <= now:
            del self._locks[key]
            return 0.0
        return locked_until - now

    def _remember(self, tracks: Mapping[str, Track], now: float) -> None:
        for key, track in tracks.items():
            if track.locked_until > now:
                self._locks[key] = track.locked_until
                self._locks.move_to_end(key)
        while len(self._locks) > self._config.tracked:
            self._locks.popitem(last=False)

    @property
    def remembered(self) -> int:
        """Lock-outs held in this worker's memory (bounded by `tracked`)."""
        return len(self._locks)
