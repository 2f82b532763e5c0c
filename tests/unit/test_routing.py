"""RouteTable: which route takes a request, by the precedence documented in routing/table.py."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from potok.routing.table import MethodNotAllowed, RouteEntry, RouteMatch, RouteTable


@dataclass(frozen=True)
class R:
    """A route as a test writes it; `name` is what the table hands back as the target."""

    name: str
    pattern: str
    exact: bool = False
    methods: tuple[str, ...] = ()
    host: str | None = None


def table(*routes: R) -> RouteTable[str]:
    return RouteTable(
        [
            RouteEntry(
                r.name, r.pattern, r.exact, frozenset(m.encode() for m in r.methods), r.host, i
            )
            for i, r in enumerate(routes)
        ]
    )


def winner(t: RouteTable[str], path: str, method: str = "GET", host: str = "") -> object:
    """The winning route's name, a MethodNotAllowed, or None."""
    result = t.match(method.encode(), path.encode(), host)
    return result.target if isinstance(result, RouteMatch) else result


# Precedence ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("routes", "path", "expected"),
    [
        # exact beats prefix of the same path, in either config order
        ([R("pre", "/a"), R("exact", "/a", exact=True)], "/a", "exact"),
        ([R("exact", "/a", exact=True), R("pre", "/a")], "/a", "exact"),
        ([R("exact", "/a", exact=True), R("pre", "/a")], "/a/b", "pre"),
        # a literal segment beats a parameter
        ([R("param", "/u/{id}", exact=True), R("me", "/u/me", exact=True)], "/u/me", "me"),
        ([R("param", "/u/{id}", exact=True), R("me", "/u/me", exact=True)], "/u/42", "param"),
        ([R("param", "/{v}/x"), R("lit", "/v1/x")], "/v1/x/y", "lit"),
        # segment by segment: an earlier literal beats a later one
        ([R("late", "/{a}/b", exact=True), R("early", "/a/{b}", exact=True)], "/a/b", "early"),
        # a longer prefix beats a shorter one
        ([R("short", "/api"), R("long", "/api/macro")], "/api/macro/gdp", "long"),
        ([R("long", "/api/macro"), R("short", "/api")], "/api/micro", "short"),
        ([R("root", "/"), R("api", "/api")], "/api/x", "api"),
        # a longer prefix beats a shorter exact route when both match
        ([R("exact", "/a", exact=True), R("pre", "/a/b")], "/a/b", "pre"),
        # the root prefix takes everything nothing else takes
        ([R("root", "/")], "/", "root"),
        ([R("root", "/")], "/anything/at/all", "root"),
        ([R("root", "/")], "//", "root"),
        ([R("root", "/"), R("x", "/x", exact=True)], "/x/", "root"),
        # the exact root takes only "/"
        ([R("exact-root", "/", exact=True)], "/", "exact-root"),
        ([R("exact-root", "/", exact=True)], "/a", None),
        # ties (same shape) go to the earlier route
        ([R("first", "/a/{x}", exact=True), R("second", "/a/{y}", exact=True)], "/a/1", "first"),
        ([R("first", "/a"), R("second", "/a/")], "/a/b", "first"),
        # no match
        ([R("a", "/a")], "/b", None),
        ([R("a", "/a", exact=True)], "/a/b", None),
        ([], "/", None),
    ],
)
def test_precedence(routes, path, expected):
    assert winner(table(*routes), path) == expected


@pytest.mark.parametrize(
    ("route", "path", "matches"),
    [
        # a prefix takes its own path, a trailing slash and anything below it
        (R("p", "/a"), "/a", True),
        (R("p", "/a"), "/a/", True),
        (R("p", "/a"), "/a/b", True),
        (R("p", "/a"), "/a/b/", True),
        # ... on segment boundaries only
        (R("p", "/api/macro"), "/api/macroeconomics", False),
        (R("p", "/api/macro"), "/api/macro/economics", True),
        (R("p", "/a"), "/ab", False),
        (R("p", "/a/"), "/a", True),
        # an exact route takes exactly its path, no trailing slash
        (R("e", "/a", exact=True), "/a", True),
        (R("e", "/a", exact=True), "/a/", False),
        (R("e", "/a", exact=True), "/a/b", False),
        (R("e", "/a/b", exact=True), "/a", False),
        # parameters take one non-empty segment
        (R("e", "/u/{id}", exact=True), "/u/7", True),
        (R("e", "/u/{id}", exact=True), "/u/", False),
        (R("e", "/u/{id}", exact=True), "/u/7/", False),
        (R("e", "/u/{id}", exact=True), "/u/7/8", False),
        (R("p", "/u/{id}"), "/u/7/8", True),
        (R("p", "/u/{id}/x"), "/u//x", False),
        # matching is case-sensitive and byte-exact
        (R("e", "/A", exact=True), "/a", False),
        (R("e", "/a%20b", exact=True), "/a%20b", True),
    ],
)
def test_which_paths_a_route_takes(route, path, matches):
    assert winner(table(route), path) == (route.name if matches else None)


