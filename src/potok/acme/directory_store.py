"""The `directory` storage: PEM files an operator can read, written atomically.

    <path>/accounts/<digest of directory URL>.json   account key and URL (0600)
    <path>/certificates/<id>/<serial>/fullchain.pem  leaf + issuers (0644)
    <path>/certificates/<id>/<serial>/privkey.pem    its key (0600)
    <path>/certificates/<id>/<serial>/meta.json      names, issue and revocation times
    <path>/certificates/<id>/current -> <serial>     swapped in one rename
    <path>/challenges/<token>.json                   pending HTTP-01 answers
    <path>/lock                                      the order lock (flock)

A reader follows `current`, so it never sees a new chain with an old key. Every file
goes through write-to-temp, fsync, rename. The folder itself is made 0700. Files are
read and written in a worker thread: the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from potok.acme.certificate import StoredCertificate
from potok.acme.lock import FileLock, OrderLock
from potok.acme.store import StoredAccount

KEEP_VERSIONS = 2  # the current certificate and the one before it (a rollback by hand)


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """`data` at `path` whole or not at all, with `mode` from the first byte on."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)


class DirectoryStore:
    def __init__(self, path: str | Path) -> None:
        self.root = Path(path)
        self.accounts = self.root / "accounts"
        self.certificates = self.root / "certificates"
        self.challenges = self.root / "challenges"

    async def open(self) -> None:
        await asyncio.to_thread(self._make_folders)

    def _make_folders(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # keys inside: nobody else lists or reads them
        for folder in (self.accounts, self.certificates, self.challenges):
            folder.mkdir(mode=0o700, exist_ok=True)

    async def close(self) -> None:
        return None

    def order_lock(self) -> OrderLock:
        return FileLock(self.root / "lock")

    # -- account ----------------------------------------------------------------------
    def _account_file(self, directory_url: str) -> Path:
        return self.accounts / f"{hashlib.sha256(directory_url.encode()).hexdigest()[:16]}.json"

    async def load_account(self, directory_url: str) -> StoredAccount | None:
        return await asyncio.to_thread(self._load_account, directory_url)

    def _load_account(self, directory_url: str) -> StoredAccount | None:
        try:
            data = json.loads(self._account_file(directory_url).read_bytes())
        except FileNotFoundError:
            return None
        return StoredAccount(data["directory_url"], data["key"], data.get("uri"))

    async def save_account(self, account: StoredAccount) -> None:
        data = {"directory_url": account.directory_url, "key": account.key_json, "uri": account.uri}
        path = self._account_file(account.directory_url)
        await asyncio.to_thread(write_atomic, path, json.dumps(data).encode(), 0o600)

    # -- certificates -------------------------------------------------------------------
    async def load(self, certificate_id: str) -> StoredCertificate | None:
        return await asyncio.to_thread(self._load, self.certificates / certificate_id)

    def _load(self, folder: Path) -> StoredCertificate | None:
        current = folder / "current"
        try:
            meta = json.loads((current / "meta.json").read_bytes())
            chain = (current / "fullchain.pem").read_bytes()
            key = (current / "privkey.pem").read_bytes()
        except FileNotFoundError:
            return None
        stored = StoredCertificate.from_pem(tuple(meta["names"]), chain, key, meta["issued_at"])
        revoked = meta.get("revoked_at")
        return stored.revoked(revoked) if revoked is not None else stored

    async def save(self, certificate: StoredCertificate) -> None:
        await asyncio.to_thread(self._save, certificate)

    def _save(self, certificate: StoredCertificate) -> None:
        folder = self.certificates / certificate.id
        version = folder / certificate.serial
        version.mkdir(mode=0o700, parents=True, exist_ok=True)
        meta = {
            "names": list(certificate.names),
            "issued_at": certificate.issued_at,
            "revoked_at": certificate.revoked_at,
            "not_after": certificate.not_after,
        }
        write_atomic(version / "privkey.pem", certificate.key_pem, 0o600)
        write_atomic(version / "fullchain.pem", certificate.chain_pem, 0o644)
        write_atomic(version / "meta.json", json.dumps(meta).encode(), 0o644)
        link = folder / f".current.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(certificate.serial)
        os.replace(link, folder / "current")  # the switch: one rename
        self._prune(folder, certificate.serial)

    def _prune(self, folder: Path, current: str) -> None:
        versions = sorted(
            (p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        kept = [p for p in versions if p.name == current]
        kept += [p for p in versions if p.name != current][: KEEP_VERSIONS - 1]
        for old in versions:
            if old not in kept:
                shutil.rmtree(old, ignore_errors=True)

    async def all(self) -> list[StoredCertificate]:
        return await asyncio.to_thread(self._all)

    def _all(self) -> list[StoredCertificate]:
        found = []
        for folder in sorted(self.certificates.iterdir()):
            stored = self._load(folder)
            if stored is not None:
                found.append(stored)
        return found

    # -- challenges ---------------------------------------------------------------------
    def _challenge_file(self, token: str) -> Path:
        return self.challenges / f"{token}.json"  # tokens are base64url: no path tricks

    async def publish_challenge(self, token: str, key_authorization: str, expires: float) -> None:
        data = json.dumps({"key_authorization": key_authorization, "expires": expires}).encode()
        await asyncio.to_thread(write_atomic, self._challenge_file(token), data, 0o644)

    async def withdraw_challenge(self, token: str) -> None:
        await asyncio.to_thread(self._challenge_file(token).unlink, missing_ok=True)

    async def challenge(self, token: str) -> str | None:
        return await asyncio.to_thread(self._challenge, token)

    def _challenge(self, token: str) -> str | None:
        try:
            data = json.loads(self._challenge_file(token).read_bytes())
        except FileNotFoundError:
            return None
        if data["expires"] < time.time():
            return None
        answer: str = data["key_authorization"]
        return answer
