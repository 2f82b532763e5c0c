"""Loading and validating the configuration file: values, units, variables and error paths."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from potok.config.loader import ConfigError, load_config_text
from potok.config.models import GatewayConfig

SERVICES = {"svc": {"targets": ["http://127.0.0.1:9001"]}}


def ident(value: object) -> str | None:
    """Readable test ids for dict parameters."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, dict) else None


def load(doc: dict[str, Any] | str, env: dict[str, str] | None = None) -> GatewayConfig:
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
    return load_config_text(text, env=env or {})


def problems(doc: dict[str, Any] | str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load(doc, env)
    return info.value.problems


def paths(doc: dict[str, Any] | str, env: dict[str, str] | None = None) -> list[str]:
    return [path for path, _ in problems(doc, env)]


def route(match: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"match": match, "service": "svc", **extra}


def with_routes(*routes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"services": SERVICES, "routes": list(routes), **top}


# Defaults ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "{}", "# only a comment\n"])
def test_an_empty_file_gives_the_defaults(text):
    config = load(text)
    assert config.server.host == "0.0.0.0"
    assert config.server.port == 8080
    assert config.server.workers == 1
    assert config.server.trusted_proxies == ()
    assert config.server.timeouts.header_read == 10.0
    assert config.server.timeouts.keepalive == 75.0
    assert config.server.timeouts.shutdown_grace == 30.0
    assert config.server.timeouts.shutdown_delay == 0.0
    assert config.server.limits.max_header_bytes == 16 * 1024
    assert config.server.limits.max_url_bytes == 8 * 1024
    assert config.server.limits.max_headers == 100
    assert config.server.limits.max_body_bytes == 5 * 1024 * 1024
    assert config.logging.level == "info"
    assert config.logging.format == "json"
    assert config.logging.access_log.enabled is True
    assert config.logging.access_log.path == "-"
    assert config.metrics.enabled is True
    assert config.services == {}
    assert config.routes == ()
    assert config.policies.headers is None
    assert config.policies.request_size is None


def test_service_and_route_defaults():
    config = load(with_routes(route({"prefix": "/a"})))
    service = config.services["svc"]
    assert [t.url for t in service.targets] == ["http://127.0.0.1:9001"]
    assert service.targets[0].weight == 1
    assert service.balancer == "round_robin"
    assert service.api_key is None
    assert service.timeouts.connect == 5.0
    assert service.timeouts.response == 10.0
    assert service.pool.max_idle == 128
    assert service.pool.idle_timeout == 60.0
    only = config.routes[0]
    assert only.name is None
    assert only.match.path is None
    assert only.match.methods == ()
    assert only.match.host is None
    assert only.rewrite is None
    assert only.strip_prefix is False
    assert only.preserve_host is False
    assert only.timeouts.request == 30.0


# Units ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (" 10s ", 10.0),
        ("30", 30.0),
        (7, 7.0),
        (2.5, 2.5),
    ],
    ids=ident,
)
def test_durations(value, seconds):
    config = load({"server": {"timeouts": {"keepalive": value}}})
    assert config.server.timeouts.keepalive == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["10 parsecs", "abc", "", "-5s", "10d", "1e3", -1, 0, True])
def test_bad_durations(value):
    assert paths({"server": {"timeouts": {"keepalive": value}}}) == ["server.timeouts.keepalive"]


@pytest.mark.parametrize(("value", "ok"), [(0, True), ("0s", True), (-1, False), ("soon", False)])
def test_optional_duration_may_be_zero(value, ok):
    doc = {"server": {"timeouts": {"shutdown_delay": value}}}
    if ok:
        assert load(doc).server.timeouts.shutdown_delay == 0.0
    else:
        assert paths(doc) == ["server.timeouts.shutdown_delay"]


def test_bad_duration_message_shows_the_value():
    [(_, message)] = problems({"server": {"timeouts": {"keepalive": "10 parsecs"}}})
    assert "'10 parsecs'" in message


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("5MiB", 5 * 1024 * 1024),
        ("16KiB", 16 * 1024),
        ("1MB", 1_000_000),
        ("1kb", 1000),
        ("2GiB", 2 * 1024**3),
        ("100B", 100),
        ("100", 100),
        (1024, 1024),
    ],
    ids=ident,
)
def test_sizes(value, size):
    assert (
        load({"server": {"limits": {"max_body_bytes": value}}}).server.limits.max_body_bytes == size
    )


