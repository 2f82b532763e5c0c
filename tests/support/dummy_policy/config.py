"""Config of the `dummy` policy."""

from __future__ import annotations

from pydantic import Field

from potok.config.base import ConfigModel


class DummyConfig(ConfigModel):
    """Stamp answers with the route's name; consume a request header."""

    value: str = Field(min_length=1, description="Value of X-Dummy on every answer.")
    token_header: str | None = Field(
        None, description="A request header the policy consumes: never forwarded upstream."
    )
