"""The Host of a request (HTTP/1.1 `Host`, HTTP/2 `:authority`): RFC 3986 host[:port]."""

from __future__ import annotations

import ipaddress
import re

# RFC 3986 host[:port]: an IP literal ([v6] or [vX.future]), or a reg-name (which takes
# IPv4 addresses too); the port, digits. Checked once per distinct Host value.
_HOST = re.compile(
    rb"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|\[v[0-9A-Fa-f]+\.[A-Za-z0-9._~!$&'()*+,;=:-]+\]"
    rb"|(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?"
)
# Host values seen valid, so a new connection with a known Host costs a set lookup.
_GOOD_HOSTS: set[bytes] = set()
_GOOD_HOSTS_LIMIT = 1024


def valid_host(value: bytes) -> bool:
    """Whether a Host value is an RFC 3986 host[:port]; valid ones are remembered."""
    if value in _GOOD_HOSTS:
        return True
    match = _HOST.fullmatch(value)
    if match is None:
        return False
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"].decode("ascii"))
        except ValueError:
            return False
    if len(_GOOD_HOSTS) >= _GOOD_HOSTS_LIMIT:
        _GOOD_HOSTS.clear()
    _GOOD_HOSTS.add(value)
    return True
