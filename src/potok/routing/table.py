"""The compiled route table: a segment trie built once per config, walked once per request.

Most specific wins: a route with an exact host beats a wildcard host, which
beats no host; then, segment by
segment, a literal beats a parameter; a longer match beats a shorter one; an
exact route beats a prefix route of the same shape. Among routes of the same
shape, the first whose methods allow the request is taken; if the path matches
only routes that refuse the method, the answer is 405 with `Allow`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from potok.routing.pattern import Segment, split_pattern

R = TypeVar("R")

_LITERAL, _PARAM = 2, 1


def _host_rank(host: str | None) -> tuple[int, int]:
    """Exact host > wildcard host (longer suffix first) > no host, as nginx orders names."""
    if host is None:
        return (0, 0)
    if host.startswith("*."):
        return (1, len(host))
    return (2, 0)


@dataclass(slots=True)
class RouteEntry(Generic[R]):
    """What the table needs to know of a route, and the route itself (`target`)."""

    target: R
    pattern: str
    exact: bool
    methods: frozenset[bytes]  # empty = any method
    host: str | None  # exact host, or '*.example.com' (one label for the '*')
    order: int  # position in the config, to keep ties stable
    # A path of the gateway's own protocol (ACME challenges): above every user route on
    # it, host-bound ones included, since a CA validates whatever host it certifies.
    reserved: bool = False
    segments: tuple[Segment, ...] = ()
    rank: tuple[object, ...] = ()

    def __post_init__(self) -> None:
        self.segments = split_pattern(self.pattern)
        kinds = tuple(_PARAM if s.is_param else _LITERAL for s in self.segments)
        # Larger rank = more specific; `order` breaks ties in favour of the earlier route.
        host_rank = (3, 0) if self.reserved else _host_rank(self.host)
        self.rank = (host_rank, kinds, self.exact, -self.order)

    def allows(self, method: bytes) -> bool:
        return not self.methods or method in self.methods

    def serves_host(self, host: str) -> bool:
        if self.host is None:
            return True
        if self.host.startswith("*."):
            # Exactly one label in place of the '*', as TLS wildcards: a.example.com, not
            # a.b.example.com and not example.com.
            suffix = self.host[1:]
            label = host[: -len(suffix)]
            return host.endswith(suffix) and bool(label) and "." not in label
        return host == self.host

    def shape(self) -> tuple[object, ...]:
        """Two routes with one shape and overlapping methods can never both be reached."""
        kinds = tuple("{}" if s.is_param else s.literal for s in self.segments)
        return (self.host, kinds, self.exact)


@dataclass(slots=True)
class _Node(Generic[R]):
    literal: dict[bytes, _Node[R]] = field(default_factory=dict)
    param: _Node[R] | None = None
    exact: list[RouteEntry[R]] = field(default_factory=list)
    prefix: list[RouteEntry[R]] = field(default_factory=list)


class RouteMatch(Generic[R]):
    """The winning route and the path segments it matched (parameters by position)."""

    __slots__ = ("entry", "values")

    def __init__(self, entry: RouteEntry[R], values: tuple[bytes, ...]) -> None:
        # A plain slotted class: a frozen dataclass's __init__ costs a microsecond per request.
        self.entry = entry
        self.values = values

    @property
    def target(self) -> R:
        return self.entry.target

    def params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for segment, value in zip(self.entry.segments, self.values, strict=False):
            if segment.param is not None:
                out[segment.param] = value.decode("latin-1")
        return out


@dataclass(frozen=True, slots=True)
class MethodNotAllowed:
    """The path is routed, but not for this method."""

    allow: tuple[str, ...]


class RouteTable(Generic[R]):
    """Immutable once built; `match` does a few dict lookups per path segment."""

    def __init__(self, entries: list[RouteEntry[R]]) -> None:
        self.entries = sorted(entries, key=lambda e: e.rank, reverse=True)
        self._root: _Node[R] = _Node()
        for entry in self.entries:
            self._insert(entry)

    def _insert(self, entry: RouteEntry[R]) -> None:
        node = self._root
        for segment in entry.segments:
            if segment.literal is not None:
                node = node.literal.setdefault(segment.literal, _Node())
            else:
                if node.param is None:
                    node.param = _Node()
                node = node.param
        (node.exact if entry.exact else node.prefix).append(entry)

    def match(
        self, method: bytes, path: bytes, host: str = ""
    ) -> RouteMatch[R] | MethodNotAllowed | None:
        """The most specific route for this request, 405 information, or None (404)."""
        parts = path.split(b"/")[1:]
        trailing = False
        if parts and parts[-1] == b"":
            # '/a/b/' is under the prefix '/a/b'; an exact '/a/b' does not take it.
            parts.pop()
            trailing = bool(parts)
        candidates: list[RouteEntry[R]] = []
        self._collect(self._root, parts, 0, trailing, candidates)
        if not candidates:
            return None
        best: RouteEntry[R] | None = None
        refused: list[RouteEntry[R]] = []
        for entry in candidates:
            if not entry.serves_host(host):
                continue
            if not entry.allows(method):
                refused.append(entry)
                continue
            if best is None or entry.rank > best.rank:
                best = entry
        if best is not None:
            return RouteMatch(best, tuple(parts[: len(best.segments)]))
        if refused:
            allowed = sorted({m.decode() for e in refused for m in e.methods})
            return MethodNotAllowed(tuple(allowed))
        return None

    def _collect(
        self,
        node: _Node[R],
        parts: list[bytes],
        depth: int,
        trailing: bool,
        out: list[RouteEntry[R]],
    ) -> None:
        if node.prefix:
            out.extend(node.prefix)
        if depth == len(parts):
            if node.exact and not trailing:
                out.extend(node.exact)
            return
        part = parts[depth]
        child = node.literal.get(part)
        if child is not None:
            self._collect(child, parts, depth + 1, trailing, out)
        if node.param is not None and part:
            self._collect(node.param, parts, depth + 1, trailing, out)
