"""The `admin:` block: where the admin API answers and who may call it."""

from __future__ import annotations

from pydantic import Field

from potok.config.base import ConfigModel
from potok.config.units import Cidr

LOOPBACK = ("127.0.0.0/8", "::1/128")


class AdminConfig(ConfigModel):
    """The admin API (/api/v1/admin): on the metrics listener, and the public port if `public`."""

    enabled: bool = Field(True, description="Serve the admin API at all.")
    public: bool = Field(
        False,
        description=(
            "Also serve it on the public port (server.port); there every call needs "
            "credentials with `role` (a token-service bearer token or an API key)."
        ),
    )
    allow_from: tuple[Cidr, ...] = Field(
        LOOPBACK,
        description=(
            "Client addresses that may reach the admin API at all, on either port; others get "
            "403 whatever they present. Loopback only by default."
        ),
    )
    open_on_listener: bool = Field(
        True,
        description=(
            "On the metrics listener, callers from `allow_from` need no credentials (like a "
            "local admin port); off: credentials with `role` there too."
        ),
    )
    role: str = Field(
        "admin",
        min_length=1,
        max_length=64,
        description="The role a user or API key needs to call the admin API.",
    )
    reload_history: int = Field(
        20,
        ge=1,
        le=1000,
        description="Reloads each worker remembers for /admin/reloads (read at start).",
    )
