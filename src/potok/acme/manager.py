"""Obtaining, renewing and replacing certificates, and handing them to the TLS layer.

One `CertificateManager` per process. Its loop looks at every configured certificate:
what storage holds is installed (another instance may have renewed it); what is
missing, past two thirds of its life, or revoked is ordered — under the storage's lock,
after looking again, so a cluster orders each certificate once. A failed order is
retried with doubling waits (jittered). The ACME client is blocking (requests): each
step runs in a worker thread, so the event loop keeps serving throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import structlog
from acme import crypto_util

from potok.acme.certificate import StoredCertificate, certificate_id, new_private_key
from potok.acme.client import AcmeClient, load_account_key, new_account_key
from potok.acme.config import AcmeConfig
from potok.acme.lock import OrderLock, holding
from potok.acme.responder import ChallengeResponder
from potok.acme.sink import CertificateSink
from potok.acme.store import CertificateStore, StoredAccount

if TYPE_CHECKING:
    from potok.observability.metrics import MetricsRegistry

log = structlog.get_logger("potok.acme")

NETWORK_TIMEOUT = 30.0  # one request to the CA
CHALLENGE_GRACE = 60.0  # a published answer outlives the order's timeout by this much


@dataclass
class _Slot:
    """What the manager knows of one configured certificate."""

    names: tuple[str, ...]
    installed: str | None = None  # serial handed to the sinks
    failures: int = 0
    retry_at: float = 0.0

    @property
    def id(self) -> str:
        return certificate_id(self.names)


class CertificateManager:
    def __init__(
        self,
        config: AcmeConfig,
        store: CertificateStore,
        responder: ChallengeResponder | None = None,
        sinks: Sequence[CertificateSink] = (),
        *,
        clock: Callable[[], float] = time.time,
        metrics: MetricsRegistry | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.responder = responder
        self.sinks = list(sinks)
        self.clock = clock
        self.slots = [_Slot(names) for names in config.domains]
        self.orders = 0  # orders this manager completed (tests, logs)
        self._lock: OrderLock | None = None
        self._acme: AcmeClient | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Labelled by the certificate's id (its main name and a digest): bounded by config.
        self._expiry = (
            metrics.gauge(
                "certificate_expiry_timestamp_seconds",
                "notAfter of the certificate each worker serves (UNIX time), by certificate.",
                ("certificate",),
                per_worker=True,
            )
            if metrics is not None
            else None
        )
        self._orders = (
            metrics.counter("certificate_orders_total", "ACME orders, by result.", ("result",))
            if metrics is not None
            else None
        )

    def use_lock(self, lock: OrderLock) -> None:
        """Order under `lock` instead of the storage's own (`acme.lock: redis`)."""
        self._lock = lock

    @property
    def lock(self) -> OrderLock:
        if self._lock is None:
            self._lock = self.store.order_lock()
        return self._lock

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Run the loop in the background (the store must be open)."""
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._acme is not None:
            await asyncio.to_thread(self._acme.close)
            self._acme = None
        if self._lock is not None:
            await self._lock.close()
            self._lock = None

    def wake(self) -> None:
        """Look at storage now rather than at the next check (SIGHUP, `potok certs`)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()  # before the pass: a wake during it starts another at once
            try:
                delay = await self.check()
            except Exception:  # a bug must not end renewals for the process's lifetime
                log.exception("certificate check failed")
                delay = self.config.retry.initial
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    # -- one pass -------------------------------------------------------------------------
    async def check(self) -> float:
        """Install what storage holds, order what is due; seconds until the next pass."""
        next_at = self.clock() + self.config.check_interval
        for slot in self.slots:
            next_at = min(next_at, await self._check(slot))
        return max(next_at - self.clock(), 0.0)

    async def _check(self, slot: _Slot) -> float:
        """One certificate; returns when it next needs looking at."""
        now = self.clock()
        try:
            stored = await self.store.load(slot.id)
        except Exception as exc:
            log.warning("certificate storage unavailable", certificate=slot.id, error=str(exc))
            return now + self.config.retry.initial
        if stored is not None:
            await self._install(slot, stored)
        if stored is not None and not stored.due(self.config.renew_at, now):
            return stored.renew_after(self.config.renew_at)
        if now < slot.retry_at:
            return slot.retry_at
        try:
            stored = await self.obtain(slot.names)
        except Exception as exc:
            if self._orders is not None:
                self._orders.inc(("failed",))
            slot.failures += 1
            wait = self._backoff(slot.failures)
            slot.retry_at = self.clock() + wait
            log.warning(
                "certificate order failed",
                certificate=slot.id,
                names=list(slot.names),
                error=f"{type(exc).__name__}: {exc}",
                attempt=slot.failures,
                retry_in_s=round(wait, 1),
            )
            return slot.retry_at
        slot.failures = 0
        slot.retry_at = 0.0
        await self._install(slot, stored)
        return stored.renew_after(self.config.renew_at)

    def _backoff(self, failures: int) -> float:
        retry = self.config.retry
        wait: float = min(retry.initial * 2.0 ** (failures - 1), retry.max)
        return wait * random.uniform(0.9, 1.1)  # a fleet that failed together spreads out

    async def _install(self, slot: _Slot, stored: StoredCertificate) -> None:
        """Hand `stored` to every sink, once per serial. A sink parses the key (blocking), so
        it runs in a worker thread; one that refuses is tried again at the next pass."""
        if stored.serial == slot.installed or stored.not_after <= self.clock():
            return
        names, chain, key = stored.names, stored.chain_pem, stored.key_pem
        for sink in self.sinks:
            try:
                await asyncio.to_thread(sink.install, names, chain, key)
            except Exception as exc:
                log.error("certificate not installed", certificate=stored.id, error=str(exc))
                return
        slot.installed = stored.serial
        if self._expiry is not None:
            self._expiry.set((stored.id,), stored.not_after)
        log.info(
            "certificate installed",
            certificate=stored.id,
            names=list(stored.names),
            serial=stored.serial,
            not_after=int(stored.not_after),
            revoked=stored.revoked_at is not None,
        )

    # -- ordering -------------------------------------------------------------------------
    async def obtain(self, names: tuple[str, ...], *, force: bool = False) -> StoredCertificate:
        """The certificate for `names`: ordered under the lock, unless storage has one that
        is not due (another instance ordered it meanwhile) and `force` is off."""
        async with holding(self.lock, wait=self.config.order_timeout * 2):
            stored = await self.store.load(certificate_id(names))
            if stored is not None and not force and not stored.due(self.config.renew_at):
                return stored
            return await self._order(names)

    async def _order(self, names: tuple[str, ...]) -> StoredCertificate:
        try:
            client = await self._client()
            key_pem, csr = await asyncio.to_thread(_key_and_csr, names)
            log.info("certificate ordering", names=list(names))
            order = await asyncio.to_thread(client.new_order, csr)
            pending = await asyncio.to_thread(client.http01, order)
            expires = self.clock() + self.config.order_timeout + CHALLENGE_GRACE
            published: list[str] = []
            try:
                for challenge in pending:
                    await self._publish(challenge.token, challenge.key_authorization, expires)
                    published.append(challenge.token)
                for challenge in pending:
                    await asyncio.to_thread(client.answer, challenge)
                chain = await asyncio.to_thread(client.finalize, order, self.config.order_timeout)
            finally:
                await self._withdraw(published)
        except Exception:
            self._acme = None  # start the next attempt with a fresh session and nonces
            raise
        stored = StoredCertificate.from_pem(names, chain, key_pem, self.clock())
        await self.store.save(stored)
        self.orders += 1
        if self._orders is not None:
            self._orders.inc(("issued",))
        log.info(
            "certificate issued",
            certificate=stored.id,
            names=list(names),
            serial=stored.serial,
            not_after=int(stored.not_after),
        )
        return stored

    async def _publish(self, token: str, key_authorization: str, expires: float) -> None:
        if self.responder is not None:
            self.responder.publish(token, key_authorization, expires)
        await self.store.publish_challenge(token, key_authorization, expires)

    async def _withdraw(self, tokens: list[str]) -> None:
        for token in tokens:
            if self.responder is not None:
                self.responder.withdraw(token)
            try:
                await self.store.withdraw_challenge(token)
            except Exception as exc:  # it expires on its own
                log.warning("could not withdraw a challenge answer", error=str(exc))

    async def _client(self) -> AcmeClient:
        """The ACME client with its account: the key is made once and stored (under the
        order lock, so a cluster makes one), the account registered at first use."""
        if self._acme is not None:
            return self._acme
        url = self.config.directory_url
        account = await self.store.load_account(url)
        if account is None:
            account = StoredAccount(url, await asyncio.to_thread(new_account_key), None)
            await self.store.save_account(account)
        key = load_account_key(account.key_json)
        # Each request to the CA gives up after NETWORK_TIMEOUT: a worker stopping waits
        # for a thread in flight at most that long (threads cannot be cancelled).
        timeout = min(NETWORK_TIMEOUT, self.config.order_timeout)
        client = await asyncio.to_thread(AcmeClient, url, key, self.config.ca_bundle, timeout)
        uri = await asyncio.to_thread(client.account, self.config.email)
        if uri != account.uri:
            await self.store.save_account(replace(account, uri=uri))
            log.info("acme account ready", directory=url, account=uri)
        self._acme = client
        return client

    # -- revocation -----------------------------------------------------------------------
    async def revoke(self, stored: StoredCertificate, reason: int = 0) -> StoredCertificate:
        """Revoke `stored` at the CA and mark it so in storage; the next pass (of every
        instance) orders its replacement."""
        async with holding(self.lock, wait=self.config.order_timeout * 2):
            client = await self._client()
            await asyncio.to_thread(client.revoke, stored.chain_pem, reason)
            revoked = stored.revoked(self.clock())
            await self.store.save(revoked)
        log.info("certificate revoked", certificate=stored.id, serial=stored.serial, reason=reason)
        return revoked


def _key_and_csr(names: tuple[str, ...]) -> tuple[bytes, bytes]:
    """A fresh ECDSA P-256 key and the CSR for `names` signed with it (CPU work: a thread)."""
    key_pem = new_private_key()
    return key_pem, crypto_util.make_csr(key_pem, list(names))
