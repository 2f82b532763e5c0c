"""The demo's identity: a signing secret, a fresh database, a demo user with a random password."""

from __future__ import annotations

import asyncio
import atexit
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from potok.config.models import GatewayConfig
from potok.identity.database import Database
from potok.identity.passwords import PasswordHasher
from potok.identity.schema import migrate
from potok.identity.users import UserError, UserStore

DEMO_USER = "demo"
DEMO_ORG = "acme"


def demo_identity_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables the demo config reads, for those the caller has not set: a random secret and
    a database in a temporary directory removed at exit (each demo run starts empty)."""
    current = environ or {}
    env: dict[str, str] = {}
    if not current.get("POTOK_DEMO_JWT_SECRET"):
        env["POTOK_DEMO_JWT_SECRET"] = secrets.token_hex(32)
    if not current.get("POTOK_DEMO_DB"):
        directory = tempfile.mkdtemp(prefix="potok-demo-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        env["POTOK_DEMO_DB"] = str(Path(directory) / "potok-demo.db")
    if not current.get("POTOK_DEMO_WEBHOOKS_DB"):
        # Beside the identity database: the outbox of webhook deliveries, empty per run too.
        database = env.get("POTOK_DEMO_DB") or current["POTOK_DEMO_DB"]
        env["POTOK_DEMO_WEBHOOKS_DB"] = str(Path(database).parent / "potok-demo-webhooks.db")
    return env


def create_demo_user(config: GatewayConfig) -> str:
    """Create (or reset) the demo user; returns its new random password."""
    password = secrets.token_urlsafe(12)

    async def main() -> None:
        database = Database(config.database)
        try:
            await migrate(database)
            hasher = PasswordHasher(config.auth.passwords)
            password_hash = await hasher.hash(password)
            users = UserStore(database)
            try:
                await users.add(DEMO_USER, password_hash, ("admin",), DEMO_ORG)
            except UserError:
                await users.update(DEMO_USER, password_hash=password_hash, disabled=False)
        finally:
            await database.close()

    asyncio.run(main())
    return password
