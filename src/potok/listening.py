"""What a request needs to know of the listener it came in on, fixed per listener: what it
serves, its scheme, and whether it only redirects to https. Connections hold one; the
gateway reads it once per request instead of asking the transport."""

from __future__ import annotations

from dataclasses import dataclass

from potok.config.listeners import ALL_SERVES, ListenerConfig

ACME_CHALLENGE_PREFIX = b"/.well-known/acme-challenge/"


@dataclass(frozen=True, slots=True)
class ListenerView:
    label: str
    serves: frozenset[str]
    scheme: bytes = b"http"  # b"https" on a TLS listener
    redirect_port: int | None = None  # set: answer 308 to https on this port

    @classmethod
    def of(cls, config: ListenerConfig, https_port: int | None) -> ListenerView:
        redirect = None
        if config.redirect_https:
            redirect = config.redirect_port or https_port or 443
        return cls(
            config.label,
            config.serves_key,
            b"https" if config.protocol == "https" else b"http",
            redirect,
        )


PLAIN = ListenerView("http", frozenset(ALL_SERVES))
"""A plain listener serving everything: the `server.host`/`port` shorthand."""
