"""The `compress` policy's registry entry."""

from potok.policies.base import Stage
from potok.policies.compress.config import CompressConfig
from potok.policies.compress.policy import build
from potok.policies.entry import PolicyEntry

# Edge stage, first of it: its response filter is opened nearest the client, so a cache
# behind it stores the identity representation and every answer is encoded per client.
# Not on the own API: its answers do not come from an upstream.
ENTRY = PolicyEntry(
    name="compress",
    config=CompressConfig,
    build=build,
    stage=Stage.EDGE,
    rank=5,
    description="gzip, br or zstd of upstream answers for clients that accept it.",
)
