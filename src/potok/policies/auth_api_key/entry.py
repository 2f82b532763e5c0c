"""The `auth_api_key` policy's registry entry."""

from __future__ import annotations

from potok.policies.auth_api_key.config import AuthApiKeyConfig
from potok.policies.auth_api_key.policy import build
from potok.policies.base import Stage
from potok.policies.entry import PolicyEntry


def consumed(config: AuthApiKeyConfig) -> tuple[str, ...]:
    """The key's header stays at the gateway unless `forward_key` (or no key is read)."""
    return (config.header,) if config.auth != "none" and not config.forward_key else ()


# Not on the own API: its endpoints authenticate their callers themselves.
ENTRY = PolicyEntry(
    name="auth_api_key",
    config=AuthApiKeyConfig,
    build=build,
    stage=Stage.AUTHENTICATE,
    rank=20,
    description="API key authentication.",
    consumes=consumed,
)
