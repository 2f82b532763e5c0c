"""Path rewriting (compile_rewrite) and dot-segment handling (normalize_path)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from potok.routing.rewrite import (
    UnsafePath,
    compile_rewrite,
    has_dot_segment,
    has_escaped_separator,
    may_need_normalizing,
    normalize_path,
    unescape_separators,
)
from potok.routing.table import RouteEntry, RouteMatch, RouteTable


def matched(pattern: str, exact: bool, path: bytes) -> RouteMatch[None]:
    result = RouteTable([RouteEntry(None, pattern, exact, frozenset(), None, 0)]).match(
        b"GET", path, ""
    )
    assert isinstance(result, RouteMatch), f"{pattern} does not take {path!r}"
    return result


def rewritten(route: str, template: str | None, strip: bool, path: str) -> bytes:
    """`route` is "path /x/{id}" (exact) or "prefix /x"."""
    kind, pattern = route.split()
    rewrite = compile_rewrite(template, strip)
    assert rewrite is not None
    return rewrite(path.encode(), matched(pattern, kind == "path", path.encode()))


# compile_rewrite -----------------------------------------------------------------------


def test_no_rewrite_compiles_to_none():
    assert compile_rewrite(None, False) is None


@pytest.mark.parametrize(
    ("route", "template", "path", "expected"),
    [
        # prefix replacement: the rest of the path is kept (the query is never part of it)
        ("prefix /api/macro", "/macro", "/api/macro/gdp", "/macro/gdp"),
        ("prefix /api/macro", "/macro", "/api/macro", "/macro"),
        ("prefix /api/macro", "/macro", "/api/macro/", "/macro/"),
        ("prefix /api/macro", "/v1/macro", "/api/macro/gdp/2024", "/v1/macro/gdp/2024"),
        ("prefix /api", "/", "/api/x", "/x"),
        ("prefix /", "/v1", "/x/y", "/v1/x/y"),
        # rewrite to "": the matched part goes, and an empty result is "/"
        ("prefix /api/macro", "", "/api/macro/gdp", "/gdp"),
        ("prefix /api/macro", "", "/api/macro", "/"),
        ("prefix /api/macro", "", "/api/macro/", "/"),
        ("path /items/{id}", "", "/items/42", "/"),
        # templates with parameters
        ("path /items/{id}", "/v2/items/{id}", "/items/42", "/v2/items/42"),
        ("prefix /items/{id}", "/v2/items/{id}", "/items/42/sub", "/v2/items/42/sub"),
        ("path /o/{org}/t/{task}", "/t/{task}/o/{org}", "/o/a/t/b", "/t/b/o/a"),
        ("path /o/{org}/t/{task}", "/flat/{task}", "/o/a/t/b", "/flat/b"),
        ("path /u/{id}", "/static", "/u/7", "/static"),
    ],
)
def test_rewrites(route, template, path, expected):
    assert rewritten(route, template, False, path) == expected.encode()


@pytest.mark.parametrize(
    ("route", "path", "expected"),
    [
        # "/" when nothing remains, otherwise the rest
        ("prefix /api/macro", "/api/macro/gdp/x", "/gdp/x"),
        ("prefix /api/macro", "/api/macro", "/"),
        ("prefix /api/macro", "/api/macro/", "/"),
        ("prefix /svc/{v}", "/svc/v2/items", "/items"),
        ("prefix /", "/x", "/x"),
    ],
)
def test_strip_prefix(route, path, expected):
    assert rewritten(route, None, True, path) == expected.encode()


def test_percent_encoded_params_are_passed_through_untouched():
    assert (
        rewritten("path /f/{name}", "/files/{name}", False, "/f/a%2Fb%20c") == b"/files/a%2Fb%20c"
    )


@pytest.mark.parametrize("value", [b"..", b".", b".%2e", b"%2e.", b"%2e%2e", b"%2E%2E", b"%2e"])
def test_a_param_can_never_become_a_dot_segment(value):
    # RouteMatch is built by hand: whatever the router let through, the rewriter is the
    # last line before the upstream, and it refuses dot segments itself.
    entry: RouteEntry[None] = RouteEntry(None, "/items/{id}", True, frozenset(), None, 0)
    rewrite = compile_rewrite("/v2/items/{id}", False)
    assert rewrite is not None
    with pytest.raises(UnsafePath):
        rewrite(b"/items/" + value, RouteMatch(entry, (b"items", value)))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=".%2eEa/\\", min_size=1, max_size=12))
def test_normalized_and_matched_paths_never_rewrite_to_a_dot_segment(value):
    # The gateway's order: normalize_path, match, rewrite.
    try:
        path = normalize_path(b"/items/" + value.encode())
    except UnsafePath:
        return
    result = RouteTable([RouteEntry(None, "/items/{id}", False, frozenset(), None, 0)]).match(
        b"GET", path, ""
    )
    if not isinstance(result, RouteMatch):
        return
    rewrite = compile_rewrite("/v2/{id}", False)
    assert rewrite is not None
    try:
        out = rewrite(path, result)
    except UnsafePath:
        return
    assert not has_dot_segment(out), out


# normalize_path ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"/a/./b", b"/a/b"),
        (b"/a/b/../c", b"/a/c"),
        (b"/a/b/c/../../d", b"/a/d"),
        (b"/a/%2e%2e/c", b"/c"),
        (b"/a/%2E%2e/c", b"/c"),
        (b"/a/.%2e/c", b"/c"),
        (b"/a/%2e/c", b"/a/c"),
        (b"/a/b/..", b"/a/"),
        (b"/a/b/.", b"/a/b/"),
        (b"/.", b"/"),
        (b"/%2e", b"/"),
        (b"/a/..", b"/"),
        # dots inside a segment are not dot segments
        (b"/a/.b", b"/a/.b"),
        (b"/a/..b", b"/a/..b"),
        (b"/a/b..", b"/a/b.."),
        (b"/.well-known/x", b"/.well-known/x"),
        # nothing to do
        (b"/", b"/"),
        (b"/a/b/", b"/a/b/"),
        (b"/a/%2fb", b"/a/%2fb"),
        (b"/a/%20", b"/a/%20"),
        (b"/a\\b", b"/a\\b"),
    ],
)
def test_normalize_path(path, expected):
    assert normalize_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        b"/..",
        b"/../etc/passwd",
        b"/a/../..",
        b"/a/../../b",
        b"/%2e%2e",
        b"/%2E%2E/x",
        b"/a\\..\\b",
        b"/a\\.\\b",
        b"/a/..\\b",
        b"\\..",
        b"/a\\%2e%2e",
    ],
)
def test_unsafe_paths(path):
    with pytest.raises(UnsafePath):
        normalize_path(path)


@pytest.mark.parametrize("path", [b"/", b"/api/users/42", b"/a/b/c/", b"/a-b_c~d/e.f", b"/x?y"])
def test_ordinary_paths_take_the_fast_path(path):
    assert normalize_path(path) is path


@pytest.mark.parametrize(
    ("path", "dot"),
    [
        (b"/a/../b", True),
        (b"/a/./b", True),
        (b"/a/%2e%2e", True),
        (b"/a/%2E", True),
        (b"/a/.b", False),
        (b"/a/b", False),
    ],
)
def test_has_dot_segment(path, dot):
    assert has_dot_segment(path) is dot


# Path parameters and encoded separators ----------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"/a/..;/b", b"/b"),
        (b"/a/..;jsessionid=x/b", b"/b"),
        (b"/a/.;x/b", b"/a/b"),
        (b"/a/%2e%2e;/b", b"/b"),
        (b"/a/..%3b/b", b"/b"),
        (b"/a/..%3B/b", b"/b"),
        (b"/a/b/..;", b"/a/"),
        (b"/a;x/b", b"/a;x/b"),  # parameters on an ordinary segment are data
        (b"/a/...;/b", b"/a/...;/b"),
        (b"/a/..%2fb", b"/a/..%2fb"),  # an encoded '/' is the route's question, not this one
    ],
)
def test_dot_segments_with_parameters(path, expected):
    assert normalize_path(path) == expected


@pytest.mark.parametrize("path", [b"/..;/x", b"/a/..;/..;/x", b"/a\\..;\\b", b"/%2e%2e;x"])
def test_dot_segments_with_parameters_cannot_climb(path):
    with pytest.raises(UnsafePath):
        normalize_path(path)


@pytest.mark.parametrize(
    ("path", "escaped"),
    [
        (b"/a%2fb", True),
        (b"/a%2Fb", True),
        (b"/a%5cb", True),
        (b"/a%5Cb", True),
        (b"/a%252fb", False),  # an encoded '%': data to a server that decodes once
        (b"/a/b", False),
        (b"/a%20b", False),
    ],
)
def test_has_escaped_separator(path, escaped):
    assert has_escaped_separator(path) is escaped
    if escaped:
        assert may_need_normalizing(path)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"/a%2fb", b"/a/b"),
        (b"/a%5Cb", b"/a/b"),
        (b"/orgs/acme/..%2fglobex/x", b"/orgs/globex/x"),
        (b"/a/b/..%2F..%2Fc", b"/c"),
        (b"/a%252fb", b"/a%252fb"),
    ],
)
def test_unescape_separators(path, expected):
    assert unescape_separators(path) == expected


def test_unescaped_separators_cannot_climb():
    with pytest.raises(UnsafePath):
        unescape_separators(b"/api/macro/..%2f..%2f..%2finternal/admin")


@pytest.mark.parametrize("value", ["..;", ".;x", "..%3b", "%2e%2e;"])
def test_a_rewrite_never_yields_a_dot_segment_with_parameters(value):
    assert has_dot_segment(b"/v2/" + value.encode() + b"/x")
