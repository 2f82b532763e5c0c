"""Log lines about one client's bad requests, at most a few per client per second.

One garbage client produced 122,000 "request refused" lines in 27 s: logging each
one costs more than refusing it, and buries every other line. Per client, the first
`per_second` lines of each second are written; the rest are counted, and once that
second is over one summary line says how many were left out (`suppressed`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

PER_SECOND = 5
MAX_CLIENTS = 4096
OTHERS = "(others)"  # clients beyond MAX_CLIENTS in one second share one count


class ClientLineBudget:
    """The counting: fixed one-second windows, a count per client (pure; injected clock).

    The windows are wall-clock seconds, the seconds of the lines' timestamps: a reader
    sees at most `per_second` lines per client with the same second. (A clock step only
    starts a new window early or late.)"""

    __slots__ = ("_clock", "_counts", "_max_clients", "_per_second", "_suppressed", "_window")

    def __init__(
        self,
        per_second: int = PER_SECOND,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._per_second = per_second
        self._max_clients = max_clients
        self._clock = clock
        self._window = int(clock())
        self._counts: dict[str, int] = {}
        self._suppressed: dict[str, int] = {}  # from windows already over

    def admit(self, client: str) -> bool:
        """Count a line for `client`; True if it may be written."""
        self._roll()
        counts = self._counts
        if client not in counts and len(counts) >= self._max_clients:
            client = OTHERS
        count = counts.get(client, 0) + 1
        counts[client] = count
        return count <= self._per_second

    def take_suppressed(self) -> dict[str, int]:
        """Lines left out per client in the seconds that are over; forgotten once taken."""
        self._roll()
        taken, self._suppressed = self._suppressed, {}
        return taken

    @property
    def pending(self) -> bool:
        """Lines are being left out in the current second (a summary is still to come)."""
        return any(count > self._per_second for count in self._counts.values())

    def _roll(self) -> None:
        window = int(self._clock())
        if window == self._window:
            return
        limit = self._per_second
        for client, count in self._counts.items():
            if count > limit:
                self._suppressed[client] = self._suppressed.get(client, 0) + count - limit
        self._counts = {}
        self._window = window


class ThrottledClientLog:
    """`info(client, **fields)` writes `event` within the client's budget; a summary
    line (`event` + ": lines suppressed", with `suppressed`) follows each second in
    which lines were left out."""

    def __init__(self, logger: Any, event: str, budget: ClientLineBudget | None = None) -> None:
        self._logger = logger
        self._event = event
        self._budget = budget if budget is not None else ClientLineBudget()
        self._summary: asyncio.TimerHandle | None = None

    def info(self, client_ip: str, **fields: Any) -> None:
        if self._budget.admit(client_ip):
            self._logger.info(self._event, client_ip=client_ip, **fields)
        elif self._summary is None:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (called from outside one): summarised when asked
            return
        # One second on, the second in which lines were left out is over.
        self._summary = loop.call_later(1.0, self._summarise)

    def _summarise(self) -> None:
        self._summary = None
        for client, count in self._budget.take_suppressed().items():
            self._logger.info(
                f"{self._event}: lines suppressed", client_ip=client, suppressed=count
            )
        if self._budget.pending:
            self._schedule()

    def close(self) -> None:
        if self._summary is not None:
            self._summary.cancel()
            self._summary = None
