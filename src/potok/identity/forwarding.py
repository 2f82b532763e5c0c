"""The identity headers sent upstream, built once per principal (a cached token reuses them)."""

from __future__ import annotations

from collections.abc import Iterable

from potok.http.http11 import header_block
from potok.identity.config import IdentityHeadersConfig

_UNSAFE = str.maketrans("", "", "\r\n\x00")


def header_value(text: str) -> bytes:
    # Claims come from a verified token, but a header must never carry CR/LF whatever it says.
    return text.translate(_UNSAFE).encode("utf-8", "replace")


class IdentityHeaders:
    """Header names from config, as bytes, plus the lower-case set stripped from clients."""

    __slots__ = ("org", "roles", "scopes", "strip", "user_id")

    def __init__(self, config: IdentityHeadersConfig) -> None:
        self.user_id = config.user_id.encode()
        self.roles = config.roles.encode()
        self.org = config.org.encode()
        self.scopes = config.scopes.encode()
        self.strip = frozenset(name.lower().encode() for name in config.names())

    def build(
        self, subject: str, roles: Iterable[str], scopes: Iterable[str], org: str | None
    ) -> bytes:
        """The header lines, rendered (`Name: value\r\n` each)."""
        return header_block(self.pairs(subject, roles, scopes, org))

    def pairs(
        self, subject: str, roles: Iterable[str], scopes: Iterable[str], org: str | None
    ) -> list[tuple[bytes, bytes]]:
        headers = [(self.user_id, header_value(subject))]
        role_list = sorted(roles)
        if role_list:
            headers.append((self.roles, header_value(",".join(role_list))))
        scope_list = sorted(scopes)
        if scope_list:
            headers.append((self.scopes, header_value(" ".join(scope_list))))
        if org:
            headers.append((self.org, header_value(org)))
        return headers
