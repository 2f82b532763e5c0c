"""The `security_headers` policy: HSTS, nosniff, frame options, referrer policy, CSP.

Runs on every answer of the route, the gateway's own refusals included. On the own
API route the CSP is the one its pages (Swagger UI) need, whatever is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.policies.base import BuildContext, Headers, Policy, Stage
from potok.policies.security_headers.config import SecurityHeadersConfig
from potok.routing.endpoints import API_ROUTE_NAME

if TYPE_CHECKING:
    from potok.exchange import Exchange

# Swagger UI as FastAPI serves it: its script and style from jsDelivr, an inline
# start-up script, the FastAPI favicon. Nothing may frame the gateway's pages.
# The gateway's own pages (Swagger UI, served from the installed bundle by api/docs.py):
# scripts only from the gateway itself; inline style attributes are set by Swagger UI's
# React components. No CDN.
OWN_PAGES_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)

_UPSTREAM_SOFTWARE = frozenset({b"server", b"x-powered-by"})


def security_headers(config: SecurityHeadersConfig, own_pages: bool) -> list[tuple[bytes, bytes]]:
    """The (name, value) pairs the config asks for."""
    out: list[tuple[bytes, bytes]] = []
    if config.hsts is not None:
        value = f"max-age={config.hsts.max_age}"
        if config.hsts.include_subdomains:
            value += "; includeSubDomains"
        if config.hsts.preload:
            value += "; preload"
        out.append((b"Strict-Transport-Security", value.encode()))
    if config.content_type_options:
        out.append((b"X-Content-Type-Options", b"nosniff"))
    if config.frame_options is not None:
        out.append((b"X-Frame-Options", config.frame_options.encode()))
    if config.referrer_policy is not None:
        out.append((b"Referrer-Policy", config.referrer_policy.encode()))
    csp = OWN_PAGES_CSP if own_pages else config.content_security_policy
    if csp is not None:
        out.append((b"Content-Security-Policy", csp.encode()))
    return out


def build(config: SecurityHeadersConfig | None, context: BuildContext) -> Policy | None:
    if config is None:
        return None
    secure = security_headers(config, context.route_name == API_ROUTE_NAME)
    # HSTS only on answers that went out over https (RFC 6797 7.2: a browser ignores it on
    # plain http, and a plain answer announcing it is a misconfiguration): a TLS listener,
    # or a trusted proxy in front that says it terminated TLS (X-Forwarded-Proto).
    plain = [pair for pair in secure if pair[0] != b"Strict-Transport-Security"]
    names = frozenset(name.lower() for name, _ in secure)
    drop = (_UPSTREAM_SOFTWARE if config.hide_upstream_server else frozenset()) | (
        names if config.override else frozenset()
    )

    def add(exchange: Exchange, headers: Headers) -> Headers:
        added = secure if exchange.forwarded_proto == b"https" else plain
        if drop:
            headers = [pair for pair in headers if pair[0].lower() not in drop]
        if config.override:
            headers.extend(added)
            return headers
        present = {name.lower() for name, _ in headers} & names
        headers.extend(pair for pair in added if pair[0].lower() not in present)
        return headers

    return Policy(name="security_headers", stage=Stage.EDGE, on_response=add)


_OWN_PAGES_CSP_HEADER = (b"Content-Security-Policy", OWN_PAGES_CSP.encode())


def own_pages_csp() -> Policy:
    """The own API's CSP where no `security_headers` policy is configured: the gateway's
    pages (Swagger UI at /api/docs) always carry one."""

    def add(exchange: Exchange, headers: Headers) -> Headers:
        if not any(name.lower() == b"content-security-policy" for name, _ in headers):
            headers.append(_OWN_PAGES_CSP_HEADER)
        return headers

    return Policy(name="own_pages_csp", stage=Stage.EDGE, on_response=add)
