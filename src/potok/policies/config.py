"""The `policies:` block of a route (or the global default): one optional field per policy,
and the own API's block (`api.policies`), which takes only the policies that make sense there.

Adding a policy adds its field here (and in `ApiPoliciesConfig` if the own API may use it)
and one line in `registry.py`.
"""

from __future__ import annotations

from pydantic import Field

from potok.config.base import ConfigModel
from potok.policies.auth_api_key.config import AuthApiKeyConfig
from potok.policies.auth_jwt.config import AuthJwtConfig
from potok.policies.authorize.config import AuthorizeConfig
from potok.policies.compress.config import CompressConfig
from potok.policies.concurrency_limit.config import ConcurrencyLimitConfig
from potok.policies.cors.config import CorsConfig
from potok.policies.headers.config import HeadersConfig
from potok.policies.ip_filter.config import IpFilterConfig
from potok.policies.rate_limit.config import RateLimitConfig
from potok.policies.request_size.config import RequestSizeConfig
from potok.policies.security_headers.config import SecurityHeadersConfig
from potok.policies.validate.config import ValidateConfig


class PoliciesConfig(ConfigModel):
    """Each policy is off unless configured; a route's own block overrides the global one."""

    headers: HeadersConfig | None = Field(None, description="Add or remove headers.")
    auth_jwt: AuthJwtConfig | None = Field(None, description="JWT bearer authentication.")
    auth_api_key: AuthApiKeyConfig | None = Field(None, description="API key authentication.")
    authorize: AuthorizeConfig | None = Field(
        None, description="Roles, scopes and tenant isolation."
    )
    request_size: RequestSizeConfig | None = Field(
        None, description="Request body limit (default: server.limits.max_body_bytes)."
    )
    ip_filter: IpFilterConfig | None = Field(None, description="Client address allow/deny lists.")
    cors: CorsConfig | None = Field(None, description="Cross-origin requests from browsers.")
    security_headers: SecurityHeadersConfig | None = Field(
        None, description="HSTS, nosniff, frame options, referrer policy, CSP."
    )
    rate_limit: RateLimitConfig | None = Field(
        None, description="Requests per window per client, user, key or route (429)."
    )
    concurrency_limit: ConcurrencyLimitConfig | None = Field(
        None, description="Requests in flight at once per key."
    )
    validate: ValidateConfig | None = Field(  # type: ignore[assignment]  # BaseModel.validate
        None, description="JSON Schema checks of the body and query at the edge."
    )
    compress: CompressConfig | None = Field(
        None, description="gzip, br or zstd of upstream answers for clients that accept it."
    )

    def merged_over(self, defaults: PoliciesConfig) -> PoliciesConfig:
        """This route's policies, with the global ones filling the gaps."""
        values = {
            name: getattr(self, name)
            if getattr(self, name) is not None
            else getattr(defaults, name)
            for name in type(self).model_fields
        }
        return PoliciesConfig(**values)


class ApiPoliciesConfig(ConfigModel):
    """Policies of the gateway's own API (`/api/v1/auth`, `/api/docs`, real-time, events).

    The global `policies:` block never applies to the own API; this one does, and only
    to it. Authentication, authorisation, header rewriting and schema validation are not
    here: the own endpoints authenticate their callers themselves and keep their headers.
    Health probes and metrics take only `cors` and `security_headers` from it: nothing
    may refuse them (a throttled liveness probe restarts a healthy gateway, a throttled
    scrape hides the overload it would show).
    """

    ip_filter: IpFilterConfig | None = Field(None, description="Client address allow/deny lists.")
    cors: CorsConfig | None = Field(
        None, description="Cross-origin requests from browsers (a front end calling login)."
    )
    security_headers: SecurityHeadersConfig | None = Field(
        None,
        description="HSTS, nosniff, frame options, referrer policy (own pages keep their CSP).",
    )
    request_size: RequestSizeConfig | None = Field(
        None, description="Request body limit (default: server.limits.max_body_bytes)."
    )
    rate_limit: RateLimitConfig | None = Field(
        None,
        description=(
            "Requests per window per client on the own API (login, refresh, docs); "
            "never probes or metrics."
        ),
    )
    concurrency_limit: ConcurrencyLimitConfig | None = Field(
        None, description="Requests in flight at once per key (never probes or metrics)."
    )


PROBE_POLICIES = frozenset({"cors", "security_headers"})
"""The own API's policies that also apply to health probes and metrics: they add headers
and never refuse a request."""
