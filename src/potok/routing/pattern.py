"""Path patterns such as `/orgs/{org_id}/tasks`: parsed once, at config load."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]{0,63})\}$")
_LITERAL = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@%]+$")


@dataclass(frozen=True, slots=True)
class Segment:
    """One path segment: a literal (`users`) or a parameter (`{id}`)."""

    literal: bytes | None
    param: str | None

    @property
    def is_param(self) -> bool:
        return self.param is not None


def split_pattern(pattern: str) -> tuple[Segment, ...]:
    """Segments of a validated pattern; `/` alone has none."""
    parts = [p for p in pattern.strip("/").split("/") if p] if pattern != "/" else []
    segments = []
    for part in parts:
        param = _PARAM.match(part)
        if param:
            segments.append(Segment(None, param.group(1)))
        else:
            segments.append(Segment(part.encode("ascii"), None))
    return tuple(segments)


def validate_pattern(pattern: str) -> None:
    """Raise ValueError naming what is wrong with a match pattern."""
    if not pattern.startswith("/"):
        raise ValueError(f"{pattern!r} must start with '/'")
    if "//" in pattern:
        raise ValueError(f"{pattern!r} has an empty segment")
    if "?" in pattern or "#" in pattern:
        raise ValueError(f"{pattern!r}: patterns match the path only, no query or fragment")
    names: set[str] = set()
    for part in pattern.strip("/").split("/"):
        if not part:
            continue
        if part.replace("%2e", ".").replace("%2E", ".") in (".", ".."):
            raise ValueError(f"{pattern!r}: dot segments are not allowed")
        param = _PARAM.match(part)
        if param:
            if param.group(1) in names:
                raise ValueError(f"{pattern!r}: parameter {{{param.group(1)}}} appears twice")
            names.add(param.group(1))
        elif "{" in part or "}" in part:
            raise ValueError(f"{pattern!r}: a parameter must be a whole segment, like /{{id}}")
        elif not _LITERAL.match(part):
            raise ValueError(f"{pattern!r}: segment {part!r} has characters not allowed in a path")


def pattern_params(pattern: str) -> set[str]:
    return {s.param for s in split_pattern(pattern) if s.param is not None}


def validate_rewrite(template: str, pattern: str) -> None:
    """A rewrite template is a path pattern whose parameters all come from the match."""
    if template == "":
        return
    validate_pattern(template)
    missing = pattern_params(template) - pattern_params(pattern)
    if missing:
        names = ", ".join(sorted(missing))
        raise ValueError(f"rewrite uses {names} which the match pattern does not define")
