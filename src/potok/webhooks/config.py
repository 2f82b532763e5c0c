"""The `webhooks:` section: sources (who may call, how they sign, where it goes), the
outbox (where accepted deliveries wait) and the delivery rules (retries, Potok's own
signature)."""

from __future__ import annotations

import base64
import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from potok.config.base import ConfigModel
from potok.config.paths import config_dir, resolve_sqlite_url
from potok.config.units import ByteSize, Cidr, Duration

_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
PRESETS = ("standard_webhooks", "github", "stripe", "slack", "max_bot", "generic_hmac")
Preset = Literal["standard_webhooks", "github", "stripe", "slack", "max_bot", "generic_hmac"]
MIN_SECRET_BYTES = 16


class GenericHmacConfig(ConfigModel):
    """How a provider without a preset signs: one header carrying an HMAC."""

    header: str = Field(description="Request header that carries the signature.")
    algorithm: Literal["sha256", "sha512"] = Field("sha256", description="HMAC hash.")
    encoding: Literal["hex", "base64"] = Field("hex", description="How the digest is written.")
    prefix: str = Field(
        "", description="Text before the digest in the header (e.g. 'sha256='), removed."
    )
    signed: Literal["body", "timestamp.body"] = Field(
        "timestamp.body",
        description=(
            "What is signed: the raw body, or the timestamp header's value, '.', and the raw "
            "body (replay-safe: the timestamp is checked against `tolerance`)."
        ),
    )
    timestamp_header: str | None = Field(
        None, description="Header with the Unix timestamp; required when `signed` has it."
    )
    id_header: str | None = Field(
        None,
        description="Header with the provider's delivery id: required and forwarded. A "
        "delivery whose id or signed content was already accepted is a duplicate (the id is "
        "not signed, so the signed content is checked as well).",
    )

    @field_validator("header", "timestamp_header", "id_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER.match(value):
            raise ValueError(f"{value!r} is not a header name")
        return value

    @model_validator(mode="after")
    def _timestamp(self) -> GenericHmacConfig:
        if self.signed == "timestamp.body" and self.timestamp_header is None:
            raise ValueError("timestamp_header: required when signed is 'timestamp.body'")
        return self


class SourceConfig(ConfigModel):
    """One webhook sender: served at POST /api/v1/webhooks/{name} and at its `path` aliases."""

    preset: Preset = Field(
        "standard_webhooks",
        description=(
            "How the sender signs: standard_webhooks, github, stripe, slack, max_bot "
            "(X-Max-Bot-Api-Secret equal to the subscription secret) or generic_hmac."
        ),
    )
    secrets: tuple[str, ...] = Field(
        (),
        description=(
            "Signing secrets; several are accepted at once while rotating. Mandatory. Use "
            "${VAR} or enc:v1: values. standard_webhooks: the whsec_ secret as given."
        ),
    )
    path: tuple[str, ...] = Field(
        (),
        description="Further paths this source answers at (e.g. /api/v1/bot/webhook).",
    )
    service: str | None = Field(
        None, description="Service the deliveries are forwarded to (none: bus only)."
    )
    upstream_path: str = Field("/", description="Path on the service each delivery is POSTed to.")
    publish: bool = Field(
        False, description="Also publish each delivery on the event bus, channel webhooks.<name>."
    )
    ordered: bool = Field(
        False,
        description=(
            "Deliver this source's deliveries one at a time in the order accepted (a failing "
            "one holds back the rest until it is delivered or dead)."
        ),
    )
    tolerance: Duration = Field(
        300.0, description="Signed timestamps older or newer than this are refused."
    )
    max_body: ByteSize = Field(
        1024 * 1024, description="Largest body accepted (checked before it is read): 413 past it."
    )
    allow_ips: tuple[Cidr, ...] = Field(
        (),
        description=(
            "Only these client addresses or networks may deliver (the client address as "
            "server.trusted_proxies decides it); empty: anyone with the secret."
        ),
    )
    forward_headers: tuple[str, ...] = Field(
        (),
        description="Request headers passed on to the service besides the preset's own.",
    )
    generic: GenericHmacConfig | None = Field(
        None, description="Signature rules for preset generic_hmac."
    )

    @field_validator("secrets", mode="before")
    @classmethod
    def _one_secret(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("path", mode="before")
    @classmethod
    def _one_path(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("path")
    @classmethod
    def _paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            if not path.startswith("/") or "{" in path or "*" in path:
                raise ValueError(f"{path!r}: a literal absolute path")
        return value

    @field_validator("upstream_path")
    @classmethod
    def _upstream_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @field_validator("forward_headers")
    @classmethod
    def _forward_headers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _HEADER.match(name):
                raise ValueError(f"{name!r} is not a header name")
        return value

    @model_validator(mode="after")
    def _secret_rules(self) -> SourceConfig:
        if not self.secrets:
            raise ValueError(
                "secrets: a source needs at least one secret (unsigned webhooks are refused)"
            )
        for index, secret in enumerate(self.secrets):
            problem = secret_problem(self.preset, secret)
            if problem is not None:
                raise ValueError(f"secrets[{index}]: {problem}")
        if self.preset == "generic_hmac" and self.generic is None:
            raise ValueError("generic: required with preset generic_hmac")
        if self.preset != "generic_hmac" and self.generic is not None:
            raise ValueError("generic: only with preset generic_hmac")
        if self.service is None and not self.publish:
            raise ValueError(
                "service: a source needs a service to forward to, publish: true, or both"
            )
        return self


def secret_problem(preset: str, secret: str) -> str | None:
    """Why `secret` cannot be used by `preset`, or None."""
    if preset == "standard_webhooks":
        if not secret.startswith("whsec_"):
            return "a Standard Webhooks secret starts with whsec_"
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except ValueError:
            return "after whsec_ comes base64"
        if len(key) < MIN_SECRET_BYTES:
            return f"the key is {len(key)} bytes; at least {MIN_SECRET_BYTES}"
        return None
    if len(secret.encode()) < MIN_SECRET_BYTES:
        return f"at least {MIN_SECRET_BYTES} bytes"
    return None


class OutboxConfig(ConfigModel):
    """Where accepted deliveries are written before the sender gets its 2xx."""

    url: str = Field(
        "sqlite:///potok-webhooks.db",
        description=(
            "sqlite:///file.db (WAL, synchronous commit; one host) or postgresql://... (a "
            "cluster of gateways shares it). A relative file is relative to the config file."
        ),
        validate_default=True,
    )
    lease: Duration = Field(
        60.0,
        description=(
            "How long a claimed delivery stays with the instance that claimed it; after that "
            "(the instance died) another takes it over."
        ),
    )
    retention: Duration = Field(
        86400.0,
        description=(
            "Delivered rows (and their replay keys) are purged after this long; at least "
            "the longest source tolerance."
        ),
    )
    batch: int = Field(
        256, ge=1, le=10000, description="Most deliveries written or claimed in one transaction."
    )
    pool_size: int = Field(4, ge=1, le=64, description="PostgreSQL connections per worker.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("use sqlite:///file.db or postgresql://user@host/dbname")
        return resolve_sqlite_url(value, config_dir(info))

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite:")


class DeliveryConfig(ConfigModel):
    """How stored deliveries reach their service: retries and Potok's own signature."""

    signing_secret: str | None = Field(
        None,
        description=(
            "whsec_ secret Potok signs forwarded deliveries with (Standard Webhooks headers "
            "webhook-id/-timestamp/-signature), so the service can trust them. Required when "
            "a source has a service."
        ),
    )
    initial_backoff: Duration = Field(1.0, description="Wait before the first retry.")
    max_backoff: Duration = Field(600.0, description="The wait between retries grows to this.")
    max_age: Duration = Field(
        86400.0,
        description="A delivery still failing this long after it was accepted goes dead-letter.",
    )
    max_attempts: int = Field(
        0, ge=0, description="Dead-letter after this many attempts as well (0: only max_age)."
    )
    timeout: Duration = Field(10.0, description="One delivery attempt (connect to last byte).")
    concurrency: int = Field(64, ge=1, le=4096, description="Deliveries in flight per worker.")
    poll_interval: Duration = Field(
        0.5, description="How often the outbox is checked for due retries when idle."
    )

    @field_validator("signing_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None:
            problem = secret_problem("standard_webhooks", value)
            if problem is not None:
                raise ValueError(problem)
        return value


class WebhooksConfig(ConfigModel):
    """Webhook ingress: verified, de-duplicated, stored before 2xx, delivered at least once."""

    sources: dict[str, SourceConfig] = Field(
        default_factory=dict, description="Webhook senders by name (the {source} of the path)."
    )
    outbox: OutboxConfig = Field(
        default_factory=OutboxConfig, description="Durable store of accepted deliveries."
    )
    delivery: DeliveryConfig = Field(
        default_factory=DeliveryConfig, description="Forwarding: retries, dead letter, signature."
    )
    forward: bool = Field(
        True, description="This instance forwards stored deliveries (false: ingress only)."
    )

    @field_validator("sources")
    @classmethod
    def _names(cls, value: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        for name in value:
            if not _SOURCE_NAME.match(name):
                raise ValueError(f"source name {name!r}: letters, digits, '_' and '-'")
        return value

    @model_validator(mode="after")
    def _lease(self) -> WebhooksConfig:
        if self.outbox.lease < 2 * self.delivery.timeout:
            raise ValueError(
                f"outbox.lease: {self.outbox.lease:g}s must be at least twice "
                f"delivery.timeout ({self.delivery.timeout:g}s), or a slow send could be "
                "taken over while still in flight"
            )
        return self

    @model_validator(mode="after")
    def _retention(self) -> WebhooksConfig:
        longest = max((s.tolerance for s in self.sources.values()), default=0.0)
        if self.outbox.retention < longest:
            raise ValueError(
                f"outbox.retention: {self.outbox.retention:g}s is shorter than a source's "
                f"tolerance ({longest:g}s): a replay could pass after its key was purged"
            )
        return self


def webhooks_problems(
    webhooks: WebhooksConfig | None,
    services: set[str],
    realtime: bool,
    route_paths: frozenset[str] = frozenset(),
) -> list[tuple[str, str]]:
    """Cross-section checks: (field path, message). `route_paths`: the exact paths of the
    user's routes, which a source's alias may not take."""
    if webhooks is None:
        return []
    problems: list[tuple[str, str]] = []
    forwards = False
    paths: dict[str, str] = {}
    for name, source in webhooks.sources.items():
        where = f"webhooks.sources.{name}"
        if source.service is not None:
            forwards = True
            if source.service not in services:
                problems.append((f"{where}.service", f"no service named {source.service!r}"))
        if source.publish and not realtime:
            problems.append((f"{where}.publish", "needs the realtime section (its event bus)"))
        for path in source.path:
            if path in paths:
                problems.append((f"{where}.path", f"{path} is also {paths[path]}'s path"))
            if path in route_paths or path.startswith("/api/v1/webhooks/"):
                problems.append((f"{where}.path", f"{path} is already a route's path"))
            paths[path] = name
    if forwards and webhooks.delivery.signing_secret is None:
        problems.append(
            ("webhooks.delivery.signing_secret", "required: deliveries to a service are signed")
        )
    return problems
