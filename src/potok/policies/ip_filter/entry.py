"""The `ip_filter` policy's registry entry."""

from potok.policies.base import Stage
from potok.policies.entry import PolicyEntry
from potok.policies.ip_filter.config import IpFilterConfig
from potok.policies.ip_filter.policy import build

ENTRY = PolicyEntry(
    name="ip_filter",
    config=IpFilterConfig,
    build=build,
    stage=Stage.EDGE,
    rank=10,  # first: a refused address costs nothing else
    description="Client address allow/deny lists.",
    own_api=True,
)
