"""The `validate` policy's registry entry."""

from potok.policies.base import Stage
from potok.policies.entry import PolicyEntry
from potok.policies.validate.config import ValidateConfig
from potok.policies.validate.policy import build

# Not on the own API: schemas describe one route's service.
ENTRY = PolicyEntry(
    name="validate",
    config=ValidateConfig,
    build=build,
    stage=Stage.VALIDATE,
    rank=10,
    description="JSON Schema checks of the body and query at the edge.",
)
