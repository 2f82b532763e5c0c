"""YAML -> validated GatewayConfig, with `${VAR}` / `${VAR:-default}` from the environment.

Errors are collected, never the first one only, and each names the exact field:
`routes[3].match.prefix: must start with '/'`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from potok.config.models import GatewayConfig, RouteConfig
from potok.config.paths import path_context
from potok.identity.secrets import PREFIX as SECRET_PREFIX
from potok.identity.secrets import open_config_value
from potok.routing.endpoints import (
    ACME_CHALLENGE_PATH,
    ACME_ROUTE_NAME,
    ADMIN_LISTENER_ROUTE_NAME,
    API_ROUTE_NAME,
    OWN_ENDPOINTS,
    PUBLIC_ONLY_WITH_ADMIN,
    route_name,
)
from potok.routing.table import RouteEntry

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


class ConfigError(Exception):
    """Every problem found, as (field path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__(
            "\n".join(f"{path}: {message}" if path else message for path, message in problems)
        )


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """The file's config; relative paths in it are relative to the file's folder."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read {path}: {exc.strerror or exc}")]) from exc
    return load_config_text(text, env, base=Path(path).resolve().parent)


def load_config_text(
    text: str, env: Mapping[str, str] | None = None, base: Path | None = None
) -> GatewayConfig:
    """`text` validated; with `base`, relative paths in it are made absolute against it."""
    environment = os.environ if env is None else env
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "YAML"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([(where, f"invalid YAML: {problem}")]) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([("", "the configuration must be a mapping at the top level")])
    problems: list[tuple[str, str]] = []
    expanded = _expand(raw, environment, "", problems)
    if problems:
        raise ConfigError(problems)
    try:
        config = GatewayConfig.model_validate(expanded, context=path_context(base))
    except ValidationError as exc:
        raise ConfigError([(_path(err["loc"]), _message(err)) for err in exc.errors()]) from exc
    problems = cross_check(config)
    if problems:
        raise ConfigError(problems)
    return config


def _expand(value: Any, env: Mapping[str, str], path: str, problems: list[tuple[str, str]]) -> Any:
    """Substitute variables in string values (never in keys: the shape is the file's)."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = env.get(name)
            if value and default is not None:
                return value
            if default is not None:
                return default  # like sh: ':-' covers unset and empty
            if value is not None:
                return value
            problems.append((path, f"environment variable {name} is not set and has no default"))
            return ""

        expanded = _VAR.sub(substitute, value)
        if expanded.startswith(SECRET_PREFIX):  # from `potok secrets encrypt`: decrypt now
            return open_config_value(expanded, env, path, problems)
        return expanded
    if isinstance(value, dict):
        return {
            k: _expand(v, env, f"{path}.{k}" if path else str(k), problems)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_expand(v, env, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return value


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith("function-"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(error: Any) -> str:
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if error["type"] == "extra_forbidden":
        return "unknown field (check the spelling; see docs/configuration.md)"
    return message


def cross_check(config: GatewayConfig) -> list[tuple[str, str]]:
    """Checks that span several parts of the file: references, names, reachability."""
    problems: list[tuple[str, str]] = []
    names: dict[str, int] = {}
    shapes: dict[tuple[object, ...], list[tuple[str, frozenset[str]]]] = {}
    for index, route in enumerate(config.routes):
        where = f"routes[{index}]"
        for field, service in _route_services(route):
            if service not in config.services:
                known = ", ".join(sorted(config.services)) or "none defined"
                problems.append(
                    (f"{where}.{field}", f"unknown service {service!r} (services: {known})")
                )
        own = _own_endpoint_under(
            route.match.path or route.match.prefix or "/",
            route.match.path is not None,
            config.admin.enabled and config.admin.public,
        )
        if own is not None:
            problems.append((f"{where}.match", f"takes over the gateway's own endpoint {own}"))
        pattern = route.match.path or route.match.prefix or "/"
        if config.acme is not None and (pattern.rstrip("/") + "/").startswith(
            ACME_CHALLENGE_PATH + "/"
        ):
            problems.append(
                (f"{where}.match", f"never reached: with acme: the gateway answers {pattern}")
            )
        name = route_name(index, route)
        if name in (API_ROUTE_NAME, ACME_ROUTE_NAME, ADMIN_LISTENER_ROUTE_NAME):
            problems.append((f"{where}.name", f"{name!r} is reserved"))
        if name in names:
            problems.append((f"{where}.name", f"duplicates the name of routes[{names[name]}]"))
        names.setdefault(name, index)
        match = route.match
        methods_bytes = frozenset(m.encode() for m in match.methods)
        pattern = match.path or match.prefix or "/"
        entry = RouteEntry(None, pattern, match.path is not None, methods_bytes, match.host, index)
        methods = frozenset(match.methods)
        same_shape = shapes.setdefault(entry.shape(), [])
        for other, other_methods in same_shape:
            if not methods or not other_methods or methods & other_methods:
                problems.append(
                    (
                        f"{where}.match",
                        f"same path, host and methods as {other}: one of them can never match",
                    )
                )
                break
        same_shape.append((f"routes[{index}]", methods))
    return problems


def _own_endpoint_under(pattern: str, exact: bool, admin_public: bool) -> str | None:
    """The own endpoint a user pattern would win over (the same or under it), if any."""
    path = pattern.rstrip("/") or "/"
    for own, own_exact in OWN_ENDPOINTS:
        if own in PUBLIC_ONLY_WITH_ADMIN and not admin_public:
            continue
        if own_exact:
            if exact and path == own:
                return own
        elif path == own or path.startswith(own + "/"):
            return own
    return None


def _route_services(route: RouteConfig) -> list[tuple[str, str]]:
    """(field, service name) of every service a route names."""
    if route.aggregate is not None:
        return [
            (f"aggregate.calls[{index}].service", call.service)
            for index, call in enumerate(route.aggregate.calls)
        ]
    named = (
        [("service", route.service)]
        if route.service is not None
        else [(f"services[{index}].name", v.name) for index, v in enumerate(route.services)]
    )
    if route.mirror is not None:
        named.append(("mirror.service", route.mirror.service))
    return named
