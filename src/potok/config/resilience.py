"""Config of the resilience features: retries, circuit breakers, health checks, bulkheads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from potok.config.base import ConfigModel
from potok.config.units import Duration

FailureKind = Literal["connect", "timeout", "reset", "5xx", "502", "503", "504"]


class BackoffConfig(ConfigModel):
    """Exponential backoff with full jitter: sleep uniform(0, min(max, initial * multiplier^n))."""

    initial: Duration = Field(0.1, description="Ceiling of the first wait.")
    multiplier: float = Field(2.0, ge=1.0, le=10.0, description="Growth of the ceiling per retry.")
    max: Duration = Field(30.0, description="Largest ceiling; never past the request's deadline.")


class RetryBudgetConfig(ConfigModel):
    """Retries in flight may not exceed ratio x requests in flight (with a floor)."""

    ratio: float = Field(
        0.2, gt=0, le=1.0, description="Share of active requests that may be retries."
    )
    min_concurrent: int = Field(3, ge=0, description="Retries always allowed in flight at once.")


class RetryConfig(ConfigModel):
    """Retries of safe requests: idempotent methods, or any method with an Idempotency-Key."""

    attempts: int = Field(
        3, ge=1, le=10, description="Tries in all, the first included (1: no retry)."
    )
    backoff: BackoffConfig = Field(
        default_factory=BackoffConfig, description="Waits between tries."
    )
    on_status: tuple[int, ...] = Field(
        (502, 503, 504),
        description="Upstream statuses that are retried (before anything reached the client).",
    )
    methods: tuple[str, ...] = Field(
        ("GET", "HEAD", "OPTIONS", "PUT", "DELETE"),
        description="Methods retried without an Idempotency-Key header.",
    )
    idempotency_header: str = Field(
        "Idempotency-Key",
        description="A request carrying this header is retried whatever its method.",
    )
    max_body_bytes: int = Field(
        65536, ge=0, description="Bodies larger than this are not kept for replay, so not retried."
    )
    budget: RetryBudgetConfig = Field(
        default_factory=RetryBudgetConfig, description="Retry budget."
    )

    @field_validator("on_status")
    @classmethod
    def _statuses(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for status in value:
            if not 500 <= status <= 599:
                raise ValueError(f"{status}: only 5xx statuses can be retried")
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(m.upper() for m in value)


class CircuitBreakerConfig(ConfigModel):
    """Stops calling a failing upstream: opens, waits, probes, closes."""

    consecutive_failures: int = Field(
        5, ge=1, description="Failures in a row that open the breaker."
    )
    error_rate: float = Field(
        0.5, gt=0, le=1.0, description="Share of failures in the window that opens it."
    )
    window: Duration = Field(10.0, description="Rolling window for the error rate.")
    min_requests: int = Field(
        20, ge=1, description="Requests in the window before the rate counts."
    )
    open_for: Duration = Field(60.0, description="How long it stays open before probing.")
    open_for_max: Duration = Field(
        600.0, description="Cap on the open time when it grows (x2 per trip without a close)."
    )
    grow: bool = Field(False, description="Double the open time on each trip until a close.")
    half_open_probes: int = Field(
        3, ge=1, description="Requests let through at once while half-open."
    )
    success_threshold: int = Field(2, ge=1, description="Probe successes that close it again.")
    failure_on: tuple[FailureKind, ...] = Field(
        ("connect", "timeout", "reset", "5xx"), description="What counts as a failure."
    )

    @model_validator(mode="after")
    def _probes(self) -> CircuitBreakerConfig:
        if self.success_threshold > self.half_open_probes:
            raise ValueError(
                "success_threshold cannot exceed half_open_probes: the breaker could never close"
            )
        if self.open_for_max < self.open_for:
            raise ValueError("open_for_max must be at least open_for")
        return self


class HealthCheckConfig(ConfigModel):
    """Active checks: each worker polls every target."""

    path: str = Field("/health", description="Path requested with GET; 2xx/3xx means healthy.")
    interval: Duration = Field(30.0, description="Time between checks of one target.")
    timeout: Duration = Field(2.0, description="A check slower than this failed.")
    healthy_threshold: int = Field(
        2, ge=1, description="Passing checks in a row that re-admit a target."
    )
    unhealthy_threshold: int = Field(3, ge=1, description="Failing checks in a row that eject it.")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in " \r\n"):
            raise ValueError("must be a path starting with '/'")
        return value


class PassiveEjectionConfig(ConfigModel):
    """Outlier ejection from live traffic: a target failing in a row is taken out for a while."""

    consecutive_failures: int = Field(5, ge=1, description="Failures in a row that eject a target.")
    base_ejection: Duration = Field(30.0, description="First ejection; doubles per repeat, capped.")
    max_ejection: Duration = Field(300.0, description="Longest ejection.")


class BulkheadConfig(ConfigModel):
    """Caps a service's share of the gateway, so one slow service cannot take every connection."""

    max_concurrent: int = Field(ge=1, description="Upstream requests in flight at once.")
    max_queued: int = Field(0, ge=0, description="Requests allowed to wait for a slot.")
    queue_timeout: Duration = Field(1.0, description="Longest wait for a slot before 503.")


class FallbackConfig(ConfigModel):
    """What a route answers while its service's breaker is open (instead of 503)."""

    status: int = Field(200, ge=200, le=599, description="Status of the fallback response.")
    body: str = Field("", description="Body of the fallback response.")
    content_type: str = Field("application/json", description="Its Content-Type.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers.")