# Hosts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("routes", "host", "expected"),
    [
        ([R("any", "/a"), R("host", "/a", host="api.example.com")], "api.example.com", "host"),
        ([R("any", "/a"), R("host", "/a", host="api.example.com")], "www.example.com", "any"),
        ([R("any", "/a"), R("host", "/a", host="api.example.com")], "", "any"),
        # host-specific beats host-agnostic even when the path is less specific
        ([R("deep", "/a/b/c", exact=True), R("host", "/", host="x.com")], "x.com", "host"),
        # wildcard hosts take any subdomain, not the bare domain nor look-alikes
        ([R("any", "/"), R("wild", "/", host="*.example.com")], "a.example.com", "wild"),
        # the '*' is exactly one label, as in TLS certificates
        ([R("any", "/"), R("wild", "/", host="*.example.com")], "a.b.example.com", "any"),
        ([R("any", "/"), R("wild", "/", host="*.example.com")], ".example.com", "any"),
        ([R("any", "/"), R("wild", "/", host="*.example.com")], "example.com", "any"),
        ([R("any", "/"), R("wild", "/", host="*.example.com")], "badexample.com", "any"),
        ([R("any", "/"), R("wild", "/", host="*.example.com")], "example.com.evil", "any"),
        # a host route alone does not take other hosts
        ([R("host", "/", host="x.com")], "y.com", None),
    ],
)
def test_hosts(routes, host, expected):
    assert winner(table(*routes), "/a", host=host) == expected


@pytest.mark.parametrize("order", ["wildcard first", "exact first"])
def test_an_exact_host_beats_a_wildcard_host(order):
    # Otherwise a wildcard listed first makes the exact-host route unreachable, and the
    # config check does not notice (the two have different shapes).
    routes = [R("wild", "/", host="*.example.com"), R("exact", "/", host="api.example.com")]
    if order == "exact first":
        routes.reverse()
    assert winner(table(*routes), "/x", host="api.example.com") == "exact"
    assert winner(table(*routes), "/x", host="www.example.com") == "wild"


# Methods ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("routes", "method", "expected"),
    [
        ([R("get", "/a", methods=("GET",))], "GET", "get"),
        ([R("any", "/a")], "PATCH", "any"),
        # a less specific route that allows the method wins over a more specific one that doesn't
        ([R("any", "/"), R("post", "/a/b", methods=("POST",))], "GET", "any"),
        ([R("any", "/"), R("post", "/a/b", methods=("POST",))], "POST", "post"),
        (
            [R("get", "/a", methods=("GET",)), R("exact", "/a/b", exact=True, methods=("PUT",))],
            "GET",
            "get",
        ),
        # same shape, disjoint methods: each takes its own
        (
            [R("get", "/a/b", methods=("GET",)), R("post", "/a/b", methods=("POST",))],
            "POST",
            "post",
        ),
        ([R("get", "/a/b", methods=("GET",)), R("post", "/a/b", methods=("POST",))], "GET", "get"),
        # only refusing routes: 405 with every method they allow, sorted, once each
        (
            [R("a", "/a", methods=("GET", "PUT")), R("b", "/a/b", methods=("POST", "GET"))],
            "DELETE",
            MethodNotAllowed(("GET", "POST", "PUT")),
        ),
        ([R("get", "/a/b", exact=True, methods=("GET",))], "HEAD", MethodNotAllowed(("GET",))),
    ],
)
def test_methods(routes, method, expected):
    assert winner(table(*routes), "/a/b", method=method) == expected


def test_a_route_for_another_host_does_not_make_405():
    t = table(R("post", "/a", methods=("POST",), host="x.com"))
    assert winner(t, "/a", "GET", host="y.com") is None
    assert winner(t, "/a", "GET", host="x.com") == MethodNotAllowed(("POST",))


# Parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "exact", "path", "params"),
    [
        ("/users/{id}", True, "/users/42", {"id": "42"}),
        ("/o/{org}/t/{task}", True, "/o/acme/t/7", {"org": "acme", "task": "7"}),
        ("/o/{org}", False, "/o/acme/t/7", {"org": "acme"}),
        ("/files/{name}", True, "/files/a%20b.txt", {"name": "a%20b.txt"}),
        ("/static", False, "/static/x", {}),
        ("/", False, "/x", {}),
    ],
)
def test_params(pattern, exact, path, params):
    result = table(R("r", pattern, exact=exact)).match(b"GET", path.encode(), "")
    assert isinstance(result, RouteMatch)
    assert result.params() == params


def test_match_values_are_the_matched_segments():
    result = table(R("r", "/api/{v}")).match(b"GET", b"/api/v1/users/9", "")
    assert isinstance(result, RouteMatch)
    assert result.values == (b"api", b"v1")
    assert result.entry.pattern == "/api/{v}"


def test_entries_are_sorted_most_specific_first():
    t = table(
        R("root", "/"),
        R("api", "/api"),
        R("exact", "/api", exact=True),
        R("param", "/api/{x}", exact=True),
        R("lit", "/api/x", exact=True),
        R("host", "/", host="x.com"),
    )
    assert [e.target for e in t.entries] == ["host", "lit", "param", "exact", "api", "root"]


# Property: the trie agrees with a linear scan ---------------------------------------------


def reference(routes: list[R], method: str, path: str, host: str) -> object:
    """The documented rules, applied to every route one by one."""
    parts = path.split("/")[1:]
    trailing = False
    if parts and parts[-1] == "":  # '/a/b/' is under the prefix /a/b, not the exact /a/b
        parts.pop()
        trailing = bool(parts)

    def segments(route: R) -> list[str]:
        return [s for s in route.pattern.split("/") if s]

    def takes_path(route: R) -> bool:
        segs = segments(route)
        if len(segs) > len(parts) or (route.exact and (len(segs) != len(parts) or trailing)):
            return False
        return all(
            p != "" if s.startswith("{") else s == p for s, p in zip(segs, parts, strict=False)
        )

    def takes_host(route: R) -> bool:
        if route.host is None:
            return True
        if route.host.startswith("*."):
            return host.endswith(route.host[1:])
        return host == route.host

    def more_specific(a: tuple[int, R], b: tuple[int, R]) -> int:
        (ia, ra), (ib, rb) = a, b
        if (ra.host is None) != (rb.host is None):
            return 1 if ra.host is not None else -1
        sa, sb = segments(ra), segments(rb)
        for x, y in zip(sa, sb, strict=False):
            if x.startswith("{") != y.startswith("{"):
                return 1 if not x.startswith("{") else -1
        if len(sa) != len(sb):
            return 1 if len(sa) > len(sb) else -1
        if ra.exact != rb.exact:
            return 1 if ra.exact else -1
        return 1 if ia < ib else -1

    candidates = [(i, r) for i, r in enumerate(routes) if takes_path(r) and takes_host(r)]
    allowed = [(i, r) for i, r in candidates if not r.methods or method in r.methods]
    if allowed:
        return max(allowed, key=functools.cmp_to_key(more_specific))[1].name
    if candidates:
        return MethodNotAllowed(tuple(sorted({m for _, r in candidates for m in r.methods})))
    return None


SEGMENTS = ["a", "b", "ab"]
METHODS = ["GET", "POST", "PUT"]

patterns = st.lists(st.sampled_from([*SEGMENTS, "{p}"]), max_size=3).map(
    lambda segs: "/" + "/".join(s.replace("{p}", f"{{p{i}}}") for i, s in enumerate(segs))
)
routes_strategy = st.lists(
    st.builds(
        R,
        name=st.just(""),
        pattern=patterns,
        exact=st.booleans(),
        methods=st.lists(st.sampled_from(METHODS), unique=True, max_size=2).map(tuple),
        # never an exact and a wildcard host that could both serve one request
        host=st.sampled_from([None, None, "x.com", "*.y.com"]),
    ),
    max_size=8,
).map(lambda rs: [R(f"r{i}", r.pattern, r.exact, r.methods, r.host) for i, r in enumerate(rs)])
paths = st.builds(
    lambda segs, slash: "/" + "/".join(segs) + ("/" if slash and segs else ""),
    st.lists(st.sampled_from([*SEGMENTS, "c", ""]), max_size=4),
    st.booleans(),
)


@settings(max_examples=500, deadline=None)
@given(
    routes=routes_strategy,
    path=paths,
    method=st.sampled_from(METHODS),
    host=st.sampled_from(["", "x.com", "a.y.com", "y.com"]),
)
def test_the_table_agrees_with_a_linear_scan(routes, path, method, host):
    assert winner(table(*routes), path, method, host) == reference(routes, method, path, host)
