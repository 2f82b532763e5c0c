"""Freshness and age (RFC 9111 §4.2) of a stored response, as a shared cache sees it.

Pure functions over numbers and parsed directives: the policy gives them the clock.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from email.utils import parsedate_tz

from potok.policies.cache.cache_control import Directives, seconds

# §4.2.2: statuses cacheable by default (RFC 9110 §15.1), which a heuristic may make fresh.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})


def http_date(value: bytes | None) -> float | None:
    """An HTTP-date (IMF-fixdate, RFC 850 or asctime, RFC 9110 §5.6.7) as a POSIX time,
    or None if it is not one (an invalid Expires then means "already expired")."""
    if not value:
        return None
    try:
        parsed = parsedate_tz(value.decode("latin-1").strip())
    except (ValueError, IndexError, TypeError):
        return None
    if parsed is None or (parsed[0] < 1000 and parsed[0] > 99):
        return None
    year = parsed[0]
    if year < 100:  # RFC 850's two-digit year: within 50 years of now (§5.6.7)
        year += 2000 if year < 70 else 1900
    try:
        stamp = calendar.timegm((year, *parsed[1:6], 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    return float(stamp - (parsed[9] or 0))


@dataclass(frozen=True, slots=True)
class Lifetime:
    """How long a response is fresh, and whether its origin said so."""

    seconds: float
    explicit: bool  # from s-maxage, max-age or Expires (not heuristic, not a default)


def lifetime(
    status: int,
    directives: Directives,
    *,
    expires: bytes | None,
    has_expires: bool,
    date_value: float,
    last_modified: bytes | None,
    heuristic: float,
    heuristic_max: float,
    default_ttl: float | None,
) -> Lifetime:
    """§4.2.1 for a shared cache: s-maxage, then max-age, then Expires - Date; an
    invalid or duplicated one of these makes the response stale (0). Without any, a
    heuristic (only where §4.2.2 allows it, and only if `heuristic` > 0), else the
    route's `default_ttl`, else 0."""
    for name in (b"s-maxage", b"max-age"):
        value = seconds(directives, name)
        if value is not None:
            return Lifetime(float(max(value, 0)), True)
    if has_expires:
        when = http_date(expires)
        return Lifetime(max(0.0, when - date_value) if when is not None else 0.0, True)
    if heuristic > 0 and (status in HEURISTIC_STATUSES or b"public" in directives):
        modified = http_date(last_modified)
        if modified is not None and modified < date_value:
            return Lifetime(min((date_value - modified) * heuristic, heuristic_max), False)
    if default_ttl is not None:
        return Lifetime(default_ttl, False)
    return Lifetime(0.0, False)


def initial_age(
    age_header: bytes | None, date_value: float, request_time: float, response_time: float
) -> float:
    """§4.2.3's corrected_initial_age: the response's age when it arrived."""
    apparent_age = max(0.0, response_time - date_value)
    age_value = 0
    if age_header:
        first = age_header.split(b",", 1)[0].strip()
        if first.isdigit():
            age_value = min(int(first), 2147483648)
    corrected_age_value = age_value + (response_time - request_time)
    return max(apparent_age, corrected_age_value)


def current_age(initial: float, response_time: float, now: float) -> float:
    """§4.2.3's current_age: its age at `now`."""
    return initial + max(0.0, now - response_time)


def stale_window(directives: Directives, name: bytes) -> float:
    """Seconds past expiry a stale-while-revalidate / stale-if-error allows (0 if none
    or invalid)."""
    value = seconds(directives, name)
    return float(value) if value is not None and value > 0 else 0.0


def forbids_stale(directives: Directives) -> bool:
    """must-revalidate, proxy-revalidate, s-maxage (§5.2.2.10: implies proxy-revalidate
    for a shared cache) or an unqualified no-cache: never served stale."""
    return (
        b"must-revalidate" in directives
        or b"proxy-revalidate" in directives
        or b"s-maxage" in directives
        or b"no-cache" in directives
    )
