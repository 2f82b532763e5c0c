"""`server.listeners`: the addresses the gateway listens on, each with its protocol and
what it serves. `server.host`/`port` (and `metrics.listen`) are shorthands for a list."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from potok.config.base import ConfigModel
from potok.tls.config import ListenerTlsConfig

Serves = Literal["proxy", "api", "metrics"]
ALL_SERVES: tuple[Serves, ...] = ("proxy", "api", "metrics")


class ListenerConfig(ConfigModel):
    """One listening address."""

    name: str | None = Field(
        None, description="Name in logs; defaults to protocol:port (e.g. 'https:8443')."
    )
    host: str = Field("0.0.0.0", description="Address to bind ('::' for IPv6 and IPv4).")
    port: int = Field(ge=0, le=65535, description="Port to bind (0 picks a free one).")
    protocol: Literal["http", "https"] = Field(
        "http", description="'https' terminates TLS here (needs `tls`); 'http' is plain."
    )
    serves: tuple[Serves, ...] = Field(
        ALL_SERVES,
        min_length=1,
        description=(
            "What it answers: 'proxy' (the routes), 'api' (the gateway's own API: login, "
            "docs, real time), 'metrics' (/api/v1/metrics). Health probes are on every "
            "listener (a load balancer probes the port it sends traffic to)."
        ),
    )
    tls: ListenerTlsConfig | None = Field(
        None, description="Certificates and TLS settings (https listeners only)."
    )
    redirect_https: bool = Field(
        False,
        description=(
            "An http listener that answers every request with 308 to the same URL on https "
            "(the https listener's port, left out when 443), except ACME HTTP-01 challenges "
            "(/.well-known/acme-challenge/)."
        ),
    )
    redirect_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description=(
            "Port in the redirect's Location; default: the first https listener's port "
            "(set it when a load balancer maps another public port to it)."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> ListenerConfig:
        if self.protocol == "https" and self.tls is None:
            raise ValueError("an https listener needs `tls` (its certificates)")
        if self.protocol == "http" and self.tls is not None:
            raise ValueError("`tls` is for https listeners; set protocol: https")
        if self.protocol == "https" and (self.redirect_https or self.redirect_port):
            raise ValueError("redirect_https is for http listeners")
        if self.redirect_port is not None and not self.redirect_https:
            raise ValueError("redirect_port needs redirect_https: true")
        return self

    @property
    def label(self) -> str:
        return self.name or f"{self.protocol}:{self.port}"

    @property
    def serves_key(self) -> frozenset[str]:
        return frozenset(self.serves)
