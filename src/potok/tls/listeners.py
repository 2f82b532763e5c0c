"""The certificate stores of a gateway's https listeners, by listener position."""

from __future__ import annotations

from potok.config.listeners import ListenerConfig
from potok.tls.context import CertificateError
from potok.tls.watcher import CertificateFiles

Certificates = dict[int, CertificateFiles]
"""Listener index (in `GatewayConfig.listeners()`) -> its certificates."""


def load_certificates(listeners: tuple[ListenerConfig, ...], http2: bool = True) -> Certificates:
    """Load every https listener's certificate files (blocking). CertificateError names
    the listener and the file that cannot be used. ALPN offers h2 only with `http2`."""
    loaded: Certificates = {}
    for index, listener in enumerate(listeners):
        if listener.tls is None:
            continue
        try:
            loaded[index] = CertificateFiles.load(listener.tls, listener.label, http2)
        except CertificateError as exc:
            raise CertificateError(f"server.listeners[{index}] ({listener.label}): {exc}") from None
    return loaded
