"""Config of the identity layer: the `database:` and `auth:` sections of the gateway file."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from potok.config.base import ConfigModel
from potok.config.paths import ConfigPath, config_dir, resolve_sqlite_url
from potok.config.units import Duration, OptionalDuration
from potok.identity.key_checks import check_config_key

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")


def check_key_material(
    algorithm: str, secret: str | None, key: str | None, key_file: str | None, kind: str
) -> None:
    """One rule for signing (`kind` private) and verifying (`kind` public) keys: HMAC takes
    a secret of at least the hash size that is not trivially weak, the others exactly one PEM
    key or key file whose type, curve and size fit the algorithm."""
    if algorithm in HMAC_ALGORITHMS:
        if key or key_file:
            raise ValueError(f"{algorithm} takes a 'secret', not a {kind} key")
        if not secret:
            raise ValueError(f"{algorithm} needs 'secret'")
    else:
        if secret:
            raise ValueError(f"{algorithm} takes a {kind} key, not a 'secret'")
        if bool(key) == bool(key_file):
            raise ValueError(f"{algorithm} needs one of '{kind}_key' or '{kind}_key_file'")
    # Loaded and judged now, so `potok check` refuses what a worker could not use.
    check_config_key(algorithm, secret, key, key_file, kind)


ASYMMETRIC_ALGORITHMS = ("RS256", "ES256", "EdDSA")
SigningAlgorithm = Literal["HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA"]


_GATEWAY_HEADERS = frozenset(
    {
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
        "te", "trailer", "expect", "proxy-connection", "proxy-authenticate",
        "proxy-authorization", "authorization", "cookie", "x-forwarded-for",
        "x-forwarded-proto", "x-forwarded-host", "x-request-id", "x-api-key",
    }
)  # fmt: skip


def check_header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid header name")
    return value


class DatabaseConfig(ConfigModel):
    """Where users, API keys, refresh-token families, revocations and audit records live."""

    url: str = Field(
        "sqlite:///potok.db",
        description=(
            "sqlite:///path/to/file.db (default; a relative path is relative to the config "
            "file's folder) or postgresql://user:password@host:5432/dbname for a cluster of "
            "gateways."
        ),
        validate_default=True,  # the default file lies beside the config file too
    )
    pool_size: int = Field(
        5, ge=1, le=100, description="PostgreSQL connections kept per worker process."
    )
    connect_timeout: Duration = Field(5.0, description="Opening a database connection.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        if not value.startswith(("sqlite:", "sqlite+aiosqlite:", "postgresql:", "postgres:")) and (
            not value.startswith("postgresql+asyncpg:")
        ):
            raise ValueError("use sqlite:///file.db or postgresql://user@host/dbname")
        return resolve_sqlite_url(value, config_dir(info))


class SigningKeyConfig(ConfigModel):
    """The key the token service signs access tokens with (and verifies them by)."""

    algorithm: SigningAlgorithm = Field("HS256", description="JWS algorithm of issued tokens.")
    secret: str | None = Field(
        None,
        description=(
            "HMAC secret for HS256/384/512: at least 32/48/64 bytes and not trivially weak "
            "(`potok secrets new-key`); use ${VAR} or an enc:v1: value (`potok secrets encrypt`)."
        ),
    )
    private_key: str | None = Field(
        None,
        description="PEM private key for RS256/ES256/EdDSA (inline, ${VAR} or enc:v1:).",
    )
    private_key_file: ConfigPath | None = Field(
        None,
        description="Path of a PEM private key file (relative to the config file), instead of "
        "`private_key`.",
    )
    key_id: str = Field("potok-1", description="`kid` put in the header of issued tokens.")

    @model_validator(mode="after")
    def _material(self) -> SigningKeyConfig:
        check_key_material(
            self.algorithm, self.secret, self.private_key, self.private_key_file, "private"
        )
        return self


class TokenServiceConfig(ConfigModel):
    """The built-in token service under /api/v1/auth (login, refresh, logout, profile)."""

    enabled: bool = Field(False, description="Serve /api/v1/auth/* from the gateway.")
    issuer: str = Field("potok", description="`iss` of issued access tokens.")
    audience: str = Field("potok", description="`aud` of issued access tokens.")
    access_ttl: Duration = Field(24 * 3600.0, description="Lifetime of an access token.")
    refresh_ttl: Duration = Field(
        7 * 24 * 3600.0, description="Lifetime of a refresh token ('168h' is 7 days)."
    )
    signing: SigningKeyConfig | None = Field(
        None, description="Signing key; required when `enabled` is true."
    )
    refresh_reuse_interval: OptionalDuration = Field(
        10.0,
        description=(
            "A refresh token presented again this soon after it was rotated (two tabs "
            "refreshing at once, a retry after a lost answer) gets a new pair instead of "
            "revoking its family, as Auth0's reuse interval. Later reuse revokes the family. "
            "0 turns it off; at most 300 s."
        ),
    )

    @model_validator(mode="after")
    def _signing(self) -> TokenServiceConfig:
        if self.refresh_reuse_interval > 300:
            raise ValueError("'refresh_reuse_interval' must be at most 300 s")
        if self.enabled and self.signing is None:
            raise ValueError("the token service needs 'signing' (a secret or a private key)")
        if self.refresh_ttl < self.access_ttl:
            raise ValueError("'refresh_ttl' must not be shorter than 'access_ttl'")
        return self


class PasswordHashingConfig(ConfigModel):
    """argon2id parameters; the defaults follow OWASP's guidance and stay strong."""

    time_cost: int = Field(3, ge=1, le=20, description="argon2id iterations.")
    memory_kib: int = Field(
        65536, ge=8, le=4 * 1024 * 1024, description="argon2id memory per hash, in KiB."
    )
    parallelism: int = Field(4, ge=1, le=16, description="argon2id lanes.")
    concurrency: int = Field(
        2,
        ge=1,
        le=64,
        description="Hashes computed at once per worker (bounds memory under a login flood).",
    )


