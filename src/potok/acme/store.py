"""Where certificates, their keys, the ACME account and pending challenges live.

Two backends satisfy `CertificateStore`: the database (every instance of a cluster
shares it) and a directory of PEM files. Both also publish HTTP-01 challenge answers,
so whichever instance the CA's validation request reaches can answer it, and both
give the lock that lets one instance order at a time (lock.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from potok.acme.certificate import StoredCertificate
from potok.acme.lock import OrderLock


@dataclass(frozen=True, slots=True)
class StoredAccount:
    """An ACME account at one CA: its key (JWK JSON, private) and its URL there."""

    directory_url: str
    key_json: str
    uri: str | None  # None until the CA has made the account


class CertificateStore(Protocol):
    async def open(self) -> None:
        """Create what the backend needs (tables, folders); idempotent."""
        ...

    async def close(self) -> None: ...

    async def load_account(self, directory_url: str) -> StoredAccount | None: ...

    async def save_account(self, account: StoredAccount) -> None: ...

    async def load(self, certificate_id: str) -> StoredCertificate | None: ...

    async def save(self, certificate: StoredCertificate) -> None:
        """Store `certificate`, replacing the one with the same id."""
        ...

    async def all(self) -> list[StoredCertificate]: ...

    async def publish_challenge(self, token: str, key_authorization: str, expires: float) -> None:
        """Make the HTTP-01 answer for `token` visible to every instance."""
        ...

    async def withdraw_challenge(self, token: str) -> None: ...

    async def challenge(self, token: str) -> str | None:
        """The key authorization published for `token`, if any and not expired."""
        ...

    def order_lock(self) -> OrderLock:
        """The lock this backend offers (per storage kind; lock.py)."""
        ...
