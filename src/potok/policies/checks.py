"""Policy checks that need more of the file than one policy block (the `redis:` section,
the number of workers, a route's methods): each entry's `check`, run for every block
that configures it. Each problem names the exact field."""

from __future__ import annotations

from typing import TYPE_CHECKING

from potok.policies.entry import PolicyPlace, Problem

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig, RouteConfig
    from potok.policies.config import PoliciesBlock

Routes = tuple[tuple[str, "RouteConfig"], ...]


def policy_problems(config: GatewayConfig) -> list[Problem]:
    routes: Routes = tuple((f"routes[{i}]", route) for i, route in enumerate(config.routes))
    problems = _block_problems(config, "policies", config.policies, routes, global_block=True)
    problems += _block_problems(config, "api.policies", config.api.policies, (), own_api=True)
    for route_path, route in routes:
        where = f"{route_path}.policies"
        problems += _block_problems(config, where, route.policies, ((route_path, route),))
    return problems


def _block_problems(
    config: GatewayConfig,
    where: str,
    block: PoliciesBlock,
    routes: Routes,
    *,
    global_block: bool = False,
    own_api: bool = False,
) -> list[Problem]:
    problems: list[Problem] = []
    for entry, policy_config in block.configured():
        if entry.check is None:
            continue
        applies_to = routes
        if global_block:  # only where a route's own block of that name does not replace it
            applies_to = tuple((path, r) for path, r in routes if r.policies.get(entry) is None)
        place = PolicyPlace(f"{where}.{entry.name}", applies_to, own_api)
        problems.extend(entry.check(policy_config, place, config))
    return problems
