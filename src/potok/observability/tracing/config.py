"""The `tracing:` section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from potok.config.base import ConfigModel
from potok.config.units import Duration


class TracingBatchConfig(ConfigModel):
    """How finished traces go to the collector."""

    interval: Duration = Field(1.0, gt=0, description="Longest wait before a batch is sent.")
    max_spans: int = Field(512, ge=1, le=65536, description="Spans per export request.")
    max_queue: int = Field(
        8192,
        ge=1,
        le=1_000_000,
        description=(
            "Spans waiting for export; a trace that does not fit is dropped and counted "
            "in tracing_spans_dropped_total (a collector that is down never grows memory "
            "or slows requests)."
        ),
    )


class TracingConfig(ConfigModel):
    """OpenTelemetry tracing (off unless enabled)."""

    enabled: bool = Field(False, description="Record and export traces.")
    endpoint: str = Field(
        "http://127.0.0.1:4318/v1/traces",
        description="OTLP/HTTP (protobuf) traces endpoint of the collector.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers sent to the collector (e.g. auth)."
    )
    timeout: Duration = Field(10.0, gt=0, description="Timeout of one export request.")
    retry_for: Duration = Field(
        60.0,
        ge=0,
        description=(
            "How long a batch is retried (HTTP 429, 502, 503, 504 or no connection; "
            "exponential backoff, Retry-After honoured) before it is dropped and counted."
        ),
    )
    compression: Literal["none", "gzip"] = Field(
        "none",
        description=(
            "Content-Encoding of the export requests: gzip (level 1) sends about a tenth "
            "of the bytes for some of the loop's CPU; none suits a collector nearby."
        ),
    )
    service_name: str = Field("potok", min_length=1, description="The `service.name` resource.")
    sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description=(
            "Share of traces started at the gateway that are recorded. A request that "
            "carries an accepted parent follows the parent's sampled flag (parent-based)."
        ),
    )
    accept_parent: Literal["trusted_proxies", "always", "never"] = Field(
        "trusted_proxies",
        description=(
            "Whose `traceparent`/`tracestate` the gateway continues: only peers in "
            "server.trusted_proxies (default; an Internet client cannot force sampling or "
            "pick trace ids), anyone, or no one (every request starts a trace)."
        ),
    )
    batch: TracingBatchConfig = Field(
        default_factory=TracingBatchConfig, description="Export batching."
    )

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not name or any(c in name for c in " \t:\r\n") or any(c in text for c in "\r\n"):
                raise ValueError(f"{name!r}: not a header name and single-line value")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("give the collector's http:// or https:// OTLP traces URL")
        return value