@pytest.mark.parametrize("value", ["5 parsecs", "5XB", "MiB", "1.5MiB", "", -1, 0, 1.5, True])
def test_bad_sizes(value):
    assert paths({"server": {"limits": {"max_body_bytes": value}}}) == [
        "server.limits.max_body_bytes"
    ]


# Environment variables -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "host"),
    [
        ("server: {host: '${HOST}'}", {"HOST": "10.1.2.3"}, "10.1.2.3"),
        ("server: {host: '${HOST:-127.0.0.1}'}", {}, "127.0.0.1"),
        ("server: {host: '${HOST:-127.0.0.1}'}", {"HOST": "10.9.9.9"}, "10.9.9.9"),
        ("server: {host: 'pre-${A}-${B}-post'}", {"A": "x", "B": "y"}, "pre-x-y-post"),
        ("server: {host: '${HOST:-}'}", {}, ""),
        ("server: {host: '${A}'}", {"A": "${B}"}, "${B}"),  # substituted once, not recursively
        ("server: {host: '$HOST'}", {"HOST": "x"}, "$HOST"),  # only the braced form
    ],
    ids=ident,
)
def test_variables_are_substituted(text, env, host):
    assert load(text, env).server.host == host


def test_substituted_values_are_then_validated_as_their_type():
    config = load("server: {port: '${PORT:-9000}', timeouts: {keepalive: '${KA}'}}", {"KA": "2m"})
    assert config.server.port == 9000
    assert config.server.timeouts.keepalive == 120.0


def test_variables_inside_lists_and_nested_maps():
    text = """
services:
  svc:
    targets: ["http://${UP_HOST}:${UP_PORT:-3000}"]
    api_key: {value: "${KEY}"}
"""
    config = load(text, {"UP_HOST": "10.0.0.5", "KEY": "s3cret"})
    assert config.services["svc"].targets[0].url == "http://10.0.0.5:3000"
    assert config.services["svc"].api_key.value == "s3cret"


def test_the_environment_mapping_is_used_instead_of_os_environ(monkeypatch):
    monkeypatch.setenv("POTOK_TEST_HOST", "from-os")
    assert load("server: {host: '${POTOK_TEST_HOST:-default}'}", {}).server.host == "default"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server: {host: '${HOST}'}", [("server.host", "HOST")]),
        ("services: {svc: {targets: ['http://${UP}:1']}}", [("services.svc.targets[0]", "UP")]),
        (
            "server: {host: '${A}${B}', port: '${C:-1}'}",
            [("server.host", "A"), ("server.host", "B")],
        ),
        (
            "routes: [{match: {prefix: /a}, service: '${S1}'},"
            " {match: {prefix: /b}, service: '${S2}'}]",
            [("routes[0].service", "S1"), ("routes[1].service", "S2")],
        ),
    ],
    ids=ident,
)
def test_a_missing_variable_without_default_names_field_and_variable(text, expected):
    found = problems(text, {})
    assert [path for path, _ in found] == [path for path, _ in expected]
    for (_, message), (_, name) in zip(found, expected, strict=True):
        assert f"environment variable {name} is not set" in message


def test_variables_are_not_substituted_in_keys():
    assert paths("server: {'${KEY}': 1}", {"KEY": "port"}) == ["server.${KEY}"]


def test_an_empty_variable_takes_the_default_like_the_shell():
    # `${VAR:-default}` (with the colon) means "unset or empty" in sh, bash and docker compose.
    assert load("server: {host: '${HOST:-127.0.0.1}'}", {"HOST": ""}).server.host == "127.0.0.1"


# YAML and the top level ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("server: [1", "line 1, column 11"),
        ("a: b: c", "line 1, column 5"),
        ("server:\n  port: 1\n   host: x\n", "line 3, column 8"),
        ("server:\n\tport: 1\n", "line 2, column 1"),
    ],
    ids=ident,
)
def test_invalid_yaml_gives_line_and_column(text, where):
    [(path, message)] = problems(text)
    assert path == where
    assert message.startswith("invalid YAML: ")


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just a string", "42"])
def test_the_top_level_must_be_a_mapping(text):
    assert problems(text) == [("", "the configuration must be a mapping at the top level")]


def test_config_error_text_lists_every_problem():
    error = ConfigError([("a.b", "bad"), ("", "whole file")])
    assert str(error) == "a.b: bad\nwhole file"


