"""The `cache` policy's registry entry."""

from potok.policies.base import Stage
from potok.policies.cache.config import CacheConfig
from potok.policies.cache.policy import build
from potok.policies.entry import PolicyEntry

# Cache stage: after authentication and authorization (a hit is served only to a caller
# the route admits), and behind compress (edge), which encodes whatever it sends.
ENTRY = PolicyEntry(
    name="cache",
    config=CacheConfig,
    build=build,
    stage=Stage.CACHE,
    rank=10,
    description="An RFC 9111 shared cache of the route's upstream answers (memory LRU).",
)
