"""The certificates of one listener, chosen per handshake by SNI, replaceable while serving.

The listener's server is created with `front`, a context without a certificate whose SNI
callback hands each handshake the context of the certificate for the asked name (exact
first, then a one-label wildcard, then the default). Replacing a certificate swaps a
dictionary entry: handshakes that start afterwards get the new one, connections already
open keep the context they were made with.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from potok.tls.context import (
    CertificateError,
    TlsSettings,
    base_context,
    context_from_files,
    context_from_pem,
)
from potok.tls.names import certificate_names, check_name, expiry_warning

log = structlog.get_logger("potok.tls")


@dataclass(frozen=True, slots=True)
class _Installed:
    names: tuple[str, ...]
    context: ssl.SSLContext
    default: bool


class CertificateStore:
    """The certificates of one https listener (see the module docstring)."""

    def __init__(self, settings: TlsSettings, listener: str = "") -> None:
        self.settings = settings
        self.listener = listener
        self.front = base_context(settings)
        self.front.sni_callback = self._choose
        self._installed: dict[str, _Installed] = {}
        self._exact: dict[str, ssl.SSLContext] = {}
        self._wildcard: dict[str, ssl.SSLContext] = {}  # "example.com" for "*.example.com"
        self._default: ssl.SSLContext | None = None

    # The API certificate sources call ----------------------------------------

    def install(
        self,
        names: Sequence[str],
        chain_pem: bytes,
        key_pem: bytes,
        *,
        default: bool = False,
    ) -> None:
        """Serve `chain_pem` (leaf first) with `key_pem` for `names` from the next handshake
        on; replaces what was installed for the same names. Blocking (it parses keys): call
        it off the event loop. CertificateError if the pair is unusable."""
        wanted = tuple(check_name(name) for name in names)
        if not wanted:
            raise CertificateError("install: no names given")
        context = context_from_pem(self.settings, chain_pem, key_pem)
        self.install_context("names:" + ",".join(sorted(wanted)), wanted, context, default=default)

    def load_files(
        self, cert: str, key: str, names: tuple[str, ...] = (), *, default: bool = False
    ) -> tuple[str, ...]:
        """Serve the PEM files `cert` and `key` (a reload of the same files replaces them);
        names: given, or the certificate's own DNS names. Blocking. Returns the names."""
        context = context_from_files(self.settings, cert, key)
        # No DNS names (an IP-only certificate): served only as the default.
        chosen = tuple(check_name(n) for n in names) or certificate_names(cert)
        warning = expiry_warning(cert)
        if warning is not None:
            log.warning("certificate expired", file=cert, listener=self.listener, detail=warning)
        self.install_context("file:" + cert, chosen, context, default=default)
        return chosen

    def install_context(
        self, slot: str, names: tuple[str, ...], context: ssl.SSLContext, *, default: bool = False
    ) -> None:
        """Put `context` in `slot` (one per source: a file pair, a set of names)."""
        self._installed[slot] = _Installed(names, context, default)
        self._rebuild()

    def remove(self, slot: str) -> None:
        self._installed.pop(slot, None)
        self._rebuild()

    # Lookup ------------------------------------------------------------------

    def lookup(self, server_name: str | None) -> ssl.SSLContext | None:
        """The context for a name the client asked for (None: no SNI)."""
        if server_name:
            name = server_name.lower().rstrip(".")
            context = self._exact.get(name)
            if context is not None:
                return context
            context = self._wildcard.get(name.partition(".")[2])
            if context is not None:
                return context
        return self._default

    @property
    def empty(self) -> bool:
        return not self._installed

    def _choose(
        self, ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        context = self.lookup(server_name)
        if context is None:
            # Nothing to serve: the handshake ends with an alert instead of a certificate.
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        ssl_object.context = context
        return None

    def _rebuild(self) -> None:
        # Built aside and swapped by assignment: a handshake never sees half a table.
        exact: dict[str, ssl.SSLContext] = {}
        wildcard: dict[str, ssl.SSLContext] = {}
        default: ssl.SSLContext | None = None
        first: ssl.SSLContext | None = None
        for installed in self._installed.values():  # later installs win a shared name
            first = first or installed.context
            if installed.default:
                default = installed.context
            for name in installed.names:
                if name.startswith("*."):
                    wildcard[name[2:]] = installed.context
                else:
                    exact[name] = installed.context
        self._exact, self._wildcard = exact, wildcard
        self._default = default or first
