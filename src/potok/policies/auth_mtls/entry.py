"""The `auth_mtls` policy's registry entry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.policies.auth_mtls.config import AuthMtlsConfig
from potok.policies.auth_mtls.policy import build
from potok.policies.base import Stage
from potok.policies.entry import PolicyEntry, PolicyPlace, Problem

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig


def problems(config: AuthMtlsConfig, place: PolicyPlace, gateway: GatewayConfig) -> list[Problem]:
    """Without a listener that asks for client certificates nobody could pass."""
    if config.auth == "none":
        return []
    asking = [
        listener
        for listener in gateway.listeners()
        if listener.tls is not None and listener.tls.client_auth != "none"
    ]
    if asking:
        return []
    return [
        (
            f"{place.path}.auth",
            "no listener asks for client certificates: set server.listeners[].tls.client_auth "
            "(and client_ca) on an https listener",
        )
    ]


# First of the authentication policies: a token or key checked after it may still replace
# the identity; with auth_jwt/auth_api_key 'required' a certificate alone then suffices.
ENTRY = PolicyEntry(
    name="auth_mtls",
    config=AuthMtlsConfig,
    build=build,
    stage=Stage.AUTHENTICATE,
    rank=5,
    description="Client-certificate (mTLS) authentication on https listeners.",
    check=problems,
)
