"""Certificate files re-read without a restart: when they change (polled) and on SIGHUP.

Polling looks at each file's (inode, size, mtime) off the event loop; a changed pair is
loaded off the loop too and installed only if it loads. A bad file (half-written, a key
that does not match) keeps the certificate that was served and is logged; the next
change tries again, so a certificate and key written one after the other end up served.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

import structlog

from potok.tls.config import CertificateConfig, ListenerTlsConfig
from potok.tls.context import CertificateError, TlsSettings
from potok.tls.store import CertificateStore

log = structlog.get_logger("potok.tls")

Stamp = tuple[int, int, int] | None


def _stamp(path: str) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class _Watched:
    config: CertificateConfig
    stamps: tuple[Stamp, Stamp] = (None, None)

    def current(self) -> tuple[Stamp, Stamp]:
        return (_stamp(self.config.cert), _stamp(self.config.key))


@dataclass
class CertificateFiles:
    """The files of one listener's `tls.certificates` and the store they feed."""

    store: CertificateStore
    watched: list[_Watched] = field(default_factory=list)
    interval: float = 5.0

    @classmethod
    def load(cls, config: ListenerTlsConfig, listener: str, http2: bool = True) -> CertificateFiles:
        """Build the listener's store from its files (blocking; at start-up).
        CertificateError names the file that cannot be used."""
        store = CertificateStore(TlsSettings.from_config(config, http2), listener)
        files = cls(store, [_Watched(c) for c in config.certificates], config.reload_interval)
        for watched in files.watched:
            watched.stamps = watched.current()
            _load(store, watched.config)
        return files

    def reload(self, *, force: bool) -> int:
        """Re-load the pairs whose files changed (all with `force`); blocking. Returns how
        many were replaced; a pair that fails to load is logged and keeps serving the old."""
        replaced = 0
        for watched in self.watched:
            stamps = watched.current()
            if not force and stamps == watched.stamps:
                continue
            try:
                names = _load(self.store, watched.config)
            except CertificateError as exc:
                log.error(
                    "certificate reload failed; keeping the one served",
                    listener=self.store.listener,
                    error=str(exc),
                )
                watched.stamps = stamps  # tried once per change, not once per poll
                continue
            watched.stamps = stamps
            replaced += 1
            log.info(
                "certificate reloaded",
                listener=self.store.listener,
                file=watched.config.cert,
                names=list(names),
            )
        return replaced

    async def watch(self) -> None:
        """Poll until cancelled (`reload_interval` 0: never)."""
        if self.interval <= 0:
            return
        while True:
            await asyncio.sleep(self.interval)
            await asyncio.to_thread(self.reload, force=False)


def _load(store: CertificateStore, config: CertificateConfig) -> tuple[str, ...]:
    return store.load_files(config.cert, config.key, config.names, default=config.default)
