"""What the certificate manager hands an issued certificate to: the TLS layer's store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class CertificateSink(Protocol):
    """Receives every certificate the manager obtains or finds in storage.

    `install` is called for a first certificate and for each replacement (renewal,
    revocation), in a worker thread (`asyncio.to_thread`: building an SSL context parses
    the key, which blocks), never two at once from one manager. New handshakes for any
    of `names` should get the new certificate; open connections keep theirs. Raising
    refuses the certificate: the manager logs it and offers it again at its next pass.
    The TLS layer's store (`potok.tls.store`, `install(names, chain_pem, key_pem)`)
    satisfies it as it is.
    """

    def install(self, names: Sequence[str], chain_pem: bytes, key_pem: bytes) -> None: ...
