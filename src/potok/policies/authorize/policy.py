"""The `authorize` policy: required roles/scopes and tenant isolation, after authentication.

Tenant isolation compares a path parameter with the caller's organisation (or
subject): a token for org A asking for /orgs/B/... gets 403 and the upstream
never sees the request, so no tenant can read another's data by changing an id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn
from urllib.parse import quote

from potok.identity import audit as events
from potok.identity.errors import Forbidden, MissingCredentials
from potok.identity.forwarding import header_value
from potok.policies.authorize.config import AuthorizeConfig, OrgInjectionConfig
from potok.policies.base import BuildContext, Policy, Stage

if TYPE_CHECKING:
    from collections.abc import Callable

    from potok.exchange import Exchange
    from potok.identity.principal import Principal


def _requirement(wanted: tuple[str, ...], match: str) -> Callable[[frozenset[str]], bool] | None:
    if not wanted:
        return None
    needed = frozenset(wanted)
    if match == "all":
        return needed.issubset
    return lambda held: not needed.isdisjoint(held)


def _injector(config: OrgInjectionConfig | None) -> Callable[[Exchange, str], None] | None:
    if config is None or (config.query is None and config.header is None):
        return None
    query = config.query.encode() if config.query else None
    header = config.header.encode() if config.header else None
    header_lower = header.lower() if header else None

    def inject(exchange: Exchange, org: str) -> None:
        value = quote(org, safe="").encode()
        if query is not None:
            prefix = query + b"="
            parts = [
                p
                for p in exchange.query[1:].split(b"&")
                if p and p != query and not p.startswith(prefix)
            ]
            parts.append(prefix + value)
            exchange.query = b"?" + b"&".join(parts)
        if header is not None:
            kept = [pair for pair in exchange.headers if pair[0].lower() != header_lower]
            kept.append((header, header_value(org)))
            exchange.headers = kept

    return inject


def build(config: AuthorizeConfig | None, context: BuildContext) -> Policy | None:
    if config is None:
        return None
    identity = context.identity
    audit = identity.audit if identity is not None else None
    roles_ok = _requirement(config.roles, config.roles_match)
    scopes_ok = _requirement(config.scopes, config.scopes_match)
    tenant = config.tenant
    param = tenant.param if tenant is not None else ""
    by_org = tenant is not None and tenant.claim == "org"
    injection = tenant.inject if tenant is not None else None
    if (
        injection is not None
        and injection.header is not None
        and identity is not None
        and injection.header.lower().encode() in identity.headers.strip
    ):
        # The identity headers carry the org already (clients' copies are dropped).
        injection = injection.model_copy(update={"header": None})
    inject = _injector(injection)
    authenticated = config.authenticated
    route = context.route_name

    def deny(exchange: Exchange, principal: Principal | None, status: int, reason: str) -> NoReturn:
        if audit is not None:
            audit.record(
                events.REQUEST_DENIED,
                str(status),
                actor=principal.subject if principal is not None else None,
                ip=exchange.client_ip,
                route=route,
                request_id=exchange.request_id,
                detail={"policy": "authorize", "reason": reason},
            )
        if status == 401:
            raise MissingCredentials()
        raise Forbidden(reason)

    def check(exchange: Exchange) -> None:
        principal: Principal | None = exchange.identity
        if principal is None:
            if authenticated:
                deny(exchange, None, 401, "authentication required")
            return
        if roles_ok is not None and not roles_ok(principal.roles):
            deny(exchange, principal, 403, "missing a required role")
        if scopes_ok is not None and not scopes_ok(principal.scopes):
            deny(exchange, principal, 403, "missing a required scope")
        if tenant is not None:
            params = exchange.params
            asked = params.get(param) if params is not None else None
            own = principal.org if by_org else principal.subject
            if asked is None or own is None or asked != own:
                deny(exchange, principal, 403, "this resource belongs to another tenant")
            if inject is not None and own is not None:
                inject(exchange, own)

    return Policy(name="authorize", stage=Stage.AUTHORIZE, on_request=check)