# Unknown fields -------------------------------------------------------------------------

UNKNOWN = "unknown field (check the spelling; see docs/configuration.md)"


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"route": []}, "route"),
        ({"server": {"portt": 1}}, "server.portt"),
        ({"server": {"timeouts": {"idle": "1s"}}}, "server.timeouts.idle"),
        ({"logging": {"access_log": {"file": "x"}}}, "logging.access_log.file"),
        (with_routes(route({"prefix": "/a"}, matchh=1)), "routes[0].matchh"),
        (
            with_routes(route({"prefix": "/a"}), route({"prefix": "/b", "pathh": "/x"})),
            "routes[1].match.pathh",
        ),
        (with_routes(route({"prefix": "/a"}, timeouts={"reqest": 1})), "routes[0].timeouts.reqest"),
        (
            with_routes(route({"prefix": "/a"}, policies={"no_such_policy": {}})),
            "routes[0].policies.no_such_policy",
        ),
        ({"services": {"svc": {"targets": ["http://a:1"], "lb": "x"}}}, "services.svc.lb"),
        (
            {"services": {"svc": {"targets": ["http://a:1", {"url": "http://b:1", "w": 2}]}}},
            "services.svc.targets[1].w",
        ),
        ({"policies": {"headers": {"request": {"sett": {}}}}}, "policies.headers.request.sett"),
    ],
    ids=ident,
)
def test_unknown_fields_are_rejected_by_path(doc, path):
    assert problems(doc) == [(path, UNKNOWN)]


# Services and targets -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:3000",
        "http://[::1]:8080",
        "http://svc.internal",
        "http://a:1/",
        "https://svc.internal",
        "https://10.0.0.1:8443",
    ],
)
def test_good_target_urls(url):
    assert load({"services": {"svc": {"targets": [url]}}}).services["svc"].targets[0].url == url


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://a:1", "http:// or https://"),
        ("a:1", "http:// or https://"),
        ("https://a:1/api", "put paths in routes"),
        ("http://a:1/api", "put paths in routes"),
        ("http://a:1?x=1", "put paths in routes"),
        ("http://a:1#f", "put paths in routes"),
        ("http://:1", "no host"),
        ("http://", "no host"),
        ("http://a:99999", "bad port"),
        ("http://a:port", "bad port"),
    ],
    ids=ident,
)
def test_bad_target_urls(url, fragment):
    found = problems({"services": {"svc": {"targets": ["http://ok:1", url]}}})
    assert found == [("services.svc.targets[1].url", found[0][1])]
    assert fragment in found[0][1]
    assert repr(url) in found[0][1]


def test_a_bad_only_target_is_reported_once():
    # The one real problem is the URL; "at least 1 item after validation" is noise.
    found = problems({"services": {"svc": {"targets": ["ftp://a:1"]}}})
    assert [path for path, _ in found] == ["services.svc.targets[0].url"]


@pytest.mark.parametrize(
    ("service", "path"),
    [
        ({"targets": []}, "services.svc.targets"),
        ({}, "services.svc.targets"),
        (
            {"targets": [{"url": "http://a:1", "weight": 0}, "http://b:1"]},
            "services.svc.targets[0].weight",
        ),
        ({"targets": ["http://a:1"], "balancer": "random"}, "services.svc.balancer"),
        ({"targets": ["http://a:1"], "api_key": {"value": ""}}, "services.svc.api_key.value"),
        ({"targets": ["http://a:1"], "pool": {"max_idle": -1}}, "services.svc.pool.max_idle"),
        (
            {"targets": ["http://a:1"], "timeouts": {"connect": "fast"}},
            "services.svc.timeouts.connect",
        ),
    ],
    ids=ident,
)
def test_bad_service_fields(service, path):
    assert paths({"services": {"svc": service}}) == [path]


def test_targets_accept_bare_urls_and_objects():
    config = load(
        {"services": {"svc": {"targets": ["http://a:1", {"url": "http://b:2", "weight": 5}]}}}
    )
    assert [(t.url, t.weight) for t in config.services["svc"].targets] == [
        ("http://a:1", 1),
        ("http://b:2", 5),
    ]


@pytest.mark.parametrize("name", ["bad name", "-x", "", "a" * 65])
def test_bad_service_names(name):
    assert paths({"services": {name: {"targets": ["http://a:1"]}}}) == ["services"]


