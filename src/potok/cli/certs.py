"""`potok certs list|renew|revoke`: the certificates the ACME layer stores.

`renew` and `revoke` talk to the CA from this process, under the same order lock as
the gateways. HTTP-01 answers go to the shared storage, where every running gateway
finds them, so no port is opened here. Running gateways install a replacement at
their next check (`acme.check_interval`), or at once on SIGHUP.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from potok.cli.common import add_config_argument, load_or_report
from potok.cli.identity_store import sqlite_file
from potok.config.models import GatewayConfig

if TYPE_CHECKING:  # the ACME client (requests, josepy) loads only when a command runs
    from potok.acme.certificate import StoredCertificate
    from potok.acme.manager import CertificateManager
    from potok.acme.store import CertificateStore

REASONS = {"unspecified": 0, "key-compromise": 1, "superseded": 4, "cessation": 5}


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "certs", help="list, renew or revoke the ACME certificates (acme: section)"
    )
    actions = parser.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the stored certificates")
    add_config_argument(listing)
    listing.set_defaults(handler=lambda args: _run(args, _list))
    renew = actions.add_parser("renew", help="order a new certificate for NAME now")
    add_config_argument(renew)
    renew.add_argument("name", help="a name of the certificate (any of its names)")
    renew.set_defaults(handler=lambda args: _run(args, _renew))
    revoke = actions.add_parser(
        "revoke", help="revoke NAME's certificate at the CA; gateways then order a new one"
    )
    add_config_argument(revoke)
    revoke.add_argument("name", help="a name of the certificate (any of its names)")
    revoke.add_argument("--reason", choices=sorted(REASONS), default="unspecified")
    revoke.add_argument(
        "--replace", action="store_true", help="also order the replacement from here, now"
    )
    revoke.set_defaults(handler=lambda args: _run(args, _revoke))


Action = Callable[[argparse.Namespace, GatewayConfig, "CertificateStore"], Awaitable[int]]


def _run(args: argparse.Namespace, action: Action) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 1
    if config.acme is None:
        print(f"potok: {args.config} has no acme: section", file=sys.stderr)
        return 1
    missing = _missing_storage(config)
    if missing is not None:  # a typo in a path must not look like an empty storage
        print(f"potok: {missing}; check --config", file=sys.stderr)
        return 1

    from potok.acme.service import certificate_store  # noqa: PLC0415

    async def main() -> int:
        store = certificate_store(config)
        await store.open()
        try:
            return await action(args, config, store)
        finally:
            await store.close()

    return asyncio.run(main())


def _missing_storage(config: GatewayConfig) -> str | None:
    assert config.acme is not None
    if config.acme.storage == "directory":
        path = Path(config.acme.path or "")
        return None if path.is_dir() else f"no certificate storage at {path}"
    file = sqlite_file(config.database.url)
    return f"no database at {file}" if file is not None and not file.exists() else None


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def _list(args: argparse.Namespace, config: GatewayConfig, store: CertificateStore) -> int:
    assert config.acme is not None
    stored = await store.all()
    if not stored:
        print("no certificates stored")
        return 0
    print(f"{'NAMES':40} {'SERIAL':36} {'NOT AFTER':21} {'RENEW AFTER':21} STATUS")
    for cert in stored:
        status = "revoked" if cert.revoked_at is not None else "valid"
        print(
            f"{','.join(cert.names):40} {cert.serial:36} {_when(cert.not_after):21} "
            f"{_when(cert.renew_after(config.acme.renew_at)):21} {status}"
        )
    return 0


async def _find(store: CertificateStore, name: str) -> StoredCertificate | None:
    wanted = name.lower()
    for cert in await store.all():
        if wanted in cert.names:
            return cert
    print(f"potok: no stored certificate for {name}", file=sys.stderr)
    return None


def _manager(config: GatewayConfig, store: CertificateStore) -> CertificateManager:
    from potok.acme.manager import CertificateManager  # noqa: PLC0415
    from potok.acme.service import order_lock  # noqa: PLC0415

    assert config.acme is not None
    manager = CertificateManager(config.acme, store)
    manager.use_lock(order_lock(config, store))
    return manager


async def _renew(args: argparse.Namespace, config: GatewayConfig, store: CertificateStore) -> int:
    cert = await _find(store, args.name)
    if cert is None:
        return 1
    manager = _manager(config, store)
    try:
        new = await manager.obtain(cert.names, force=True)
    finally:
        await manager.stop()
    print(f"renewed {','.join(new.names)}: serial {new.serial}, not after {_when(new.not_after)}")
    return 0


async def _revoke(args: argparse.Namespace, config: GatewayConfig, store: CertificateStore) -> int:
    cert = await _find(store, args.name)
    if cert is None:
        return 1
    if cert.revoked_at is not None and not args.replace:
        print(f"potok: {args.name}'s certificate {cert.serial} is already revoked", file=sys.stderr)
        return 1
    manager = _manager(config, store)
    try:
        if cert.revoked_at is None:
            await manager.revoke(cert, REASONS[args.reason])
            print(f"revoked {','.join(cert.names)}: serial {cert.serial}")
        if args.replace:
            new = await manager.obtain(cert.names)
            print(f"replaced by serial {new.serial}, not after {_when(new.not_after)}")
    finally:
        await manager.stop()
    return 0
