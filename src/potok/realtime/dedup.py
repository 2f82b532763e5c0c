"""A window of recently seen event ids: each id is let through once per window."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class DedupWindow:
    """Remembers ids for `window` seconds, at most `size` of them (oldest forgotten first).

    A pure state machine with an injected clock; the hub asks it once per event.
    """

    __slots__ = ("_clock", "_seen", "size", "window")

    def __init__(
        self, window: float, size: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self.size = size
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_time(self, event_id: str) -> bool:
        """True the first time an id is offered within the window, False for a repeat."""
        now = self._clock()
        seen = self._seen
        horizon = now - self.window
        while seen:
            oldest, at = next(iter(seen.items()))
            if at >= horizon and len(seen) < self.size:
                break
            del seen[oldest]
        if event_id in seen:
            return False
        seen[event_id] = now
        return True

    def __len__(self) -> int:
        return len(self._seen)
