"""The `auth_mtls` policy: a verified client certificate becomes `exchange.identity`.

The listener's handshake already verified the certificate against its `client_ca`
(server/tls_connection.py reads it once per connection); this policy only turns its
subject into a `Principal` (cached per certificate), so `authorize`, rate limits by user
and the identity headers upstream treat it like a token's or an API key's caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from potok.errors import GatewayError
from potok.identity import audit as events
from potok.identity.errors import Forbidden
from potok.identity.principal import Principal
from potok.policies.auth_mtls.config import AuthMtlsConfig
from potok.policies.base import BuildContext, Policy, Stage

if TYPE_CHECKING:
    from potok.exchange import Exchange
    from potok.tls.session import ClientCertificate

_CACHE_LIMIT = 1024


class ClientCertificateRequired(GatewayError):
    status = 401
    title = "Unauthorized"


def build(config: AuthMtlsConfig | None, context: BuildContext) -> Policy | None:
    if config is None or config.auth == "none":
        return None
    identity = context.identity
    audit = identity.audit if identity is not None else None
    headers = identity.headers if identity is not None else None
    required = config.auth == "required"
    allowed = frozenset(config.subjects)
    route = context.route_name
    cache: dict[ClientCertificate, Principal] = {}

    def principal_of(certificate: ClientCertificate) -> Principal:
        principal = cache.get(certificate)
        if principal is None:
            subject = certificate.subject
            roles = frozenset(config.roles.get(subject, ()))
            scopes = frozenset(config.scopes.get(subject, ()))
            principal = Principal(
                subject=subject,
                kind="client_certificate",
                roles=roles,
                scopes=scopes,
                issuer=certificate.issuer,
                upstream_lines=(
                    headers.build(subject, roles, scopes, None) if headers is not None else b""
                ),
            )
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[certificate] = principal
        return principal

    def deny(exchange: Exchange, error: GatewayError, reason: str, actor: str | None) -> NoReturn:
        if audit is not None:
            audit.record(
                events.REQUEST_DENIED,
                str(error.status),
                actor=actor,
                ip=exchange.client_ip,
                route=route,
                request_id=exchange.request_id,
                detail={"policy": "auth_mtls", "reason": reason},
            )
        raise error

    def check(exchange: Exchange) -> None:
        tls = exchange.connection.tls
        certificate = tls.client_certificate if tls is not None else None
        if certificate is None:
            if required:
                deny(
                    exchange,
                    ClientCertificateRequired("a verified TLS client certificate is required"),
                    "no client certificate",
                    None,
                )
            return
        principal = principal_of(certificate)
        if allowed and principal.subject not in allowed:
            deny(
                exchange,
                Forbidden("this client certificate is not allowed here"),
                "subject not allowed",
                principal.subject,
            )
        exchange.identity = principal

    return Policy(name="auth_mtls", stage=Stage.AUTHENTICATE, on_request=check)
