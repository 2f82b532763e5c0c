"""The contract of a policy: one `PolicyEntry` says everything the gateway needs to know
about it — its config key and model, its builder, where it runs, where it applies, which
request headers it consumes, and the checks that need more of the file than its block.

Built-in policies and plugins (entry point group `potok.policies`) declare the same
record; `registry.py` collects them. Nothing outside a policy's folder names it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from potok.policies.base import BuildContext, Policy, Stage

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig, RouteConfig

ConfigT = TypeVar("ConfigT", bound=BaseModel)

Problem = tuple[str, str]
"""(field path, message), e.g. ("routes[0].policies.rate_limit.store", "'redis' needs ...")."""


class PolicyRegistryError(ValueError):
    """The set of policies is inconsistent (a name taken twice, a plugin that does not
    load): the gateway does not start."""


@dataclass(frozen=True, slots=True)
class PolicyPlace:
    """Where one policy block sits in the file, for its entry's `check`."""

    path: str
    """The block's own path, e.g. `routes[2].policies.cors`, `policies.cors`,
    `api.policies.cors`: a problem names a field under it."""
    routes: tuple[tuple[str, RouteConfig], ...]
    """The routes this block applies to, each with its path (`routes[2]`): the route itself
    for a route's block; for the global block, every route without its own block of this
    name; none for the own API's block."""
    own_api: bool
    """Whether this is `api.policies` (the gateway's own API)."""


@dataclass(frozen=True, slots=True)
class PolicyEntry(Generic[ConfigT]):
    """One policy, as the registry knows it. Only `name` through `description` are
    required; the rest say how the policy differs from the plain case (a route policy
    that consumes nothing and needs no cross-field checks)."""

    name: str
    """The key under `policies:` (and `api.policies:` if `own_api`): lowercase, `_`."""
    config: type[ConfigT]
    """The model of its block (frozen, `extra="forbid"`: see `potok.config.base.ConfigModel`)."""
    build: Callable[[ConfigT | None, BuildContext], Policy | None]
    """Called once per route per config load, with None when the route's block does not
    configure it (return None to stay off, or a default policy). The returned `Policy`
    must carry this entry's `name` and `stage`."""
    stage: Stage
    rank: int
    """Order within the stage, lowest first (ties: by name). Built-ins use 10, 20, ...
    so a plugin can run between two of them."""
    description: str
    """The description of its field in `policies:` (the configuration reference)."""
    own_api: bool = False
    """Accepted in `api.policies` (the gateway's own API: login, docs, real time)."""
    api_description: str | None = None
    """Its field's description in `api.policies`, if it should differ."""
    probes: bool = False
    """From `api.policies`, also applied to health probes and metrics: only for policies
    that never refuse a request (they add headers)."""
    unrouted: bool = False
    """Its global block's response hook also shapes answers given before any route is
    chosen (404, 405, a refused path)."""
    consumes: Callable[[ConfigT], Iterable[str]] | None = None
    """The request headers it consumes, given its config: they are not forwarded upstream
    (nor their `_` twins)."""
    check: Callable[[ConfigT, PolicyPlace, GatewayConfig], Iterable[Problem]] | None = None
    """Checks that need more of the file than the block (the `redis:` section, a route's
    methods): called for each block that configures it, at config load."""
    own_api_default: Callable[[BuildContext], Policy] | None = None
    """What the own API's routes get when `api.policies` leaves it off (build returned
    None): e.g. the CSP the gateway's own pages always need."""

    def built(self, config: Any, context: BuildContext) -> Policy | None:
        """Build it, refusing a policy whose name or stage disagrees with this entry: the
        pipeline orders by the entry, so a mismatch would run it somewhere else."""
        policy = self.build(config, context)
        if policy is not None and (policy.name != self.name or policy.stage != self.stage):
            raise PolicyRegistryError(
                f"policy {self.name!r}: its builder returned name={policy.name!r}, "
                f"stage={policy.stage.name}; the entry says stage={self.stage.name}"
            )
        return policy