# Server ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cidrs", [["10.0.0.0/8"], ["192.168.1.1"], ["fd00::/8", "::1"], ["10.0.0.1/8"], []]
)
def test_good_trusted_proxies(cidrs):
    assert load({"server": {"trusted_proxies": cidrs}}).server.trusted_proxies == tuple(cidrs)


@pytest.mark.parametrize("bad", ["nope", "10.0.0.0/33", "300.1.1.1", "10.0.0.0/x", ""])
def test_bad_trusted_proxies(bad):
    [(path, message)] = problems({"server": {"trusted_proxies": ["10.0.0.0/8", bad]}})
    assert path.startswith("server.trusted_proxies")
    assert repr(bad) in message


def test_every_bad_trusted_proxy_is_reported_at_its_index():
    found = problems({"server": {"trusted_proxies": ["10.0.0.0/8", "nope", "10.0.0.0/33"]}})
    assert [path for path, _ in found] == ["server.trusted_proxies[1]", "server.trusted_proxies[2]"]


@pytest.mark.parametrize(
    ("server", "path"),
    [
        ({"port": 70000}, "server.port"),
        ({"port": -1}, "server.port"),
        ({"port": "http"}, "server.port"),
        ({"workers": 0}, "server.workers"),
        ({"workers": 257}, "server.workers"),
        ({"limits": {"max_headers": 0}}, "server.limits.max_headers"),
        ({"trusted_proxies": "10.0.0.0/8"}, "server.trusted_proxies"),
    ],
    ids=ident,
)
def test_bad_server_fields(server, path):
    assert paths({"server": server}) == [path]


@pytest.mark.parametrize(
    ("logging", "path"),
    [({"level": "trace"}, "logging.level"), ({"format": "xml"}, "logging.format")],
    ids=ident,
)
def test_bad_logging_fields(logging, path):
    assert paths({"logging": logging}) == [path]


# Routes: match ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "match",
    [
        {},
        {"path": "/a", "prefix": "/a"},
        {"methods": ["GET"]},
    ],
    ids=ident,
)
def test_match_needs_exactly_one_of_path_or_prefix(match):
    found = problems(with_routes(route(match)))
    assert found == [("routes[0].match", "give exactly one of 'path' (exact) or 'prefix'")]


@pytest.mark.parametrize(
    "pattern",
    ["/", "/a", "/a/{id}", "/v1/{org_id}/tasks/{task_id}", "/a-b/c_d.e~f", "/a/", "/a:b@c"],
    ids=ident,
)
@pytest.mark.parametrize("kind", ["path", "prefix"])
def test_good_patterns(kind, pattern):
    assert getattr(load(with_routes(route({kind: pattern}))).routes[0].match, kind) == pattern


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("a", "must start with '/'"),
        ("", "must start with '/'"),
        ("/a//b", "empty segment"),
        ("/a/{id}x", "a parameter must be a whole segment"),
        ("/a/x{id}", "a parameter must be a whole segment"),
        ("/a/{}", "a parameter must be a whole segment"),
        ("/a/{1x}", "a parameter must be a whole segment"),
        ("/a/{id}/b/{id}", "parameter {id} appears twice"),
        ("/a/../b", "dot segments are not allowed"),
        ("/a/.", "dot segments are not allowed"),
        ("/a?x=1", "no query or fragment"),
        ("/a#top", "no query or fragment"),
        ("/a b", "characters not allowed"),
        ("/a/<b>", "characters not allowed"),
    ],
    ids=ident,
)
@pytest.mark.parametrize("kind", ["path", "prefix"])
def test_bad_patterns(kind, pattern, fragment):
    [(path, message)] = problems(with_routes(route({"prefix": "/ok"}), route({kind: pattern})))
    assert path == f"routes[1].match.{kind}"
    assert fragment in message


@pytest.mark.parametrize("pattern", ["/a/%2e%2e/b", "/a/%2E%2E", "/a/.%2e"])
def test_percent_encoded_dot_segments_are_refused_like_plain_ones(pattern):
    # normalize_path decodes %2e before routing, so such a route could never match, and as
    # a rewrite template it would send a '..' segment upstream.
    assert paths(with_routes(route({"prefix": pattern}))) == ["routes[0].match.prefix"]


