"""An http listener with `redirect_https`: every request answered 308 to the https URL.

308 (RFC 9110 15.4.9), not 301: the method and body are kept, so a POST sent to http
is repeated as a POST on https. The host comes from the request's Host header (already
checked to be a valid host[:port] by the server), the port is the https listener's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from potok.exchange import Exchange


def _without_port(host: bytes) -> bytes:
    if host.startswith(b"["):
        return host.split(b"]", 1)[0] + b"]"
    return host.split(b":", 1)[0]


def https_location(host: bytes, port: int, target: bytes) -> bytes:
    authority = _without_port(host)
    if port != 443:
        authority += b":%d" % port
    return b"https://" + authority + target


def redirect_to_https(exchange: Exchange, port: int) -> None:
    if not exchange.host:
        exchange.problem(400, "a Host header is needed to redirect to https")
        return
    target = exchange.path + exchange.query if exchange.path != b"*" else b"/"  # OPTIONS *
    location = https_location(exchange.host, port, target)
    exchange.respond(308, b"", b"text/plain", ((b"Location", location),))
