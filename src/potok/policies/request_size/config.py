"""Config of the `request_size` policy: the largest request body a route accepts."""

from __future__ import annotations

from pydantic import Field

from potok.config.base import ConfigModel
from potok.config.units import ByteSize


class RequestSizeConfig(ConfigModel):
    """Bodies over the limit get 413, whether announced by Content-Length or streamed."""

    max_bytes: ByteSize = Field(description="Largest request body, e.g. '5MiB'.")
