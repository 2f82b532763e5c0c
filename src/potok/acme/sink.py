"""What the certificate manager hands an issued certificate to: the TLS layer's store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class CertificateSink(Protocol):
    """Receives every certificate the manager obtains or finds in storage.

    `install` is called on the event loop, for a first certificate and for each
    replacement (renewal, revocation); it must not block. New handshakes for any of
    `names` should get the new certificate; open connections keep theirs.
    """

    def install(self, names: Sequence[str], chain_pem: bytes, key_pem: bytes) -> None: ...
