"""Every policy Potok knows: the built-in ones (one line each below) and those other
installed packages offer through the entry point group `potok.policies`.

The config models of `policies:` and `api.policies:` (config.py), the pipelines
(runtime.py) and the cross-field checks (checks.py) are all derived from `REGISTRY`.
Adding a built-in policy is its folder (config, policy, `ENTRY`) and one line in
`BUILT_IN`; docs/policies.md, "Writing a policy", has the contract.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from potok.policies.auth_api_key.entry import ENTRY as auth_api_key
from potok.policies.auth_jwt.entry import ENTRY as auth_jwt
from potok.policies.auth_mtls.entry import ENTRY as auth_mtls
from potok.policies.authorize.entry import ENTRY as authorize
from potok.policies.cache.entry import ENTRY as cache
from potok.policies.compress.entry import ENTRY as compress
from potok.policies.concurrency_limit.entry import ENTRY as concurrency_limit
from potok.policies.cors.entry import ENTRY as cors
from potok.policies.entry import PolicyEntry, PolicyRegistryError
from potok.policies.headers.entry import ENTRY as headers
from potok.policies.ip_filter.entry import ENTRY as ip_filter
from potok.policies.rate_limit.entry import ENTRY as rate_limit
from potok.policies.request_size.entry import ENTRY as request_size
from potok.policies.security_headers.entry import ENTRY as security_headers
from potok.policies.validate.entry import ENTRY as validate

# In the order of the configuration reference; they run by stage and rank (their entries).
BUILT_IN: tuple[PolicyEntry[Any], ...] = (
    headers,
    auth_jwt,
    auth_api_key,
    auth_mtls,
    authorize,
    request_size,
    ip_filter,
    cors,
    security_headers,
    rate_limit,
    concurrency_limit,
    validate,
    compress,
    cache,
)

PLUGIN_GROUP = "potok.policies"

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Names a field of the generated models cannot take: pydantic's own namespace and the
# accessors of `PoliciesBlock` (config.py) that runtime.py and checks.py call.
_RESERVED = frozenset({"get", "configured", "merged_over", "policy_entries"})


class PolicyRegistry:
    """The known policies, by name, in declaration order and in run order."""

    __slots__ = ("declared", "in_order")

    def __init__(self, entries: Iterable[PolicyEntry[Any]]) -> None:
        by_name: dict[str, PolicyEntry[Any]] = {}
        for entry in entries:
            _check_entry(entry)
            if entry.name in by_name:
                raise PolicyRegistryError(f"two policies are named {entry.name!r}")
            by_name[entry.name] = entry
        self.declared: tuple[PolicyEntry[Any], ...] = tuple(by_name.values())
        """Declaration order: the order of the fields of `policies:` (and of the docs)."""
        self.in_order: tuple[PolicyEntry[Any], ...] = tuple(
            sorted(by_name.values(), key=lambda e: (e.stage, e.rank, e.name))
        )
        """Run order: by stage, then rank, then name."""

    def adding(self, *entries: PolicyEntry[Any]) -> PolicyRegistry:
        """This registry and more entries (a name taken twice is an error)."""
        return PolicyRegistry((*self.declared, *entries))


def _check_entry(entry: object) -> None:
    if not isinstance(entry, PolicyEntry):
        raise PolicyRegistryError(f"{entry!r} is not a potok.policies.entry.PolicyEntry")
    name = entry.name
    if not _NAME.match(name) or keyword.iskeyword(name) or name.startswith("model_"):
        raise PolicyRegistryError(
            f"policy name {name!r}: lowercase letters, digits and '_', starting with a letter, "
            "at most 63, not a Python keyword nor model_*"
        )
    if name in _RESERVED:
        raise PolicyRegistryError(f"policy name {name!r} is reserved")
    if (entry.probes or entry.own_api_default is not None) and not entry.own_api:
        raise PolicyRegistryError(
            f"policy {name!r}: probes and own_api_default are parts of the own API: "
            "they need own_api=True"
        )


def plugins(
    built_in: frozenset[str] = frozenset(), found: Iterable[EntryPoint] | None = None
) -> list[PolicyEntry[Any]]:
    """The entries other installed packages offer (entry point group `potok.policies`);
    none may take a name in `built_in` or another plugin's.

    Each entry point is named like its policy and points to a `PolicyEntry`:
    `[project.entry-points."potok.policies"] my_policy = "my_package.policy:ENTRY"`.
    """
    loaded: list[PolicyEntry[Any]] = []
    origin: dict[str, str] = {}
    for point in entry_points(group=PLUGIN_GROUP) if found is None else found:
        where = _origin(point)
        try:
            entry = point.load()
        except Exception as exc:  # any import error of someone else's package: say whose
            raise PolicyRegistryError(f"{where} does not load: {exc!r}") from exc
        try:
            _check_entry(entry)
        except PolicyRegistryError as error:
            raise PolicyRegistryError(f"{where}: {error}") from None
        if entry.name != point.name:
            raise PolicyRegistryError(
                f"{where} is a policy named {entry.name!r}; name the entry point like it"
            )
        if entry.name in built_in:
            raise PolicyRegistryError(f"{where} has the name of a built-in policy: rename it")
        if entry.name in origin:
            raise PolicyRegistryError(
                f"{where} and {origin[entry.name]} both offer a policy named {entry.name!r}"
            )
        origin[entry.name] = where
        loaded.append(entry)
    return loaded


def _origin(point: EntryPoint) -> str:
    dist = point.dist
    package = f" of {dist.name} {dist.version}" if dist is not None else ""
    return f"policy plugin {point.name!r} ({point.value}{package})"


def with_plugins(built_in: Iterable[PolicyEntry[Any]]) -> PolicyRegistry:
    """The built-in policies and the installed plugins; a plugin may not take a
    built-in's name."""
    built_in = tuple(built_in)
    found = plugins(frozenset(entry.name for entry in built_in))
    return PolicyRegistry((*built_in, *found))


REGISTRY = with_plugins(BUILT_IN)
"""Built once at import, before the config models (config.py) are generated from it."""