@pytest.mark.parametrize(
    ("methods", "stored"),
    [(["get", "Post"], ("GET", "POST")), ([], ()), (["DELETE"], ("DELETE",))],
    ids=ident,
)
def test_methods_are_upper_cased(methods, stored):
    assert (
        load(with_routes(route({"prefix": "/a", "methods": methods}))).routes[0].match.methods
        == stored
    )


@pytest.mark.parametrize(
    ("methods", "fragment"),
    [(["FETCH"], "unknown HTTP method 'FETCH'"), (["GET", "get"], "listed twice")],
    ids=ident,
)
def test_bad_methods(methods, fragment):
    [(path, message)] = problems(with_routes(route({"prefix": "/a", "methods": methods})))
    assert path == "routes[0].match.methods"
    assert fragment in message


@pytest.mark.parametrize(
    ("host", "stored"),
    [
        ("api.example.com", "api.example.com"),
        ("API.Example.COM", "api.example.com"),
        ("*.example.com", "*.example.com"),
    ],
    ids=ident,
)
def test_good_hosts(host, stored):
    assert load(with_routes(route({"prefix": "/", "host": host}))).routes[0].match.host == stored


@pytest.mark.parametrize("host", ["a.*.com", "*", "*.", "*.*.example.com", "example.com/x", ""])
def test_bad_hosts(host):
    assert paths(with_routes(route({"prefix": "/", "host": host}))) == ["routes[0].match.host"]


# Routes: references, names and reachability -------------------------------------------


def test_unknown_service():
    doc = with_routes(route({"prefix": "/a"}), {"match": {"prefix": "/b"}, "service": "nope"})
    assert problems(doc) == [("routes[1].service", "unknown service 'nope' (services: svc)")]


def test_unknown_service_with_no_services_defined():
    assert problems({"routes": [route({"prefix": "/a"})]}) == [
        ("routes[0].service", "unknown service 'svc' (services: none defined)")
    ]


@pytest.mark.parametrize(
    ("routes", "path"),
    [
        ([route({"prefix": "/a"}, name="x"), route({"prefix": "/b"}, name="x")], "routes[1].name"),
        ([route({"prefix": "/a"}), route({"prefix": "/b"}, name="svc-0")], "routes[1].name"),
        ([route({"prefix": "/a"}, name="potok-api")], "routes[0].name"),
        ([route({"prefix": "/a"}, name="-x")], "routes[0].name"),
        ([route({"prefix": "/a"}, name="has space")], "routes[0].name"),
    ],
    ids=ident,
)
def test_route_names(routes, path):
    assert paths(with_routes(*routes)) == [path]


def test_duplicate_name_message_points_at_the_first():
    doc = with_routes(
        route({"prefix": "/a"}, name="x"),
        route({"prefix": "/b"}),
        route({"prefix": "/c"}, name="x"),
    )
    assert problems(doc) == [("routes[2].name", "duplicates the name of routes[0]")]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"prefix": "/a"}, {"prefix": "/a"}),
        ({"prefix": "/a"}, {"prefix": "/a/"}),
        ({"path": "/a/{x}"}, {"path": "/a/{y}"}),
        ({"prefix": "/a", "methods": ["GET"]}, {"prefix": "/a", "methods": ["POST", "GET"]}),
        ({"prefix": "/a", "methods": ["GET"]}, {"prefix": "/a"}),
        ({"prefix": "/a"}, {"prefix": "/a", "methods": ["GET"]}),
        ({"path": "/a", "host": "x.com"}, {"path": "/a", "host": "X.COM"}),
        ({"prefix": "/", "host": "*.x.com"}, {"prefix": "/", "host": "*.x.com"}),
    ],
    ids=ident,
)
def test_shadowed_routes(first, second):
    found = problems(with_routes(route({"prefix": "/other"}), route(first), route(second)))
    assert found == [
        ("routes[2].match", "same path, host and methods as routes[1]: one of them can never match")
    ]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"prefix": "/a", "methods": ["GET"]}, {"prefix": "/a", "methods": ["POST", "DELETE"]}),
        ({"path": "/a"}, {"prefix": "/a"}),
        ({"path": "/a", "host": "x.com"}, {"path": "/a"}),
        ({"path": "/a", "host": "x.com"}, {"path": "/a", "host": "y.com"}),
        ({"path": "/a/{id}"}, {"path": "/a/b"}),
        ({"prefix": "/a"}, {"prefix": "/a/b"}),
    ],
    ids=ident,
)
def test_routes_that_can_both_be_reached(first, second):
    assert len(load(with_routes(route(first), route(second))).routes) == 2


