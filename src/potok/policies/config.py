"""The `policies:` block of a route (or the global default) and the own API's block
(`api.policies`): models generated from the policy registry, one optional field per
policy (the own API's only for entries with `own_api`).

Nothing here names a policy: a policy's field, its description and where it is accepted
come from its `PolicyEntry` (registry.py). Code reads a block through the typed
accessors of `PoliciesBlock`, since the generated fields are unknown to mypy.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, Field, create_model

from potok.config.base import ConfigModel
from potok.policies.entry import PolicyEntry
from potok.policies.registry import REGISTRY, PolicyRegistry

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class PoliciesBlock(ConfigModel):
    """What every generated policies model is: its fields are the policies it accepts."""

    policy_entries: ClassVar[tuple[PolicyEntry[Any], ...]] = ()
    """The entries of the accepted policies, in run order (stage, rank, name)."""

    def get(self, entry: PolicyEntry[ConfigT]) -> ConfigT | None:
        """The block of this policy, or None where it is not configured (or not accepted)."""
        if entry.name not in type(self).model_fields:
            return None
        value: ConfigT | None = getattr(self, entry.name)
        return value

    def configured(self) -> list[tuple[PolicyEntry[Any], BaseModel]]:
        """The configured policies with their blocks, in run order."""
        return [
            (entry, value)
            for entry in self.policy_entries
            if (value := getattr(self, entry.name)) is not None
        ]

    def merged_over(self, defaults: Self) -> Self:
        """This route's policies, with the global ones filling the gaps."""
        values = {
            name: own if (own := getattr(self, name)) is not None else getattr(defaults, name)
            for name in type(self).model_fields
        }
        return type(self)(**values)


_ROUTE_DOC = "Each policy is off unless configured; a route's own block overrides the global one."

_API_DOC = """Policies of the gateway's own API (`/api/v1/auth`, `/api/docs`, real-time, events).

The global `policies:` block never applies to the own API; this one does, and only to it.
It takes the policies whose entry says `own_api`: not authentication, authorisation,
header rewriting or schema validation (the own endpoints authenticate their callers
themselves and keep their headers). Health probes and metrics take only those whose
entry says `probes` (they add headers and never refuse): a throttled liveness probe
restarts a healthy gateway, a throttled scrape hides the overload it would show.
"""


def block_model(registry: PolicyRegistry, own_api: bool) -> type[PoliciesBlock]:
    """The model of `policies:` (or, with `own_api`, of `api.policies:`) for `registry`."""
    entries = [entry for entry in registry.declared if entry.own_api or not own_api]
    fields: dict[str, Any] = {
        entry.name: (
            entry.config | None,
            Field(
                None,
                description=(entry.api_description or entry.description)
                if own_api
                else entry.description,
            ),
        )
        for entry in entries
    }
    with warnings.catch_warnings():
        # A policy may take the name of a deprecated BaseModel method (`validate`): the
        # field wins on instances, which is all that is read.
        warnings.filterwarnings("ignore", "Field name .* shadows an attribute", UserWarning)
        model = create_model(
            "ApiPoliciesConfig" if own_api else "PoliciesConfig",
            __base__=PoliciesBlock,
            __doc__=_API_DOC if own_api else _ROUTE_DOC,
            __module__=__name__,
            **fields,
        )
    model.policy_entries = tuple(entry for entry in registry.in_order if entry.name in fields)
    return model


if TYPE_CHECKING:
    PoliciesConfig = PoliciesBlock
    ApiPoliciesConfig = PoliciesBlock
else:
    PoliciesConfig = block_model(REGISTRY, own_api=False)
    ApiPoliciesConfig = block_model(REGISTRY, own_api=True)
