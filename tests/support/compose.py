"""deploy/compose.yaml read as compose reads it: anchors merged, variables interpolated."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|([A-Za-z_]\w*))")


def interpolate(value: str, env: dict[str, str], missing: list[str]) -> str:
    """Compose's interpolation: $$, ${VAR}, ${VAR:-default}, ${VAR-default}, $VAR."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        if name in env:
            return env[name]
        if match.group(2) is None:
            missing.append(name)
            return ""
        return match.group(3)

    return COMPOSE_VAR.sub(substitute, value)


def resolved(node: Any, env: dict[str, str], missing: list[str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env, missing)
    if isinstance(node, list):
        return [resolved(item, env, missing) for item in node]
    if isinstance(node, dict):
        return {key: resolved(item, env, missing) for key, item in node.items()}
    return node


@cache
def compose() -> dict[str, Any]:
    """deploy/compose.yaml as compose sees it with an empty environment (anchors merged)."""
    missing: list[str] = []
    document = resolved(yaml.safe_load(COMPOSE.read_text()), {}, missing)
    document["_missing"] = missing
    return document  # type: ignore[no-any-return]


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]  # type: ignore[no-any-return]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}