@pytest.mark.parametrize(
    "match",
    [
        {"path": "/api/v1/metrics"},
        {"path": "/api/v1/metrics", "methods": ["POST"]},
        {"prefix": "/api/v1/health"},
        {"prefix": "/api/v1/health/"},
        {"prefix": "/api/docs"},
        {"path": "/api/openapi.json"},
    ],
    ids=ident,
)
def test_routes_on_top_of_the_gateways_own_endpoints(match):
    [(path, message)] = problems(with_routes(route(match)))
    assert path == "routes[0].match"
    assert "the gateway's own endpoint" in message


@pytest.mark.parametrize(
    "match",
    [
        {"path": "/api/v1/health"},
        {"path": "/api/v1/health/liveness"},
        {"prefix": "/api/v1/health/readiness"},
    ],
    ids=ident,
)
def test_more_specific_routes_under_the_own_health_prefix_are_refused(match):
    # Exact beats prefix and longer beats shorter, so each of these would take the
    # gateway's own health endpoints away (they are served under the /api/v1/health prefix).
    assert paths(with_routes(route(match))) == ["routes[0].match"]


@pytest.mark.parametrize(
    "match",
    [
        {"prefix": "/api"},
        {"prefix": "/api/v1"},
        {"prefix": "/api/v1/metrics"},  # beside: the own exact route still wins /api/v1/metrics
        {"path": "/api/v1/users"},
        {"path": "/api/v1/{thing}"},
        {"prefix": "/"},
    ],
    ids=ident,
)
def test_routes_beside_the_gateways_own_endpoints(match):
    assert len(load(with_routes(route(match))).routes) == 1


# Routes: rewrite and strip_prefix ------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "extra"),
    [
        ({"prefix": "/api/macro"}, {"rewrite": "/macro"}),
        ({"prefix": "/api/macro"}, {"rewrite": ""}),
        ({"prefix": "/api/macro"}, {"rewrite": "/"}),
        ({"path": "/items/{id}"}, {"rewrite": "/v2/items/{id}"}),
        ({"path": "/o/{org}/t/{task}"}, {"rewrite": "/t/{task}/o/{org}"}),
        ({"path": "/items/{id}"}, {"rewrite": "/v2/all"}),
        ({"prefix": "/api"}, {"strip_prefix": True}),
    ],
    ids=ident,
)
def test_good_rewrites(match, extra):
    assert load(with_routes(route(match, **extra))).routes[0]


@pytest.mark.parametrize(
    ("match", "extra", "path", "fragment"),
    [
        ({"prefix": "/a"}, {"rewrite": "/x/{id}"}, "routes[0].rewrite", "rewrite uses id"),
        (
            {"path": "/a/{id}"},
            {"rewrite": "/x/{id}/{other}"},
            "routes[0].rewrite",
            "rewrite uses other",
        ),
        ({"prefix": "/a"}, {"rewrite": "x"}, "routes[0].rewrite", "must start with '/'"),
        ({"prefix": "/a"}, {"rewrite": "/x/../y"}, "routes[0].rewrite", "dot segments"),
        (
            {"path": "/a"},
            {"strip_prefix": True},
            "routes[0].strip_prefix",
            "strip_prefix needs a prefix",
        ),
    ],
    ids=ident,
)
def test_bad_rewrites_name_the_field(match, extra, path, fragment):
    [(found_path, message)] = problems(with_routes(route(match, **extra)))
    assert found_path == path
    assert fragment in message


def test_rewrite_and_strip_prefix_together():
    [(path, message)] = problems(
        with_routes(route({"prefix": "/a"}, rewrite="/b", strip_prefix=True))
    )
    assert path in ("routes[0]", "routes[0].rewrite", "routes[0].strip_prefix")
    assert message == "give 'rewrite' or 'strip_prefix', not both"


# Policies ------------------------------------------------------------------------------


def headers(direction: str, action: str, value: Any) -> dict[str, Any]:
    return {"headers": {direction: {action: value}}}


MANAGED = "is managed by the gateway"
CRLF = "may not contain CR, LF or NUL"
BAD_NAME = "is not a valid header name"


