"""A certificate as stored: its names, the PEM chain and key, and the facts read from them."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def certificate_id(names: tuple[str, ...]) -> str:
    """The stable identity of a certificate: its main name and a digest of all its names
    (a change of names is a different certificate; a renewal is the same one)."""
    digest = hashlib.sha256(",".join(sorted(names)).encode()).hexdigest()[:12]
    return f"{names[0]}-{digest}"


def new_private_key() -> bytes:
    """A fresh ECDSA P-256 key, PKCS#8 PEM (unencrypted: the storage protects it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True, slots=True)
class StoredCertificate:
    """One certificate and its key. `chain_pem` is the leaf followed by its issuers."""

    names: tuple[str, ...]
    chain_pem: bytes
    key_pem: bytes
    not_before: float  # UNIX seconds
    not_after: float
    serial: str  # lower-case hex, as CAs and `openssl x509 -serial` show it
    issued_at: float
    revoked_at: float | None = None

    @property
    def id(self) -> str:
        return certificate_id(self.names)

    @classmethod
    def from_pem(
        cls, names: tuple[str, ...], chain_pem: bytes, key_pem: bytes, issued_at: float
    ) -> StoredCertificate:
        leaf = x509.load_pem_x509_certificate(chain_pem)
        return cls(
            names=names,
            chain_pem=chain_pem,
            key_pem=key_pem,
            not_before=leaf.not_valid_before_utc.timestamp(),
            not_after=leaf.not_valid_after_utc.timestamp(),
            serial=format(leaf.serial_number, "x"),
            issued_at=issued_at,
        )

    def renew_after(self, share: float) -> float:
        """When `share` of the lifetime has passed (2/3: Let's Encrypt's 90 days -> day 60)."""
        return self.not_before + (self.not_after - self.not_before) * share

    def due(self, share: float, now: float | None = None) -> bool:
        """Whether it must be replaced: revoked, or past its renewal point."""
        now = time.time() if now is None else now
        return self.revoked_at is not None or now >= self.renew_after(share)

    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.chain_pem)

    def revoked(self, at: float) -> StoredCertificate:
        return replace(self, revoked_at=at)
