"""The `concurrency_limit` policy's registry entry."""

from potok.policies.base import Stage
from potok.policies.concurrency_limit.config import ConcurrencyLimitConfig
from potok.policies.concurrency_limit.policy import build
from potok.policies.entry import PolicyEntry

ENTRY = PolicyEntry(
    name="concurrency_limit",
    config=ConcurrencyLimitConfig,
    build=build,
    stage=Stage.LIMIT,
    rank=20,  # after rate_limit: a request over its rate never holds a slot
    description="Requests in flight at once per key.",
    own_api=True,
    api_description="Requests in flight at once per key (never probes or metrics).",
)
