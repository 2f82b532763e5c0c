"""When a failed delivery is tried again: exponential backoff with full jitter, capped,
and the point at which it goes dead-letter. Pure; the clock and randomness are injected."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    initial: float
    maximum: float
    max_age: float
    max_attempts: int  # 0: no limit but the age
    rand: Callable[[], float] = random.random

    def delay(self, attempts: int) -> float:
        """The wait after the `attempts`-th failed attempt (1-based): "full jitter"
        (AWS Architecture Blog, "Exponential Backoff And Jitter") over a floor of half,
        so retries of one outage spread out but never come back at once."""
        ceiling = min(self.maximum, self.initial * 2.0 ** min(attempts - 1, 62))
        return ceiling * (0.5 + 0.5 * self.rand())

    def next_at(self, attempts: int, received_at: float, now: float) -> float | None:
        """When to try again after `attempts` failures, or None: dead-letter."""
        if self.max_attempts and attempts >= self.max_attempts:
            return None
        at = now + self.delay(attempts)
        if at > received_at + self.max_age:
            return None
        return at