@pytest.mark.parametrize(
    ("policies", "path", "fragment"),
    [
        (headers("request", "set", {"Host": "x"}), "headers.request.set", MANAGED),
        (headers("request", "set", {"content-length": "1"}), "headers.request.set", MANAGED),
        (
            headers("response", "remove", ["X-A", "Content-Length"]),
            "headers.response.remove",
            MANAGED,
        ),
        (headers("request", "remove", ["Transfer-Encoding"]), "headers.request.remove", MANAGED),
        (headers("response", "set", {"Connection": "close"}), "headers.response.set", MANAGED),
        (headers("request", "set", {"X-A": "a\r\nX-Evil: 1"}), "headers.request.set", CRLF),
        (headers("request", "set", {"X-A": "a\nb"}), "headers.request.set", CRLF),
        (headers("response", "set", {"X-A": "a\x00b"}), "headers.response.set", CRLF),
        (headers("request", "set", {"X A": "b"}), "headers.request.set", BAD_NAME),
        (headers("request", "remove", ["X:A"]), "headers.request.remove", BAD_NAME),
        ({"request_size": {}}, "request_size.max_bytes", "Field required"),
        ({"request_size": {"max_bytes": 0}}, "request_size.max_bytes", "greater than 0"),
        ({"request_size": {"max_bytes": "lots"}}, "request_size.max_bytes", "bad size"),
    ],
    ids=ident,
)
@pytest.mark.parametrize("where", ["global", "route"])
def test_bad_policies(where, policies, path, fragment):
    if where == "global":
        doc = {"policies": policies}
        path = f"policies.{path}"
    else:
        doc = with_routes(route({"prefix": "/ok"}), route({"prefix": "/a"}, policies=policies))
        path = f"routes[1].policies.{path}"
    [(found_path, message)] = problems(doc)
    assert found_path == path
    assert fragment in message


def test_good_policies_and_route_override():
    doc = with_routes(
        route({"prefix": "/a"}, policies={"request_size": {"max_bytes": "1KiB"}}),
        policies={
            "headers": {"request": {"set": {"X-Env": "prod"}, "remove": ["Server"]}},
            "request_size": {"max_bytes": "5MiB"},
        },
    )
    config = load(doc)
    merged = config.routes[0].policies.merged_over(config.policies)
    assert merged.request_size.max_bytes == 1024
    assert merged.headers.request.set == {"X-Env": "prod"}
    assert merged.headers.request.remove == ("Server",)


# Several problems at once --------------------------------------------------------------


def test_every_field_problem_is_reported_at_once():
    doc = {
        "server": {"port": 70000, "timeouts": {"keepalive": "10 parsecs"}},
        "services": {"svc": {"targets": ["http://ok:1", "ftp://bad:1"]}},
        "routes": [route({"prefix": "a"}), route({"prefix": "/b"}, matchh=1)],
    }
    assert sorted(paths(doc)) == sorted(
        [
            "server.port",
            "server.timeouts.keepalive",
            "services.svc.targets[1].url",
            "routes[0].match.prefix",
            "routes[1].matchh",
        ]
    )


def test_every_cross_reference_problem_is_reported_at_once():
    doc = with_routes(
        {"match": {"prefix": "/a"}, "service": "ghost", "name": "x"},
        route({"prefix": "/a"}, name="x"),
        route({"path": "/api/v1/metrics"}),
        {"match": {"prefix": "/c"}, "service": "phantom"},
    )
    assert paths(doc) == [
        "routes[0].service",
        "routes[1].name",
        "routes[1].match",
        "routes[2].match",
        "routes[3].service",
    ]


def test_every_missing_variable_is_reported_at_once():
    text = "server: {host: '${H}', port: '${P}'}\nlogging: {level: '${L}'}\n"
    assert paths(text, {}) == ["server.host", "server.port", "logging.level"]


@pytest.mark.parametrize(
    ("headers", "taken"),
    [({"user_id": "Authorization"}, "Authorization"), ({"org": "Host"}, "Host")],
)
def test_an_identity_header_cannot_be_one_the_gateway_reads(
    headers: dict[str, str], taken: str
) -> None:
    # Clients' copies of identity headers are dropped while parsing: naming one after
    # the Authorization or Host header would throw away what the gateway itself needs.
    found = problems({"auth": {"identity_headers": headers}})
    assert found[0][0] == "auth.identity_headers"
    assert f"{taken} cannot be an identity header" in found[0][1]
