"""The `auth_api_key` policy: a key from `potok keys create`, checked against the mirror."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from potok.identity import audit as events
from potok.identity.api_keys import parse_key
from potok.identity.errors import MissingCredentials, Unauthorized
from potok.policies.auth_api_key.config import AuthApiKeyConfig
from potok.policies.base import BuildContext, Policy, Stage

if TYPE_CHECKING:
    from potok.exchange import Exchange


def build(config: AuthApiKeyConfig | None, context: BuildContext) -> Policy | None:
    if config is None or config.auth == "none":
        return None
    identity = context.identity
    if identity is None or identity.api_keys is None:
        raise ValueError("auth_api_key needs the identity services with a database")
    mirror = identity.api_keys
    audit = identity.audit
    header = config.header.lower().encode()
    required = config.auth == "required"
    route = context.route_name

    def deny(
        exchange: Exchange,
        error: Unauthorized | MissingCredentials,
        reason: str,
        actor: str | None = None,
    ) -> NoReturn:
        audit.record(
            events.REQUEST_DENIED,
            "401",
            actor=actor,
            ip=exchange.client_ip,
            route=route,
            request_id=exchange.request_id,
            detail={"policy": "auth_api_key", "reason": reason},
        )
        raise error

    def check(exchange: Exchange) -> None:
        presented: bytes | None = None
        for name, value in exchange.headers:
            if name.lower() == header:
                presented = value
                break
        if presented is None:
            if required and exchange.identity is None:
                deny(exchange, MissingCredentials("an API key is required"), "no key")
            return
        key = presented.strip().decode("latin-1")
        principal = mirror.authenticate(key)
        if principal is None:
            # A well-formed key names its id: the audit record says which key was refused.
            parsed = parse_key(key)
            actor = f"key:{parsed[0]}" if parsed is not None else None
            deny(
                exchange, Unauthorized("invalid API key"), "invalid, revoked or expired key", actor
            )
        exchange.identity = principal

    return Policy(name="auth_api_key", stage=Stage.AUTHENTICATE, on_request=check)
