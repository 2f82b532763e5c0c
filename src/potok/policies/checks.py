"""Policy checks that need more of the file than one policy block: the `redis:` section,
the number of workers, a route's methods. Each problem names the exact field."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig
    from potok.policies.config import ApiPoliciesConfig, PoliciesConfig


def policy_problems(config: GatewayConfig) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    _store_problems(config, "policies", config.policies, problems)
    _store_problems(config, "api.policies", config.api.policies, problems)
    for index, route in enumerate(config.routes):
        where = f"routes[{index}]"
        _store_problems(config, f"{where}.policies", route.policies, problems)
        cors = route.policies.cors or config.policies.cors
        methods = route.match.methods
        if cors is not None and methods and "OPTIONS" not in methods:
            problems.append(
                (
                    f"{where}.match.methods",
                    "add OPTIONS: the route has a cors policy, and browsers' preflight "
                    "requests (OPTIONS) must reach it",
                )
            )
    return problems


def _store_problems(
    config: GatewayConfig,
    where: str,
    policies: PoliciesConfig | ApiPoliciesConfig,
    problems: list[tuple[str, str]],
) -> None:
    rate_limit = policies.rate_limit
    if rate_limit is None:
        return
    field = f"{where}.rate_limit.store"
    workers = config.server.workers
    if rate_limit.store == "redis" and config.redis is None:
        problems.append((field, "'redis' needs the top-level `redis:` section"))
    elif rate_limit.store == "memory" and workers > 1:
        problems.append(
            (
                field,
                f"the memory store counts in each of the {workers} worker processes, so a "
                f"client would get {workers}x the limit; use store: redis (with a top-level "
                "`redis:` section) or one worker",
            )
        )
