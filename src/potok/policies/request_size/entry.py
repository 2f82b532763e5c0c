"""The `request_size` policy's registry entry."""

from potok.policies.base import Stage
from potok.policies.entry import PolicyEntry
from potok.policies.request_size.config import RequestSizeConfig
from potok.policies.request_size.policy import build

ENTRY = PolicyEntry(
    name="request_size",
    config=RequestSizeConfig,
    build=build,  # always on: without a block, the server-wide limit
    stage=Stage.EDGE,
    rank=40,
    description="Request body limit (default: server.limits.max_body_bytes).",
    own_api=True,
)
