"""The `headers` policy's registry entry."""

from potok.policies.base import Stage
from potok.policies.entry import PolicyEntry
from potok.policies.headers.config import HeadersConfig
from potok.policies.headers.policy import build

# Not on the own API: its endpoints keep their headers.
ENTRY = PolicyEntry(
    name="headers",
    config=HeadersConfig,
    build=build,
    stage=Stage.TRANSFORM,
    rank=10,
    description="Add or remove headers.",
)