class LoginProtectionConfig(ConfigModel):
    """Brute-force protection on login: failures counted per username and per client IP."""

    max_failures_per_user: int = Field(
        5, ge=1, description="Failures within `window` that lock a username."
    )
    max_failures_per_ip: int = Field(
        20, ge=1, description="Failures within `window` that lock a client IP."
    )
    window: Duration = Field(
        900.0,
        description=(
            "How far back failures are counted. A key's lock-out count (for the doubling) is "
            "forgotten a window after its last failure and lock-out."
        ),
    )
    lockout: Duration = Field(60.0, description="First lock-out; doubles with each repeat.")
    max_lockout: Duration = Field(3600.0, description="Longest lock-out.")
    tracked: int = Field(
        100_000,
        ge=100,
        description=(
            "Most lock-outs each worker remembers, to refuse a locked username or IP without "
            "asking the database (oldest dropped). The counters themselves are in the database, "
            "shared by every worker and instance."
        ),
    )


class RevocationConfig(ConfigModel):
    """Revoked access tokens (logout, disabled users): a denylist checked on every request."""

    backend: Literal["memory", "redis"] = Field(
        "memory",
        description=(
            "'memory': each worker keeps the list, filled from the database every "
            "`poll_interval`; 'redis': also published through Redis so every gateway learns "
            "of a revocation at once."
        ),
    )
    redis_url: str | None = Field(
        None,
        description=(
            "Redis for backend 'redis'; default: the top-level `redis:` section, shared with "
            "rate limiting. Set it only to use another server."
        ),
    )
    redis_prefix: str | None = Field(
        None,
        description=(
            "Prefix of the Redis channel (`<prefix>events`); default: the `redis:` section's "
            "`key_prefix` followed by 'revoked:' (so 'potok:revoked:')."
        ),
    )
    poll_interval: Duration = Field(
        1.0, description="How often each worker reads new revocations from the database."
    )


class ApiKeysConfig(ConfigModel):
    """API keys: the table is mirrored in each worker, so a request never waits on the database."""

    sync_interval: Duration = Field(
        2.0, description="How often the mirror is reloaded (revocations take effect within it)."
    )
    last_used_flush: Duration = Field(
        30.0, description="How often last-used times are written, in one batch."
    )


class AuditConfig(ConfigModel):
    """Security events written to the database in batches, off the request path."""

    enabled: bool = Field(True, description="Record audit events.")
    queue_size: int = Field(
        10_000, ge=10, description="Events waiting to be written; beyond it they are counted."
    )
    batch_size: int = Field(500, ge=1, description="Most events per database write.")
    flush_interval: Duration = Field(1.0, description="Longest an event waits before a write.")
    log: bool = Field(True, description="Also write each event to the log stream.")


class IdentityHeadersConfig(ConfigModel):
    """Headers carrying the caller's identity upstream; incoming copies are always removed."""

    user_id: str = Field("X-User-Id", description="Subject (user id or API key id).")
    roles: str = Field("X-User-Roles", description="Roles, comma-separated.")
    org: str = Field("X-Org-Id", description="Organisation (tenant).")
    scopes: str = Field("X-User-Scopes", description="Scopes, space-separated.")

    @field_validator("user_id", "roles", "org", "scopes")
    @classmethod
    def _names(cls, value: str) -> str:
        return check_header_name(value)

    @model_validator(mode="after")
    def _distinct(self) -> IdentityHeadersConfig:
        names = [self.user_id, self.roles, self.org, self.scopes]
        if len({n.lower() for n in names}) != len(names):
            raise ValueError("identity header names must differ")
        taken = sorted(n for n in names if n.lower() in _GATEWAY_HEADERS)
        if taken:
            # Clients' copies of identity headers are dropped while parsing: these carry
            # the request's framing, routing or credentials and must reach the gateway.
            raise ValueError(f"{', '.join(taken)} cannot be an identity header")
        return self

    def names(self) -> tuple[str, ...]:
        return (self.user_id, self.roles, self.org, self.scopes)


class AuthConfig(ConfigModel):
    """Identity and access: token service, passwords, API keys, revocation, audit."""

    token_service: TokenServiceConfig = Field(
        default_factory=TokenServiceConfig, description="Built-in login/refresh/logout service."
    )
    passwords: PasswordHashingConfig = Field(
        default_factory=PasswordHashingConfig, description="Password hashing (argon2id)."
    )
    login_protection: LoginProtectionConfig = Field(
        default_factory=LoginProtectionConfig, description="Login brute-force protection."
    )
    revocation: RevocationConfig = Field(
        default_factory=RevocationConfig, description="Access-token denylist."
    )
    api_keys: ApiKeysConfig = Field(default_factory=ApiKeysConfig, description="API keys.")
    audit: AuditConfig = Field(default_factory=AuditConfig, description="Audit log.")
    identity_headers: IdentityHeadersConfig = Field(
        default_factory=IdentityHeadersConfig,
        description="Names of the identity headers sent upstream (stripped from clients).",
    )


def identity_problems(config: GatewayConfig) -> list[tuple[str, str]]:
    """Cross-section mistakes of the identity settings, as (field path, message)."""
    problems: list[tuple[str, str]] = []
    revocation = config.auth.revocation
    if revocation.backend == "redis" and revocation.redis_url is None and config.redis is None:
        problems.append(
            (
                "auth.revocation.redis_url",
                "backend 'redis' needs the top-level `redis:` section or 'redis_url'",
            )
        )
    return problems
